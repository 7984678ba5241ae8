"""SIGKILL the connector at each crash point (docs/architecture.md) and check every invariant.

Each test: 5,000 keyed events over 3 partitions; the connector process kills itself with
SIGKILL at the armed step (``KEC_CRASH_AT``); the invariant "no committed offset ahead of
the checkpoint" is checked on the dead process's state; a second process finishes the
work; then every invariant of :func:`tests.chaos.harness.check_invariants` is checked.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kec.faults import CRASH_POINTS
from tests.chaos.harness import (
    Connector,
    Workload,
    assert_commit_not_ahead,
    check_invariants,
    delivered_ids,
    line_count,
    produce,
    wait_all_delivered,
)
from tests.support import wait_for

EVENTS = 5_000
PARTITIONS = 3
KEYS = 50

# The n-th time each point is reached: far enough in that earlier batches are done.
CRASH_AT = {
    "after_poll": "after_poll:4",
    "after_checkpoint": "after_checkpoint:4",
    "after_commit": "after_commit:4",
    "mid_dispatch": "mid_dispatch:3",
    "after_dispatch": "after_dispatch:3",
}
# Points where the restarted process must deliver some actions a second time.
REDELIVERS = {"mid_dispatch", "after_dispatch"}
STREAM_SECONDS = 2.0  # how long their events take to be produced


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'checkpoints.db'}"
    make: Callable[[], str] = request.getfixturevalue("pg_store_url")
    return make()


@pytest.fixture
def connectors() -> Iterator[list[Connector]]:
    """Connectors started by a test; one still running when the test ends is killed."""
    started: list[Connector] = []
    yield started
    for conn in started:
        if conn.proc is not None and conn.proc.poll() is None:
            conn.kill()


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_at_crash_point(
    point: str,
    store_url: str,
    bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    connectors: list[Connector],
) -> None:
    topic = new_topic(PARTITIONS)
    conn = Connector(bootstrap, topic, store_url, tmp_path / "actions.jsonl")
    connectors.append(conn)
    if point in REDELIVERS:
        # A settlement every 50 ms, and a batch handed out whole as a run: produced at
        # once, 5,000 events could all be delivered before the third settlement. A tenth
        # first, then, once the connector delivers, the rest over STREAM_SECONDS: they
        # span many settlements, and the kill falls mid-stream.
        proc = conn.start(crash_at=CRASH_AT[point])
        first = produce(bootstrap, topic, EVENTS // 10, KEYS, PARTITIONS)
        wait_for(
            lambda: line_count(conn.log_file) > 0 or proc.poll() is not None,
            timeout=120,
            what="a first delivery",
        )
        rest = produce(
            bootstrap, topic, EVENTS - EVENTS // 10, KEYS, PARTITIONS, seconds=STREAM_SECONDS
        )
        work = Workload(topic, first.events + rest.events, PARTITIONS)
    else:
        work = produce(bootstrap, topic, EVENTS, KEYS, PARTITIONS)
        conn.start(crash_at=CRASH_AT[point])
    code = conn.wait_exit(timeout=180)
    assert code == -9, f"expected a SIGKILL at {point}, got exit {code}:\n{conn.stderr_tail()}"
    behind = assert_commit_not_ahead(conn, work)
    if point == "after_checkpoint":
        assert behind, "the kill did not fall between checkpoint and commit"
    delivered_before = len(delivered_ids(conn.log_file))

    conn.start()
    wait_all_delivered(conn, work)
    assert conn.terminate() == 0, conn.stderr_tail()
    result = check_invariants(conn, work)
    if point in REDELIVERS:
        assert delivered_before > 0
        assert result["duplicates"] > 0, "the crash did not interrupt a dispatch"


def test_random_kills(
    store_url: str,
    bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    connectors: list[Connector],
) -> None:
    """Ten SIGKILLs at random points of progress in one run, then it must all add up."""
    rng = random.Random(20261123)
    work = produce(bootstrap, new_topic(PARTITIONS), EVENTS, KEYS, PARTITIONS)
    conn = Connector(bootstrap, work.topic, store_url, tmp_path / "actions.jsonl")
    connectors.append(conn)
    kills = 0
    while kills < 10:
        proc = conn.start()
        seen = line_count(conn.log_file)
        # Kill once a random amount of further progress is visible (or right away).
        goal = min(seen + rng.randint(0, EVENTS // 12), EVENTS)
        wait_for(
            lambda goal=goal, proc=proc: (  # type: ignore[misc]
                line_count(conn.log_file) >= goal or proc.poll() is not None
            ),
            timeout=120,
            interval=0.02,
            what=f"{goal} deliveries",
        )
        assert conn.proc is not None and conn.proc.poll() is None, conn.stderr_tail()
        conn.kill()
        kills += 1
        assert_commit_not_ahead(conn, work)
    conn.start()
    wait_all_delivered(conn, work)
    assert conn.terminate() == 0, conn.stderr_tail()
    check_invariants(conn, work)
