"""Retention (connector.ops.retention.Pruner) on the memory store: no broker, no sleeping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checkpoint import ActionState, Settlement
from checkpoint.sqlite import MemoryStore
from connector.assembly import build_service
from connector.config import load_config
from connector.ops.retention import Pruner
from kec.action import Action, ActionKind
from kec.event import Event
from tests.support import wait_for

DAY = 86400.0
TP = ("orders", 0)


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    with MemoryStore() as opened:
        opened.lineage = False  # counts here are of batches; lineage's pruning: the contract
        yield opened


T0 = 1_700_000_000_000  # the events' create time (ms): event time, unrelated to the clock


def fill(store: MemoryStore, batches: int, *, settle: int, tp: tuple[str, int] = TP) -> None:
    """``batches`` batches of one event and one action each; the first ``settle`` of
    them delivered (below the watermark)."""
    epoch = store.claim("me", [tp])[tp].epoch
    for i in range(batches):
        event = Event(
            key="k", value=str(i), topic=tp[0], partition=tp[1], offset=i, create_time=T0 + i
        )
        action = Action("r", ActionKind.NOTIFY, "log", "default", (event.event_id,), "k")
        with store.batch() as tx:
            tx.append(tp, epoch, i, i + 1, [event], [action], event_time=T0 + i)
    store.settle({tp: Settlement(epoch, settle)})


def test_run_once_prunes_in_chunks_what_the_retention_has_passed(store: MemoryStore) -> None:
    fill(store, 5, settle=3)
    later = time.time() + 2 * DAY
    pruner = Pruner(store, DAY, chunk=2, clock=lambda: later)
    assert pruner.run_once() == 3  # the settled batches; the other two wait for delivery
    assert store.count_events() == 2
    assert store.count_actions(ActionState.PENDING) == 2
    assert pruner.run_once() == 0 and pruner.pruned == 3


def test_nothing_younger_than_the_retention_is_pruned(store: MemoryStore) -> None:
    fill(store, 3, settle=3)
    assert Pruner(store, DAY).run_once() == 0
    assert store.count_events() == 3


def test_without_a_retention_only_expired_rule_state_goes(store: MemoryStore) -> None:
    fill(store, 2, settle=2)
    now = T0 / 1000  # the partition's event time, whatever the wall clock says
    with store.batch() as tx:
        tx.write_rule_state(
            {"set": "{}", "late": "{}", "kept": "{}"},
            {"set": now - 301, "late": now - 299},  # the lateness is 300 s
        )
    pruner = Pruner(store, None, clock=lambda: time.time() + 365 * DAY)
    assert pruner.run_once() == 1
    assert store.read_rule_state(["set", "late", "kept"]) == {"late": "{}", "kept": "{}"}
    assert store.count_events() == 2


def test_a_partition_behind_holds_back_the_pruning_of_windowed_sets(store: MemoryStore) -> None:
    """A set is pruned by the least event time of all partitions: one that was never read
    (a connector lagging, or just started) keeps every set it might still complete."""
    fill(store, 2, settle=2)
    behind = ("orders", 1)
    epoch = store.claim("me", [behind])[behind].epoch
    with store.batch() as tx:
        tx.write_rule_state({"set": "{}"}, {"set": T0 / 1000 - 3600})
    pruner = Pruner(store, None, lateness=0)
    assert pruner.run_once() == 0, "partition 1 has not been read: its events may complete it"
    assert store.mark_partition(behind, epoch, event_time=T0 - 4_000_000)
    assert pruner.run_once() == 0, "partition 1 is still behind the set's expiry"
    assert store.mark_partition(behind, epoch, event_time=T0)
    assert pruner.run_once() == 1
    assert store.read_rule_state(["set"]) == {}


def test_the_thread_prunes_at_start_and_stops(store: MemoryStore) -> None:
    fill(store, 4, settle=4)
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


def test_the_config_sets_the_retention_of_the_pruner(tmp_path: Path) -> None:
    base = "kafka: {bootstrap_servers: b:1}\nnamespaces: {default: {}}\n"
    without, with_retention = tmp_path / "a.yaml", tmp_path / "b.yaml"
    without.write_text(base)
    with_retention.write_text(base + "checkpoint: {retention_days: 14}\n")
    (plain,) = [c for c in build_service(load_config(without)).companions if isinstance(c, Pruner)]
    assert plain.retention is None  # expired rule state only
    (pruner,) = [
        c for c in build_service(load_config(with_retention)).companions if isinstance(c, Pruner)
    ]
    assert pruner.retention == 14 * DAY
    assert pruner.pruned == 0  # built, not started: nothing happens before run()
