"""Container tests: the project's images, testcontainers and compose on a real Docker engine.

This folder is skipped as a whole (tests/conftest.py, with one line saying why) when no
Docker engine answers or the project's images are not built (``make images``).
``--require-containers`` (given by ``.ci/run``) turns that skip into a collection error, so
CI cannot go green without running them.
Traffic stays on this machine: published ports are bound to 127.0.0.1, and containers talk
over a Docker network of their own on the local bridge.

The measured numbers (start-to-healthy times, the compose kill test's counts) are printed
at the end of the run, under "containers:".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from testcontainers.core.network import Network

from devkit import containers
from devkit.project import connector_image, kafka_image, postgres_image, prometheus_image
from tests.containers.support import unavailable

_REPORT = pytest.StashKey[list[str]]()


@dataclass(frozen=True)
class Images:
    kafka: str
    postgres: str
    connector: str
    prometheus: str


@pytest.fixture(scope="session")
def images(request: pytest.FixtureRequest) -> Images:
    reason = unavailable()
    if reason is not None:  # a test of this folder named on the command line
        if request.config.getoption("--require-containers"):
            pytest.fail(f"--require-containers, but {reason}")
        pytest.skip(reason)
    return Images(kafka_image(), postgres_image(), connector_image(), prometheus_image())


@pytest.fixture(autouse=True)
def _needs_docker(images: Images) -> None:
    """Every test of this folder needs the engine and the images."""


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``report(line)``: a measured number, printed in the run's summary."""
    lines = request.config.stash.setdefault(_REPORT, [])
    return lines.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_REPORT, [])
    counts = {
        outcome: sum(
            1
            for rep in terminalreporter.stats.get(outcome, [])
            if getattr(rep, "when", "call") in ("call", "setup")
            and str(getattr(rep, "nodeid", "")).startswith("tests/containers/")
        )
        for outcome in ("passed", "failed", "error", "skipped")
    }
    if lines or any(counts.values()):
        terminalreporter.write_sep("-", "containers: measured")
        for line in lines:
            terminalreporter.write_line(line)
        summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
        terminalreporter.write_line(f"tests/containers: {summary}")


@pytest.fixture(scope="module")
def network(images: Images) -> Iterator[Network]:
    """A Docker network of this module's own: the containers reach each other by alias."""
    with Network() as created:
        yield created


@pytest.fixture(scope="module")
def kafka(images: Images, network: Network) -> Iterator[containers.KafkaContainer]:
    """A Kafka node from the project's image: ``kafka:9092`` on ``network``, and
    ``bootstrap_servers`` on the host's loopback."""
    node = containers.KafkaContainer(images.kafka, network=network, alias="kafka")
    node.start()
    yield node
    node.close()


@pytest.fixture(scope="module")
def postgres(images: Images, network: Network) -> Iterator[containers.PostgresContainer]:
    """PostgreSQL from the project's image: ``postgres:5432`` on ``network``, ``dsn`` on
    the host's loopback."""
    node = containers.PostgresContainer(images.postgres, network=network, alias="postgres")
    node.start()
    yield node
    node.close()
