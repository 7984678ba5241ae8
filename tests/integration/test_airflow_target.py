"""The ``airflow`` target (and the engine HTTP client it shares with ``prefect``) against a
small HTTP server written here that plays Airflow's REST API for the answers each test
needs: what a real Airflow rarely says on cue (a run that does not read back as stopped)
and what must never reach it (run ids that are not one path segment).

tests/engines/test_airflow.py runs the target against a real Airflow.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connector.targets import build_target
from connector.targets.airflow import AirflowTarget
from connector.targets.prefect import PrefectTarget
from kec.action import Action, ActionKind
from kec.errors import ConfigError, TargetError, TargetRejected

DAG = "kec_orders"
RUNS = f"/api/v2/dags/{DAG}/dagRuns"


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # as sent: still percent-encoded
    body: Any


class _Handler(BaseHTTPRequestHandler):
    server: FakeAirflow

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length) if length else b""
        status, body = self.server.record(
            Call(self.command, self.path, json.loads(raw) if raw else None)
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeAirflow(ThreadingHTTPServer):
    """Answers ``(method, path without query)`` with the queued ``(status, body)``, in order;
    anything else with 404, as Airflow does for what it does not know."""

    daemon_threads = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[Call] = []
        self._answers: dict[tuple[str, str], deque[tuple[int, Any]]] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def on(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self._answers.setdefault((method, path), deque()).extend(answers)

    def record(self, call: Call) -> tuple[int, Any]:
        with self._lock:
            self.calls.append(call)
            queued = self._answers.get((call.method, call.path.split("?")[0]))
            if queued:
                return queued.popleft()
        return 404, {"detail": f"{call.path} not found"}


@pytest.fixture
def airflow() -> Iterator[FakeAirflow]:
    server = FakeAirflow()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def target(airflow: FakeAirflow) -> Iterator[AirflowTarget]:
    with AirflowTarget("engine", airflow.url, token="t0k", dags={"order": DAG}) as opened:
        yield opened


def action(kind: ActionKind, *, context: str | None = "run-1", task: str | None = None) -> Action:
    return Action(
        rule="r",
        kind=kind,
        target="engine",
        namespace="orders",
        event_ids=("e1",),
        event_key="k",
        workflow="order",
        task=task,
        context=context,
        payload={"key": "k", "value": "v", "event_id": "e1", "context": context},
    )


# -- a stop counts once Airflow shows the run stopped ------------------------------------


def test_a_stop_is_delivered_once_the_run_reads_back_failed(
    airflow: FakeAirflow, target: AirflowTarget
) -> None:
    run = f"{RUNS}/run-1"
    airflow.on("GET", run, (200, {"state": "running"}), (200, {"state": "failed"}))
    airflow.on("PATCH", run, (200, {"state": "failed"}))
    target.deliver(action(ActionKind.STOP_WORKFLOW))
    assert [(c.method, c.path.split("?")[0]) for c in airflow.calls] == [
        ("GET", run),
        ("PATCH", run),
        ("GET", run),
    ]
    assert airflow.calls[1].body == {"state": "failed"}


def test_a_stop_airflow_does_not_show_is_retried_not_counted(
    airflow: FakeAirflow, target: AirflowTarget
) -> None:
    # The PATCH was answered 200 (by a proxy, or a write Airflow lost), yet the run runs on.
    run = f"{RUNS}/run-1"
    airflow.on("GET", run, (200, {"state": "running"}), (200, {"state": "running"}))
    airflow.on("PATCH", run, (200, {"state": "failed"}))
    with pytest.raises(TargetError) as caught:
        target.deliver(action(ActionKind.STOP_WORKFLOW))
    assert type(caught.value) is TargetError and caught.value.retriable
    assert "reads back as running" in str(caught.value)


def test_a_run_that_finished_by_itself_meanwhile_is_stopped(
    airflow: FakeAirflow, target: AirflowTarget
) -> None:
    run = f"{RUNS}/run-1"
    airflow.on("GET", run, (200, {"state": "queued"}), (200, {"state": "success"}))
    airflow.on("PATCH", run, (200, {"state": "failed"}))
    target.deliver(action(ActionKind.STOP_WORKFLOW))
    assert len(airflow.calls) == 3


@pytest.mark.parametrize(("patched", "after"), [(200, "failed"), (409, "success")])
def test_a_task_stop_is_delivered_once_the_task_reads_back_finished(
    airflow: FakeAirflow, target: AirflowTarget, patched: int, after: str
) -> None:
    task = f"{RUNS}/run-1/taskInstances/approve"
    airflow.on("GET", task, (200, {"state": "awaiting_input"}), (200, {"state": after}))
    airflow.on("PATCH", task, (patched, {"detail": "already in that state"}))
    target.deliver(action(ActionKind.STOP_TASK, task="approve"))
    assert [c.method for c in airflow.calls] == ["GET", "PATCH", "GET"]


def test_a_task_stop_airflow_does_not_show_is_retried_not_counted(
    airflow: FakeAirflow, target: AirflowTarget
) -> None:
    task = f"{RUNS}/run-1/taskInstances/approve"
    airflow.on("GET", task, (200, {"state": "running"}), (200, {"state": "running"}))
    airflow.on("PATCH", task, (200, {"state": "failed"}))
    with pytest.raises(TargetError) as caught:
        target.deliver(action(ActionKind.STOP_TASK, task="approve"))
    assert type(caught.value) is TargetError and caught.value.retriable
    assert "reads back as running" in str(caught.value)


# -- what the target puts in a URL --------------------------------------------------------


@pytest.mark.parametrize("run_id", [".", "..", "../..", "a/b", "..\\x", "run\n1"])
@pytest.mark.parametrize(
    "kind", [ActionKind.STOP_WORKFLOW, ActionKind.STOP_TASK, ActionKind.RESTART_TASK]
)
def test_a_run_id_that_is_not_one_path_segment_is_refused_before_any_request(
    airflow: FakeAirflow, target: AirflowTarget, run_id: str, kind: ActionKind
) -> None:
    task = None if kind is ActionKind.STOP_WORKFLOW else "approve"
    with pytest.raises(TargetRejected, match="not a single URL path segment"):
        target.deliver(action(kind, context=run_id, task=task))
    assert airflow.calls == []


@pytest.mark.parametrize("task", [".", "..", "a/b"])
def test_a_task_id_that_is_not_one_path_segment_is_refused_before_any_request(
    airflow: FakeAirflow, target: AirflowTarget, task: str
) -> None:
    with pytest.raises(TargetRejected, match="task id"):
        target.deliver(action(ActionKind.START_TASK, task=task))
    assert airflow.calls == []


def test_a_dag_id_that_is_not_one_path_segment_is_refused_before_any_request(
    airflow: FakeAirflow,
) -> None:
    target = AirflowTarget("engine", airflow.url, token="t", dags={"order": ".."})
    with target, pytest.raises(TargetRejected, match="dag id"):
        target.deliver(action(ActionKind.START_WORKFLOW))
    assert airflow.calls == []


def test_ids_are_percent_encoded_in_the_path(airflow: FakeAirflow, target: AirflowTarget) -> None:
    run_id = "scheduled__2026-01-01T00:00:00+00:00"
    encoded = "scheduled__2026-01-01T00%3A00%3A00%2B00%3A00"
    task = "group.load?x=1#y"  # a task id with what a URL reads as query and fragment
    path = f"{RUNS}/{encoded}/taskInstances/group.load%3Fx%3D1%23y"
    airflow.on("GET", path, (200, {"state": "success"}))
    target.deliver(action(ActionKind.STOP_TASK, context=run_id, task=task))
    assert [c.path for c in airflow.calls] == [path]


# -- URLs with secrets ---------------------------------------------------------------------

PROXY_SECRET = "PROXYSECRET-31f0"
KEY_SECRET = "KEYSECRET-8e2d"
PASSWORD = "pw-7d1c"


def _closed_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("engine", ["airflow", "prefect"])
def test_engine_errors_hide_the_secrets_of_the_url(engine: str) -> None:
    sock, port = _closed_port()
    url = f"http://kec:{PASSWORD}@127.0.0.1:{port}/{PROXY_SECRET}/api?key={KEY_SECRET}"
    made: AirflowTarget | PrefectTarget
    if engine == "airflow":
        made = AirflowTarget("engine", url, token="t", dags={"order": DAG})
        start = action(ActionKind.START_WORKFLOW)
    else:
        made = PrefectTarget("engine", url, api_key="t")
        start = Action.from_dict(
            {**action(ActionKind.START_WORKFLOW).to_dict(),
             "workflow": "6f1b3a52-2c4e-4a57-9d2e-0c3f8a6b7e10"}
        )  # fmt: skip
    with sock, made, pytest.raises(TargetError) as caught:
        made.deliver(start)
    text = str(caught.value)
    for secret in (PROXY_SECRET, KEY_SECRET, PASSWORD):
        assert secret not in text
    assert f"http://127.0.0.1:{port}/…" in text and "ConnectError" in text
    with pytest.raises(ConfigError) as config_error:
        build_target("engine", {"type": engine, "url": url.replace("http://", "ftp://")})
    for secret in (PROXY_SECRET, KEY_SECRET, PASSWORD):
        assert secret not in str(config_error.value)
