"""Retention (connector.retention.Pruner) on the memory store: no broker, no sleeping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checkpoint import ActionState
from checkpoint.memory import MemoryStore
from connector.config import load_config
from connector.retention import Pruner
from connector.service import build_service
from kec.action import Action, ActionKind
from kec.event import Event
from tests.support import wait_for

DAY = 86400.0


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    with MemoryStore() as opened:
        yield opened


def fill(store: MemoryStore, n: int) -> list[Action]:
    events = [Event(key="k", value=str(i), event_id=f"e{i}") for i in range(n)]
    actions = [
        Action(
            rule="r",
            kind=ActionKind.NOTIFY,
            target="log",
            namespace="default",
            event_ids=(e.event_id,),
            event_key="k",
        )
        for e in events
    ]
    with store.batch() as tx:
        tx.insert_events(events)
        tx.add_actions(actions)
    return actions


def test_run_once_prunes_in_chunks_what_the_retention_has_passed(store: MemoryStore) -> None:
    actions = fill(store, 5)
    store.mark_done([a.action_id for a in actions[:3]])
    later = time.time() + 2 * DAY
    pruner = Pruner(store, DAY, chunk=2, clock=lambda: later)
    assert pruner.run_once() == 5 + 3
    assert store.count_events() == 0
    assert store.count_actions(ActionState.DONE) == 0
    assert store.count_actions(ActionState.PENDING) == 2  # never pruned
    assert pruner.run_once() == 0 and pruner.pruned == 8


def test_nothing_younger_than_the_retention_is_pruned(store: MemoryStore) -> None:
    fill(store, 3)
    assert Pruner(store, DAY).run_once() == 0
    assert store.count_events() == 3


def test_the_thread_prunes_at_start_and_stops(store: MemoryStore) -> None:
    fill(store, 4)
    later = time.time() + 2 * DAY
    pruner = Pruner(store, DAY, interval=3600, clock=lambda: later)
    pruner.start()
    try:
        wait_for(lambda: store.count_events() == 0, timeout=10, what="the first prune")
    finally:
        pruner.stop()
    assert pruner.pruned == 4
    pruner.stop()  # idempotent


def test_a_retention_must_be_positive(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pruner(store, 0)


def test_the_config_attaches_a_pruner_only_when_asked(tmp_path: Path) -> None:
    base = "kafka: {bootstrap_servers: b:1}\nnamespaces: {default: {}}\n"
    without, with_retention = tmp_path / "a.yaml", tmp_path / "b.yaml"
    without.write_text(base)
    with_retention.write_text(base + "checkpoint: {retention_days: 14}\n")
    assert not any(isinstance(c, Pruner) for c in build_service(load_config(without)).companions)
    (pruner,) = [
        c for c in build_service(load_config(with_retention)).companions if isinstance(c, Pruner)
    ]
    assert pruner.pruned == 0  # built, not started: nothing happens before run()
