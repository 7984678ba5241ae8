"""A seeded nemesis: three connector processes (one of them often with two pipeline
processes) on one PostgreSQL store and one consumer group, while processes are SIGKILLed
and paused past their session timeout, the broker and PostgreSQL are SIGKILLed and
restarted, COMMIT answers are lost, a topic is recreated under them, and poison records
come among the events (tests/chaos/nemesis_run.py says how). Afterwards:

* nothing lost: every event produced is checkpointed once and its action delivered;
  every poison record is recorded once and reaches the dead-letter topic as it came;
* nothing doubled: one action per event and one per ``all_of`` context (for the windowed
  set, one per context whose halves are within its window), none other;
* per-key order: the first delivery of one key's actions follows its events' order;
* nothing stalled: no pending or dead action, no partition left stopped.

Seed 1 runs with a webhook target, seed 2 with a ``kafka`` target read back from its
topic (whole runs of actions, cut by kills and broker restarts).

Each run prints its fault schedule and a report line (repeated deliveries, the faults
applied, the COMMIT answers swallowed).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.nemesis_run import Run, Services, own_services, report_line
from tests.chaos.receiver import Receiver

DEFAULT_SEED = 1
KAFKA_SEED = 2


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """A broker and a PostgreSQL of this module's own: the runs crash them."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the nemesis crashes a local JVM broker: it needs Java and Maven")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"):
        pytest.skip("the nemesis crashes a local PostgreSQL: it needs the server binaries")
    with own_services(tmp_path_factory.mktemp("nemesis-services")) as own:
        yield own


def _run(
    seed: int, services: Services, receiver: Receiver, tmp_path: Path, target: str = "webhook"
) -> None:
    started = time.monotonic()
    report = Run(seed, services, receiver, tmp_path, target=target).go()
    print(report_line(report, time.monotonic() - started))
    assert report["kills"] >= 2 and report["zombies"] >= 1
    assert report["broker restarts"] >= 1 and report["PostgreSQL restarts"] >= 1
    assert report["topic recreations"] == 1


def test_nemesis_run(services: Services, receiver: Receiver, tmp_path: Path) -> None:
    """Seed 1: ``pytest tests/chaos/test_nemesis.py -k nemesis_run -s`` shows its report."""
    _run(DEFAULT_SEED, services, receiver, tmp_path)


def test_nemesis_run_with_a_kafka_target(
    services: Services, receiver: Receiver, tmp_path: Path
) -> None:
    """Seed 2, its actions produced to a topic and read back by their ``action-id``."""
    _run(KAFKA_SEED, services, receiver, tmp_path, target="kafka")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sweep_seed" not in metafunc.fixturenames:
        return
    given = metafunc.config.getoption("--nemesis-seeds")
    if not given:
        metafunc.parametrize("sweep_seed", [pytest.param(0, id="off")])
        return
    seeds = [int(s) for s in given.split(",")] if "," in given else list(range(1, int(given) + 1))
    metafunc.parametrize("sweep_seed", seeds, ids=[f"seed{s}" for s in seeds])


@pytest.mark.nemesis_sweep
def test_nemesis_sweep(
    sweep_seed: int,
    services: Services,
    receiver: Receiver,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Many seeds, one run each; skipped unless seeds are given:

        pytest tests/chaos/test_nemesis.py -k sweep --nemesis-seeds=20 -s

    runs seeds 1 to 20 (``--nemesis-seeds=3,17`` runs those); each prints its schedule
    and its report line. A failing seed fails alone, with the members' notable log lines.
    ``--nemesis-target=kafka`` runs them with a ``kafka`` target.
    """
    if not sweep_seed:
        pytest.skip("the nemesis sweep runs with --nemesis-seeds=N (seeds 1..N) or =A,B,...")
    target = request.config.getoption("--nemesis-target")
    _run(sweep_seed, services, receiver, tmp_path, target)
