"""One real server per engine, started once, stopped with all its children.

The servers are heavy on a small machine (Airflow ~1 GiB, and its scheduler keeps a core
busy even idle), so the fixtures are module-scoped: each engine's tests live in one
module, so each server starts once per session, when its module begins, and stops as soon
as its module is done rather than weighing on every later test. Each test isolates itself
with its own workflow ids, DAG run ids, task queue or idempotency keys. The summary names
each server, how long it took to start and stop, and how many of its processes were left
(none, or the stop failed).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, TypeVar

import pytest

from tests.engines.servers import (
    EXAMPLES,
    AirflowServer,
    PrefectServer,
    Processes,
    TemporalServer,
    airflow_server,
    prefect_server,
    temporal_server,
)

_SERVERS = pytest.StashKey[list[str]]()
AIRFLOW_DAG = "kec_orders"
PREFECT_DEPLOYMENT = "on-order/kec-example"


def _note(request: pytest.FixtureRequest, line: str) -> None:
    request.config.stash.setdefault(_SERVERS, []).append(line)


class _Server(Protocol):
    @property
    def procs(self) -> Processes: ...

    def describe(self) -> str: ...


S = TypeVar("S", bound=_Server)


@contextmanager
def _reported(
    request: pytest.FixtureRequest, name: str, server: AbstractContextManager[S]
) -> Iterator[S]:
    """``server`` started, then stopped; the summary says how long the stop took, how
    many processes needed SIGKILL and how many were left."""
    with server as running:
        yield running
        began = time.monotonic()
    left = len(running.procs.alive())
    _note(
        request,
        f"{name} stopped in {time.monotonic() - began:.1f}s"
        f" ({running.procs.killed} needed SIGKILL), {left} process(es) left",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in terminalreporter.config.stash.get(_SERVERS, []):
        terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def temporal(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TemporalServer]:
    with _reported(
        request, "Temporal", temporal_server(tmp_path_factory.mktemp("temporal"))
    ) as server:
        _note(request, server.describe())
        yield server


@pytest.fixture(scope="module")
def temporal_worker(temporal: TemporalServer) -> Iterator[str]:
    """The example worker (``examples/temporal/worker.py``) on a task queue of its own."""
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, str(EXAMPLES / "temporal" / "worker.py")]
    argv += ["--address", temporal.address, "--task-queue", queue]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the test timeout; "" if it died
        assert line.startswith("worker ready"), f"the worker did not start: {line!r}"
        yield queue
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def airflow(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowServer]:
    started = airflow_server(tmp_path_factory.mktemp("airflow"), [AIRFLOW_DAG])
    with _reported(request, "Airflow", started) as server:
        _note(request, server.describe())
        yield server


@pytest.fixture(scope="module")
def prefect(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    with _reported(
        request, "Prefect", prefect_server(tmp_path_factory.mktemp("prefect"))
    ) as server:
        began = time.monotonic()
        server.serve("serve", EXAMPLES / "prefect" / "flow.py", PREFECT_DEPLOYMENT)
        _note(
            request, f"{server.describe()}; example flow served in {time.monotonic() - began:.1f}s"
        )
        yield server
