"""One contract, three backends (docs/architecture.md): memory, sqlite and postgres pass it.

Most tests take ``store`` (parametrized over the backends); persistence takes
``durable_url`` (sqlite and postgres only). Backend-specific refusals (corrupt file, newer
schema) and the SIGKILL durability test come last.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from checkpoint import (
    SCHEMA_VERSION,
    ActionState,
    CheckpointStore,
    DeadRecord,
    OutboxEntry,
    open_store,
)
from checkpoint.memory import MemoryStore
from checkpoint.postgres import _MIGRATIONS as postgres_migrations
from checkpoint.postgres import APPLICATION as POSTGRES_APPLICATION
from checkpoint.postgres import PostgresStore
from checkpoint.sqlite import _MIGRATIONS as sqlite_migrations
from checkpoint.sqlite import APPLICATION_ID as SQLITE_APPLICATION_ID
from checkpoint.sqlite import SqliteStore
from kec.action import Action, ActionKind
from kec.errors import CheckpointError, ConfigError, Fenced, SchemaTooNew, StoreCorrupt
from kec.event import Event
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]
TP = ("orders", 0)


def make_event(n: int, *, eid: str | None = None, value: str | bytes | None = None) -> Event:
    return Event(
        key=f"k{n % 3}",
        value=f'{{"n": {n}}}' if value is None else value,
        namespace="shop",
        topic=TP[0],
        partition=TP[1],
        offset=n,
        create_time=1_700_000_000_000 + n,
        event_id=eid or f"evt-{n}",
    )


def make_action(
    event: Event, *, rule: str = "r1", payload: dict[str, object] | None = None
) -> Action:
    return Action(
        rule=rule,
        kind=ActionKind.START_WORKFLOW,
        target="log",
        namespace=event.namespace,
        event_ids=(event.event_id,),
        event_key=event.key,
        workflow="wf",
        payload=payload or {},
    )


def ids(entries: list[OutboxEntry]) -> list[str]:
    return [e.action.action_id for e in entries]


def queue(store: CheckpointStore, actions: list[Action]) -> None:
    with store.batch() as tx:
        tx.add_actions(actions)


def commit_offsets(
    store: CheckpointStore,
    offsets: dict[tuple[str, int], int],
    epochs: dict[tuple[str, int], int] | None = None,
) -> None:
    with store.batch() as tx:
        tx.set_next_offsets(offsets, epochs)


def rule_state(store: CheckpointStore, key: str) -> str | None:
    with store.batch() as tx:
        return tx.get_rule_state(key)


# -- fixtures ---------------------------------------------------------------------------


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    new_database: Callable[[], str] = request.getfixturevalue("pg_store_url")
    return new_database()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[CheckpointStore]:
    with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def peer(store: CheckpointStore, store_url: str) -> Iterator[CheckpointStore]:
    """A second instance on the same store (the same object for memory://)."""
    if isinstance(store, MemoryStore):
        yield store
        return
    with open_store(store_url) as other:
        yield other


# -- events -----------------------------------------------------------------------------


def test_new_events_are_returned_and_kept_in_checkpoint_order(store: CheckpointStore) -> None:
    first, second = [make_event(n) for n in (5, 1, 3)], [make_event(n) for n in (0, 4)]
    with store.batch() as tx:
        assert tx.insert_events(first) == first
    with store.batch() as tx:
        assert tx.insert_events(second) == second
    assert store.count_events() == 5
    assert list(store.iter_events()) == first + second
    assert store.get_event("evt-3") == first[2]
    assert store.get_event("nope") is None


def test_ids_already_stored_are_skipped_and_not_returned(store: CheckpointStore) -> None:
    with store.batch() as tx:
        tx.insert_events([make_event(1), make_event(2)])
    resent = make_event(2, value="a different value, same id")
    with store.batch() as tx:
        new = tx.insert_events([resent, make_event(3), make_event(1)])
    assert new == [make_event(3)]
    assert store.count_events() == 3
    assert store.get_event("evt-2") == make_event(2), "the first stored version is kept"


def test_ids_repeated_within_a_batch_count_once(store: CheckpointStore) -> None:
    a, b, a_again = make_event(1), make_event(2), make_event(1, value="later copy")
    with store.batch() as tx:
        assert tx.insert_events([a, b, a_again, b]) == [a, b]
    assert store.count_events() == 2
    assert store.get_event("evt-1") == a


def test_several_calls_in_one_batch_see_each_other(store: CheckpointStore) -> None:
    a, b, c = make_event(1), make_event(2), make_event(3)
    with store.batch() as tx:
        assert tx.insert_events([a, b]) == [a, b]
        assert tx.insert_events([b, c]) == [c]
        tx.add_actions([make_action(a)])
        tx.add_actions([make_action(a), make_action(c)])
    assert list(store.iter_events()) == [a, b, c]
    assert [e.action for e in store.due_actions(0.0, 10)] == [make_action(a), make_action(c)]


def test_every_event_field_survives_the_round_trip(store: CheckpointStore) -> None:
    binary = Event(
        key="bin",
        value=b"\x00\xff raw",
        namespace="ns",
        sender="svc",
        context="run-7",
        event_type="blob",
        create_time=1_700_000_000_123,
        headers=(("trace", b"\x01\x02"), ("trace", b"again")),
        topic="t",
        partition=3,
        offset=2**40,
        event_id="e-bin",
    )
    text = Event(key="txt", value="nul \x00 and ünïcødé ✓", event_id="[not json")
    bare = Event(key="bare", value="", event_id="e-bare")  # no Kafka coordinates
    with store.batch() as tx:
        assert tx.insert_events([binary, text, bare]) == [binary, text, bare]
    for event in (binary, text, bare):
        stored = store.get_event(event.event_id)
        assert stored == event
        assert stored is not None and type(stored.value) is type(event.value)


# -- the batch is one transaction -------------------------------------------------------


def test_a_block_that_raises_writes_nothing(store: CheckpointStore) -> None:
    event = make_event(1)

    def write_everything_then_fail() -> None:
        with store.batch() as tx:
            tx.insert_events([event])
            tx.put_rule_state("r1", '{"seen": 1}')
            tx.add_actions([make_action(event)])
            tx.add_dead_records([DeadRecord("orders", 0, 9, "bad", "DecodeError", None, b"x")])
            tx.set_next_offsets({TP: 2})
            raise RuntimeError("rules blew up")

    with pytest.raises(RuntimeError, match="rules blew up"):
        write_everything_then_fail()
    assert store.count_events() == 0
    assert store.next_offsets() == {}
    assert store.count_actions(ActionState.PENDING) == 0
    assert store.list_dead_records() == []
    assert rule_state(store, "r1") is None
    with store.batch() as tx:  # and the store is usable afterwards
        assert tx.insert_events([event]) == [event]


def test_a_finished_batch_cannot_be_written_to(store: CheckpointStore) -> None:
    with store.batch() as tx:
        tx.insert_events([make_event(1)])
    with pytest.raises(CheckpointError, match="ended"):
        tx.insert_events([make_event(2)])
    assert store.count_events() == 1


def test_next_offsets_never_move_backwards(store: CheckpointStore) -> None:
    other = ("payments", 2)
    with store.batch() as tx:
        tx.set_next_offsets({TP: 10, other: 4})
    with store.batch() as tx:
        tx.set_next_offsets({TP: 5, other: 7})  # a redelivered, older batch for TP
    assert store.next_offsets() == {TP: 10, other: 7}
    assert store.next_offsets("payments") == {other: 7}
    assert store.next_offsets("absent") == {}


# -- fencing ----------------------------------------------------------------------------


def test_a_stale_epoch_is_fenced_and_writes_nothing(
    store: CheckpointStore, peer: CheckpointStore
) -> None:
    a_epoch = store.claim_partitions("instance-a", [TP])[TP]
    b_epoch = peer.claim_partitions("instance-b", [TP])[TP]
    assert b_epoch > a_epoch

    def zombie_batch() -> None:
        with store.batch() as tx:
            tx.insert_events([make_event(1)])
            tx.add_actions([make_action(make_event(1))])
            tx.set_next_offsets({TP: 2}, {TP: a_epoch})

    with pytest.raises(Fenced, match="instance-b"):
        zombie_batch()
    assert store.count_events() == 0
    assert store.count_actions(ActionState.PENDING) == 0
    assert store.next_offsets() == {}

    with peer.batch() as tx:  # the owner writes
        tx.insert_events([make_event(1)])
        tx.set_next_offsets({TP: 2}, {TP: b_epoch})

    a_again = store.claim_partitions("instance-a", [TP])[TP]  # A is assigned it back
    with store.batch() as tx:
        assert tx.insert_events([make_event(2)]) == [make_event(2)]
        tx.set_next_offsets({TP: 3}, {TP: a_again})
    assert store.next_offsets() == {TP: 3}
    with pytest.raises(Fenced):
        commit_offsets(peer, {TP: 4}, {TP: b_epoch})
    assert store.next_offsets() == {TP: 3}


def test_a_swallowed_fence_still_cancels_the_batch(store: CheckpointStore) -> None:
    old = store.claim_partitions("a", [TP])[TP]
    store.claim_partitions("b", [TP])

    def careless_batch() -> None:
        with store.batch() as tx:
            tx.insert_events([make_event(1)])
            with contextlib.suppress(Fenced):  # the commit must refuse anyway
                tx.set_next_offsets({TP: 2}, {TP: old})

    with pytest.raises(Fenced):
        careless_batch()
    assert store.count_events() == 0


def test_claims_bump_epochs_per_partition(store: CheckpointStore) -> None:
    other = ("orders", 1)
    assert store.claim_partitions("a", [TP, other]) == {TP: 1, other: 1}
    assert store.claim_partitions("b", [other]) == {other: 2}
    assert store.claim_partitions("a", []) == {}


# -- outbox -----------------------------------------------------------------------------


def test_due_actions_come_in_seq_order_and_retries_wait(store: CheckpointStore) -> None:
    events = [make_event(n) for n in range(4)]
    actions = [make_action(e) for e in events]
    queue(store, actions[:2])
    queue(store, actions[2:])
    now = 1000.0
    due = store.due_actions(now, 10)
    assert ids(due) == [a.action_id for a in actions]
    assert [e.seq for e in due] == sorted(e.seq for e in due)
    assert due[0].action == actions[0]
    assert (due[0].state, due[0].attempts, due[0].last_error) == (ActionState.PENDING, 0, None)
    assert ids(store.due_actions(now, 2)) == [a.action_id for a in actions[:2]]

    store.mark_retry(actions[1].action_id, now + 60, "TargetError: 503")
    assert actions[1].action_id not in ids(store.due_actions(now, 10))
    later = store.due_actions(now + 60, 10)
    assert ids(later) == [a.action_id for a in actions], "due again once its time has come"
    assert (later[1].attempts, later[1].last_error) == (1, "TargetError: 503")
    assert later[1].next_attempt_at == now + 60

    store.mark_retry(actions[1].action_id, now + 120, "TargetError: 504")
    assert store.list_actions(ActionState.PENDING)[1].attempts == 2


def test_done_and_dead_actions_leave_the_queue(store: CheckpointStore) -> None:
    actions = [make_action(make_event(n)) for n in range(4)]
    queue(store, actions)
    store.mark_done([actions[0].action_id, actions[1].action_id])
    store.mark_dead(actions[2].action_id, "TargetRejected: 400")
    assert ids(store.due_actions(1e12, 10)) == [actions[3].action_id]
    assert store.count_actions(ActionState.PENDING) == 1
    assert store.count_actions(ActionState.DONE) == 2
    assert store.count_actions(ActionState.DEAD) == 1
    assert ids(store.list_actions(ActionState.DONE)) == [a.action_id for a in actions[:2]]
    (dead,) = store.list_actions(ActionState.DEAD)
    assert dead.action == actions[2]
    assert (dead.attempts, dead.last_error) == (1, "TargetRejected: 400")
    assert len(store.list_actions(ActionState.DONE, limit=1)) == 1

    store.mark_done([actions[2].action_id])  # only pending actions change state
    assert store.count_actions(ActionState.DEAD) == 1


def test_replay_dead_named_and_all(store: CheckpointStore) -> None:
    actions = [make_action(make_event(n)) for n in range(3)]
    queue(store, actions)
    for action in actions:
        store.mark_retry(action.action_id, 0.0, "TargetError: timeout")
        store.mark_dead(action.action_id, "TargetError: timeout")
    assert store.replay_dead([actions[1].action_id, "unknown-id"]) == 1
    (replayed,) = store.due_actions(0.0, 10)
    assert replayed.action == actions[1]
    assert (replayed.state, replayed.attempts) == (ActionState.PENDING, 0)
    assert store.replay_dead() == 2
    assert ids(store.due_actions(0.0, 10)) == [a.action_id for a in actions]
    assert store.replay_dead() == 0
    assert store.count_actions(ActionState.DEAD) == 0


def test_actions_are_counted_by_rule_in_every_state(store: CheckpointStore) -> None:
    assert store.count_actions_by_rule() == {}
    events = [make_event(n) for n in range(3)]
    actions = [make_action(e, rule="r1") for e in events] + [make_action(events[0], rule="r2")]
    queue(store, actions)
    store.mark_done([actions[0].action_id])
    store.mark_dead(actions[1].action_id, "TargetRejected: no")
    assert store.count_actions_by_rule() == {"r1": 3, "r2": 1}


def _clock_passes(moment: float) -> None:
    """Wait (bounded) until time.time() is past ``moment``: what is stored next is newer."""
    wait_for(lambda: time.time() > moment, timeout=5, interval=0.001, what="the clock")


def test_prune_deletes_old_events_and_old_done_actions_only(store: CheckpointStore) -> None:
    old_events = [make_event(n) for n in range(6)]
    old_actions = [make_action(e) for e in old_events]
    with store.batch() as tx:
        tx.insert_events(old_events)
        tx.add_actions(old_actions)
        tx.put_rule_state("join", "partial")
        tx.add_dead_records([DeadRecord("orders", 0, 99, "no key", "DecodeError", None, b"x")])
        tx.set_next_offsets({TP: 6})
    store.mark_done([a.action_id for a in old_actions[:4]])
    store.mark_dead(old_actions[4].action_id, "TargetRejected: no")  # [5] stays pending
    _clock_passes(time.time())
    cut = time.time()
    _clock_passes(cut)
    new_events = [make_event(n) for n in range(6, 9)]
    new_actions = [make_action(e) for e in new_events]
    with store.batch() as tx:
        tx.insert_events(new_events)
        tx.add_actions(new_actions)
    store.mark_done([a.action_id for a in new_actions])

    # In chunks: 3 old events and 3 old done actions, then the rest.
    assert store.prune(cut, limit=3) == 6
    assert store.prune(cut, limit=3) == 3 + 1
    assert store.prune(cut, limit=3) == 0

    assert [e.event_id for e in store.iter_events()] == [e.event_id for e in new_events]
    assert store.count_actions(ActionState.DONE) == 3  # the new ones
    assert ids(store.list_actions(ActionState.DEAD)) == [old_actions[4].action_id]
    assert ids(store.list_actions(ActionState.PENDING)) == [old_actions[5].action_id]
    assert rule_state(store, "join") == "partial"
    assert len(store.list_dead_records()) == 1
    assert store.next_offsets() == {TP: 6}
    # A pruned event is no longer known: the same id is inserted again.
    with store.batch() as tx:
        assert [e.event_id for e in tx.insert_events([old_events[0]])] == ["evt-0"]


def test_prune_of_an_empty_store_or_with_nothing_old_is_a_no_op(store: CheckpointStore) -> None:
    assert store.prune(time.time()) == 0
    with store.batch() as tx:
        tx.insert_events([make_event(1)])
    assert store.prune(0.0) == 0
    assert store.count_events() == 1


def test_add_actions_skips_ids_already_present(store: CheckpointStore) -> None:
    first, second = make_action(make_event(1)), make_action(make_event(2))
    with store.batch() as tx:
        tx.add_actions([first, make_action(make_event(1), payload={"dup": "in batch"})])
    store.mark_done([first.action_id])
    queue(store, [make_action(make_event(1), payload={"changed": True}), second])
    assert ids(store.list_actions(ActionState.PENDING)) == [second.action_id]
    (done,) = store.list_actions(ActionState.DONE)
    assert done.action == first, "the stored action is untouched"


def test_action_fields_survive_the_round_trip(store: CheckpointStore) -> None:
    task_action = Action(
        rule="all-arrived",
        kind=ActionKind.RESTART_TASK,
        target="webhook",
        namespace="ns",
        event_ids=("e1", "[e2", 'e"3'),
        event_key="k",
        workflow="wf",
        task="t1",
        context="run-1",
        payload={"nested": {"list": [1, 2.5, None]}, "text": "✓"},
    )
    odd_id = Action(
        rule="r", kind=ActionKind.NOTIFY, target="log", namespace="ns",
        event_ids=("[single",), event_key="k", action_id="custom-id",
    )  # fmt: skip
    queue(store, [task_action, odd_id])
    assert [e.action for e in store.due_actions(0.0, 10)] == [task_action, odd_id]


# -- rule state, dead records, steps ----------------------------------------------------


def test_rule_state_put_get_delete(store: CheckpointStore) -> None:
    with store.batch() as tx:
        assert tx.get_rule_state("all-of:run-1") is None
        tx.put_rule_state("all-of:run-1", '{"a": "e1"}')
        assert tx.get_rule_state("all-of:run-1") == '{"a": "e1"}', "visible inside the batch"
    assert rule_state(store, "all-of:run-1") == '{"a": "e1"}'
    with store.batch() as tx:
        tx.put_rule_state("all-of:run-1", '{"a": "e1", "b": "e2"}')
        tx.put_rule_state("other", "x")
    assert rule_state(store, "all-of:run-1") == '{"a": "e1", "b": "e2"}'
    with store.batch() as tx:
        tx.put_rule_state("all-of:run-1", None)
        assert tx.get_rule_state("all-of:run-1") is None
    assert rule_state(store, "all-of:run-1") is None
    assert rule_state(store, "other") == "x"


def test_dead_records_are_listed_in_order_once_each(store: CheckpointStore) -> None:
    records = [
        DeadRecord("orders", 0, 7, "not JSON", "DecodeError", b"k\x00", b"\xff\xfe"),
        DeadRecord("orders", 1, 3, "too large", "DecodeError", None, None),
    ]
    with store.batch() as tx:
        tx.add_dead_records(records)
    with store.batch() as tx:  # redelivered after a crash
        tx.add_dead_records([records[0]])
    assert store.list_dead_records() == records
    assert store.list_dead_records(limit=1) == records[:1]


def test_put_step_keeps_the_first_event(store: CheckpointStore) -> None:
    first, second = make_event(1), make_event(2)
    assert store.get_step("wf-1/step-0") is None
    assert store.put_step("wf-1/step-0", first) == first
    assert store.put_step("wf-1/step-0", second) == first
    assert store.get_step("wf-1/step-0") == first
    assert store.put_step("wf-1/step-1", second) == second


# -- lifecycle and threads --------------------------------------------------------------


def test_close_is_idempotent_and_a_closed_store_refuses_work(store_url: str) -> None:
    opened = open_store(store_url)
    opened.open()
    opened.open()  # a second open is harmless too
    opened.close()
    opened.close()
    with pytest.raises(CheckpointError, match="not open"):
        opened.count_events()
    with pytest.raises(CheckpointError, match="not open"):
        commit_offsets(opened, {TP: 1})


def test_writing_from_inside_ones_own_batch_is_refused_not_deadlocked(
    store: CheckpointStore,
) -> None:
    def claim_inside_batch() -> None:
        with store.batch() as tx:
            tx.insert_events([make_event(1)])
            store.claim_partitions("a", [TP])

    with pytest.raises(CheckpointError, match="batch"):
        claim_inside_batch()
    assert store.count_events() == 0


def test_batch_thread_and_dispatch_thread_lose_nothing(store: CheckpointStore) -> None:
    batches, per_batch = 30, 40
    total = batches * per_batch
    errors: list[BaseException] = []
    stop = threading.Event()

    def pipeline() -> None:
        try:
            for b in range(batches):
                events = [make_event(b * per_batch + i) for i in range(per_batch)]
                with store.batch() as tx:
                    new = tx.insert_events(events)
                    tx.add_actions([make_action(e) for e in new])
                    tx.put_rule_state("progress", str(b))
                    tx.set_next_offsets({TP: (b + 1) * per_batch})
        except BaseException as exc:
            errors.append(exc)

    def dispatch() -> None:
        # First attempt fails and is retried at once; the second succeeds.
        try:
            while not stop.is_set():
                due = store.due_actions(time.time(), 25)
                for entry in due:
                    if entry.attempts == 0:
                        store.mark_retry(entry.action.action_id, 0.0, "TargetError: flaky")
                done = [e.action.action_id for e in due if e.attempts > 0]
                store.mark_done(done)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pipeline), threading.Thread(target=dispatch)]
    for thread in threads:
        thread.start()
    try:
        wait_for(
            lambda: errors or store.count_actions(ActionState.DONE) == total,
            timeout=180,
            what="every action delivered",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert store.count_events() == total
    assert store.next_offsets() == {TP: total}
    assert rule_state(store, "progress") == str(batches - 1)
    done = store.list_actions(ActionState.DONE, limit=total)
    assert len(done) == total
    assert {e.attempts for e in done} == {1}, "every retry was counted exactly once"
    assert store.count_actions(ActionState.PENDING) == 0


# -- persistence ------------------------------------------------------------------------


def test_everything_survives_close_and_reopen(durable_url: str) -> None:
    events = [make_event(n) for n in range(3)]
    actions = [make_action(e) for e in events]
    record = DeadRecord("orders", 0, 99, "bad", "DecodeError", b"k", b"v")
    with open_store(durable_url) as store:
        epoch = store.claim_partitions("a", [TP])[TP]
        with store.batch() as tx:
            tx.insert_events(events)
            tx.add_actions(actions)
            tx.put_rule_state("r", "state")
            tx.add_dead_records([record])
            tx.set_next_offsets({TP: 3}, {TP: epoch})
        store.mark_done([actions[0].action_id])
        store.mark_retry(actions[1].action_id, 50.0, "boom")
        store.put_step("s", events[0])
    with open_store(durable_url) as store:
        assert list(store.iter_events()) == events
        assert store.next_offsets() == {TP: 3}
        assert ids(store.list_actions(ActionState.DONE)) == [actions[0].action_id]
        pending = store.list_actions(ActionState.PENDING)
        assert [(e.action, e.attempts) for e in pending] == [(actions[1], 1), (actions[2], 0)]
        assert rule_state(store, "r") == "state"
        assert store.list_dead_records() == [record]
        assert store.get_step("s") == events[0]
        with store.batch() as tx:  # the epoch survives too: the old owner is still current
            tx.set_next_offsets({TP: 4}, {TP: epoch})
        assert store.claim_partitions("b", [TP]) == {TP: epoch + 1}


def test_iter_events_pages_through_large_stores(durable_url: str) -> None:
    events = [make_event(n) for n in range(2500)]
    with open_store(durable_url) as store:
        with store.batch() as tx:
            tx.insert_events(events)
        assert [e.event_id for e in store.iter_events()] == [e.event_id for e in events]


# -- open_store ------------------------------------------------------------------------


def test_open_store_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    for url in (f"sqlite://{tmp_path}/a.db", f"sqlite:///{tmp_path}/a.db", str(tmp_path / "a.db")):
        store = open_store(url)
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "a.db"
    assert isinstance(open_store("postgresql://u@localhost/db"), PostgresStore)
    assert isinstance(open_store("postgres://u@localhost/db"), PostgresStore)
    assert not (tmp_path / "a.db").exists(), "no I/O before open()"
    with pytest.raises(ConfigError, match="unknown scheme"):
        open_store("mysql://db")


# -- sqlite: refusals and durability ----------------------------------------------------


def _sqlite_files(path: Path) -> dict[str, bytes]:
    """The database file and any -wal/-shm companion, by name."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


@pytest.mark.parametrize(
    "content",
    [os.urandom(8192), b"SQLite format 3\x00" + os.urandom(4080), b"not a database at all"],
    ids=["random", "sqlite-header-then-garbage", "short-text"],
)
def test_sqlite_refuses_a_corrupt_file_and_leaves_it_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt, match=str(path)):
        SqliteStore(path).open()
    assert _sqlite_files(path) == {"store.db": content}


def test_sqlite_refuses_a_database_that_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
        conn.execute("INSERT INTO accounts (owner) VALUES ('alice')")
    conn.close()
    before = _sqlite_files(path)
    with pytest.raises(StoreCorrupt, match="not a kafka-event-connector checkpoint store"):
        SqliteStore(path).open()
    assert _sqlite_files(path) == before


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path) as store, store.batch() as tx:
        tx.insert_events([make_event(1)])
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = _sqlite_files(path)
    with pytest.raises(SchemaTooNew, match=f"version {SCHEMA_VERSION + 1}"):
        SqliteStore(path).open()
    assert _sqlite_files(path) == before


def test_sqlite_migrates_a_version_1_store_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in sqlite_migrations[1]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO events (id_hash, event_id, key, value, namespace, create_time) "
        "VALUES (1, 'v1-event', 'k', 'v', 'shop', 0)"
    )
    conn.close()
    upgraded_at = time.time()
    with SqliteStore(path) as store:
        assert [e.event_id for e in store.iter_events()] == ["v1-event"]
        # Its age counts from the upgrade: not pruned by a cut before it, pruned after.
        assert store.prune(upgraded_at - 60) == 0
        assert store.prune(time.time() + 60) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_sqlite_creates_a_missing_file_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "store.db"
    with SqliteStore(path) as store:
        assert store.count_events() == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from checkpoint.sqlite import SqliteStore
    from tests.integration.test_checkpoint_contract import TP, make_action, make_event

    store = SqliteStore(sys.argv[1])
    store.open()
    committed = [make_event(n) for n in range(100)]
    with store.batch() as tx:
        tx.insert_events(committed)
        tx.add_actions([make_action(e) for e in committed])
        tx.set_next_offsets({TP: 100})
    print("committed", flush=True)
    with store.batch() as tx:  # killed half-way through the next batch
        tx.insert_events([make_event(n) for n in range(100, 200)])
        tx.set_next_offsets({TP: 200})
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sqlite_batch_survives_sigkill_right_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "committed"
    with SqliteStore(path) as store:
        assert store.count_events() == 100, "the committed batch, and nothing of the next"
        assert store.get_event("evt-99") == make_event(99)
        assert store.next_offsets() == {TP: 100}
        assert store.count_actions(ActionState.PENDING) == 100


# -- postgres: refusals -----------------------------------------------------------------


def test_postgres_refuses_a_newer_schema(pg_store_url: Callable[[], str]) -> None:
    url = pg_store_url()
    with open_store(url):
        pass
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE kec_meta SET value = %s WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(SchemaTooNew, match=f"version {SCHEMA_VERSION + 1}"):
        open_store(url).open()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT value FROM kec_meta WHERE key = 'schema_version'").fetchone()
    assert row == (str(SCHEMA_VERSION + 1),), "left as it was"


def test_postgres_migrates_a_version_1_store_and_keeps_its_data(
    pg_store_url: Callable[[], str],
) -> None:
    url = pg_store_url()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in postgres_migrations[1]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO kec_meta (key, value) VALUES ('application', %s), ('schema_version', '1')",
            (POSTGRES_APPLICATION,),
        )
        conn.execute(
            "INSERT INTO kec_events (event_id, key, value, value_is_text, namespace, "
            "create_time) VALUES ('v1-event', 'k', 'v', true, 'shop', 0)"
        )
    upgraded_at = time.time()
    with open_store(url) as store:
        assert [e.event_id for e in store.iter_events()] == ["v1-event"]
        assert store.prune(upgraded_at - 60) == 0
        assert store.prune(time.time() + 60) == 1
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT value FROM kec_meta WHERE key = 'schema_version'").fetchone()
    assert row == (str(SCHEMA_VERSION),)


def test_postgres_refuses_tables_that_are_not_ours(pg_store_url: Callable[[], str]) -> None:
    url = pg_store_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kec_events (id int)")
    with pytest.raises(StoreCorrupt, match="kec_events"):
        open_store(url).open()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('kec_meta')").fetchone() == (None,)
