"""Session fixtures: a real Kafka broker (docs/architecture.md), a fresh topic and group per test;
a real PostgreSQL server and a fresh database per test."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from devkit.broker import KafkaCluster, provide_kafka
from devkit.postgres import PostgresServer, provide_postgres, scratch_database
from devkit.registry import DevRegistry

_CLUSTER_KEY = pytest.StashKey[tuple[KafkaCluster, float]]()
_POSTGRES_KEY = pytest.StashKey[tuple[PostgresServer, float]]()
_SUITES = {
    "unit": "unit",
    "integration": "integration",
    "chaos": "chaos",
    "engines": "engines",
    "containers": "containers",
    "browser": "browser",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the folder it lives in, so `-m unit` etc. select by suite."""
    for item in items:
        suite = Path(str(item.fspath)).parent.name
        if suite in _SUITES:
            item.add_marker(getattr(pytest.mark, _SUITES[suite]))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-containers",
        action="store_true",
        help="Fail, rather than skip, when tests/containers cannot run (no Docker engine or "
        "no images): what CI runs with.",
    )
    parser.addoption(
        "--require-browser",
        action="store_true",
        help="Fail, rather than skip, when tests/browser has no chromium and chromium-driver "
        "(make test installs them and passes it).",
    )
    parser.addoption(
        "--nemesis-seeds",
        default="",
        help="Run tests/chaos/test_nemesis.py's sweep: N for seeds 1..N, or a list A,B,... "
        "(without it the sweep is skipped).",
    )
    parser.addoption(
        "--nemesis-target",
        default="webhook",
        choices=("webhook", "kafka"),
        help="The target of the nemesis sweep's runs: a webhook, or a kafka topic read back.",
    )


class _Unavailable(pytest.Package):
    """A test folder that cannot run on this machine: one skip, with the reason, for all."""

    reason = ""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        if self.config.getoption("--require-containers"):
            raise pytest.fail(f"--require-containers, but {self.reason}", pytrace=False)
        pytest.skip(self.reason)
        yield from ()


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """tests/containers needs a Docker engine with the project's images (make images).

    Without them the folder is one skipped collector; a file or test inside it named on the
    command line is collected as usual and its tests skip one by one (tests/containers'
    ``images`` fixture).
    """
    if path.name != "containers" or path.parent != Path(__file__).parent:
        return None
    from tests.containers.support import unavailable

    reason = unavailable()
    named_inside = any(
        path in Path(arg.split("::")[0]).resolve().parents for arg in parent.config.args
    )
    if reason is None or named_inside:
        return None
    skipped = _Unavailable.from_parent(parent, path=path)
    skipped.reason = f"tests/containers: {reason}"
    return skipped


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = terminalreporter.config.stash.get(_CLUSTER_KEY, None)
    if found:
        cluster, started_in = found
        terminalreporter.write_line(
            f"Kafka broker: Apache Kafka {cluster.version} ({cluster.kind}) at "
            f"{cluster.bootstrap_servers}, ready in {started_in:.1f}s ({cluster.why})"
        )
    postgres = terminalreporter.config.stash.get(_POSTGRES_KEY, None)
    if postgres:
        server, started_in = postgres
        terminalreporter.write_line(
            f"{server.describe()}, ready in {started_in:.1f}s ({server.why})"
        )


@pytest.fixture(scope="session")
def kafka_cluster(request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    started = time.monotonic()
    with provide_kafka(start_timeout=120) as cluster:
        request.config.stash[_CLUSTER_KEY] = (cluster, time.monotonic() - started)
        yield cluster


@pytest.fixture(scope="session")
def bootstrap(kafka_cluster: KafkaCluster) -> str:
    return kafka_cluster.bootstrap_servers


@pytest.fixture(scope="session")
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


@pytest.fixture
def new_topic(admin: AdminClient) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=3)`` creates a uniquely named topic for this test."""
    created: list[str] = []

    def make(partitions: int = 3, *, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        # No time retention: tests write records stamped long ago (event time), and the
        # broker's retention check (every 5 minutes) deletes a segment whose records are
        # all older than retention.ms, even the active one, before the test reads them.
        topic = NewTopic(
            name, num_partitions=partitions, replication_factor=1, config={"retention.ms": "-1"}
        )
        admin.create_topics([topic])[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A superuser DSN of a real PostgreSQL server (``PG_DSN``, testcontainers or local)."""
    started = time.monotonic()
    with provide_postgres(start_timeout=120) as server:
        request.config.stash[_POSTGRES_KEY] = (server, time.monotonic() - started)
        yield server.dsn


@pytest.fixture
def pg_store_url(pg_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory: each call creates a fresh database and returns its URL; dropped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(scratch_database(pg_dsn))


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[str]:
    """The Confluent-compatible URL of a real schema registry (Apicurio, in memory), started
    once per session (devkit/registry.py)."""
    with DevRegistry() as registry:
        yield registry.url
