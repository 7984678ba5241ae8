"""One contract, three backends: memory, sqlite and postgres (also over verify-full TLS with
a SCRAM password) pass the same tests.

Most tests take ``store`` (parametrized over the backends); persistence takes
``durable_url`` (sqlite and postgres only). Backend-specific refusals (corrupt file, newer
schema, a second process on one SQLite file), the refusal of layouts no release shipped,
the migration from schema 3 and the SIGKILL durability test come last.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
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
    Parked,
    Parking,
    Settlement,
    Tried,
    open_store,
)
from checkpoint.migrate import V3_TABLES
from checkpoint.postgres import _TYPES as POSTGRES_TYPES
from checkpoint.postgres import APPLICATION as POSTGRES_APPLICATION
from checkpoint.postgres import PostgresStore
from checkpoint.records import Encoded
from checkpoint.sqlite import _TYPES as SQLITE_TYPES
from checkpoint.sqlite import APPLICATION_ID as SQLITE_APPLICATION_ID
from checkpoint.sqlite import MemoryStore, SqliteStore
from kec.action import Action, ActionKind
from kec.codec import event_from_message, explicit_id_problem
from kec.errors import (
    CheckpointError,
    ConfigError,
    Fenced,
    OffsetConflict,
    SchemaTooNew,
    StoreCorrupt,
    StoreInUse,
    StoreLocked,
)
from kec.event import Event

REPO = Path(__file__).resolve().parents[2]
TP = ("orders", 0)
TP1 = ("orders", 1)


def make_event(
    n: int, *, eid: str | None = None, value: str | bytes | None = None, tp: tuple[str, int] = TP
) -> Event:
    """Event ``n`` at offset ``n`` of ``tp``; explicit id ``eid`` if given."""
    return Event(
        key=f"k{n % 3}",
        value=f'{{"n": {n}}}' if value is None else value,
        namespace="shop",
        topic=tp[0],
        partition=tp[1],
        offset=n,
        create_time=1_700_000_000_000 + n,
        event_id=eid or "",
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


def append(
    store: CheckpointStore,
    events: list[Event],
    actions: list[Action] | None = None,
    *,
    epoch: int,
    tp: tuple[str, int] = TP,
) -> int:
    """One batch of ``events`` (offsets from their own) with ``actions``; the first aseq."""
    offsets = [e.offset for e in events if e.offset is not None] or [0]
    with store.batch() as tx:
        return tx.append(tp, epoch, min(offsets), max(offsets) + 1, events, actions or [])


def pending_ids(store: CheckpointStore, tp: tuple[str, int] = TP) -> list[int]:
    found = store.pending(tp)
    return sorted([q.aseq for q in found.queued] + [p.aseq for p in found.parked])


# -- fixtures ---------------------------------------------------------------------------


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    # postgres-tls: verify-full TLS and a SCRAM password, as production databases want.
    factory = "pg_store_url" if kind == "postgres" else "tls_pg_store_url"
    new_database: Callable[[], str] = request.getfixturevalue(factory)
    return new_database()


@pytest.fixture(params=["memory", "sqlite", "postgres", "postgres-tls"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres", "postgres-tls"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[CheckpointStore]:
    with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def epoch(store: CheckpointStore) -> int:
    """This test's instance owns TP and TP1."""
    claims = store.claim("me", [TP, TP1])
    return claims[TP].epoch


# -- batches and events -----------------------------------------------------------------


def test_a_batch_keeps_its_events_in_checkpoint_order(store: CheckpointStore, epoch: int) -> None:
    first = [make_event(n) for n in range(3)]
    second = [make_event(n) for n in range(3, 5)]
    append(store, first, epoch=epoch)
    append(store, second, epoch=epoch)
    assert list(store.iter_events()) == first + second
    assert store.count_events() == 5
    assert store.next_offsets() == {TP: 5}
    assert store.next_offsets("elsewhere") == {}


def test_a_record_encoded_ahead_is_written_only_for_its_own_events(
    store: CheckpointStore, epoch: int
) -> None:
    events = [make_event(n) for n in range(4)]
    actions = [make_action(e) for e in events]
    ahead = Encoded(events, actions)
    with store.batch() as tx:  # its own events and actions: taken as they are
        tx.append(TP, epoch, 0, 2, events[:2], actions[:2], None, Encoded(events[:2], actions[:2]))
    # Equal in value is not enough: another list (one event dropped as a duplicate, say)
    # is encoded again, whatever the blobs say.
    stale = Encoded([make_event(2), make_event(3)], [make_action(make_event(2))] * 2)
    with store.batch() as tx:
        tx.append(TP, epoch, 2, 4, events[2:3], actions[2:3], None, ahead)
        tx.append(TP1, epoch, 0, 1, [make_event(0, tp=TP1)], [], None, stale)
    assert list(store.iter_events()) == [*events[:3], make_event(0, tp=TP1)]
    assert [q.action for q in store.pending(TP).queued] == actions[:3]
    assert store.pending(TP1).queued == []


def test_only_a_sqlite_file_opened_without_its_lock_shares_its_write_lock(
    store_url: str, tmp_path: Path
) -> None:
    # The processes of one instance open the file without the lock (their supervisor
    # holds it): their transactions wait for each other's. A running connector alone
    # holds it; PostgreSQL's locks are per row; :memory: is one process's.
    shared = store_url.startswith("sqlite")
    with open_store(store_url) as store:
        assert store.shared_write_lock is shared
    path = tmp_path / "own.db"
    with open_store(f"sqlite://{path}", exclusive=True) as store:
        assert store.shared_write_lock is False


def test_explicit_ids_are_claimed_once_per_namespace(store: CheckpointStore, epoch: int) -> None:
    a = make_event(1, eid="order-1")
    again = make_event(2, eid="order-1")  # an application resend under another offset
    other_ns = Event(key="k", value="v", namespace="billing", event_id="order-1",
                     topic="billing", partition=0, offset=7)  # fmt: skip
    with store.batch() as tx:
        assert tx.claim_event_ids([a, again]) == {("shop", "order-1")}
        assert tx.claim_event_ids([again]) == set()
        assert tx.claim_event_ids([other_ns]) == {("billing", "order-1")}
        assert tx.claim_event_ids([]) == set()
    with store.batch() as tx:
        assert tx.claim_event_ids([again]) == set()  # still known in a later batch


def test_every_event_field_survives_and_is_found_by_id(store: CheckpointStore, epoch: int) -> None:
    rich = Event(
        key="k-ü", value=b"\x00\xffbinary", namespace="shop", sender="billing", context="wf-9",
        event_type="order.paid", create_time=1_700_000_000_123,
        headers=(("trace", b"\xfe\x00"), ("empty", b"")),
        topic=TP[0], partition=TP[1], offset=10, event_id="explicit-10",
    )  # fmt: skip
    plain = make_event(11, value="text with NUL \x00 and ☃")
    with store.batch() as tx:
        tx.claim_event_ids([rich])
        tx.append(TP, epoch, 10, 12, [rich, plain], [])
    assert list(store.iter_events()) == [rich, plain]
    assert store.get_event("explicit-10", "shop") == rich
    assert store.get_event("explicit-10") == rich
    assert store.get_event("explicit-10", "billing") is None
    assert store.get_event(plain.event_id) == plain  # by its coordinates
    assert plain.event_id == "orders/0/11"
    assert store.get_event("orders/0/12") is None
    assert store.get_event("nope") is None


# Ids the codec accepts as explicit although they look like places; each is found by it.
LOOKALIKE_IDS = [
    "a/b/1/2", "/1/2", "t/-1/2", "t/1/-2", "./1/2", "t/2147483648/0",
    "t/0/9223372036854775808", "t/\u0661/2", "ü/1/2", "t/1/2/", "orders/0/x",
]  # fmt: skip


class _Record:
    """The part of ``confluent_kafka.Message`` the codec reads: key, value, an event id."""

    def __init__(self, event_id: str, offset: int) -> None:
        self._id, self._offset = event_id, offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> list[tuple[str, bytes]]:
        return [("event-id", self._id.encode())]

    def topic(self) -> str:
        return TP[0]

    def partition(self) -> int:
        return TP[1]

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def test_an_id_the_codec_accepts_as_explicit_is_found_by_it(
    store: CheckpointStore, epoch: int
) -> None:
    assert [i for i in LOOKALIKE_IDS if explicit_id_problem(i) is not None] == []
    events = [
        event_from_message(_Record(eid, 20 + n), "shop") for n, eid in enumerate(LOOKALIKE_IDS)
    ]
    with store.batch() as tx:
        tx.claim_event_ids(events)
        tx.append(TP, epoch, 20, 20 + len(events), events, [])
    assert [store.get_event(e.event_id, "shop") for e in events] == events
    assert [store.get_event(e.event_id) for e in events] == events
    assert store.get_event("orders/0/20") == events[0]  # and by its place


def test_a_block_that_raises_writes_nothing(store: CheckpointStore, epoch: int) -> None:
    def half_way() -> None:
        with store.batch() as tx:
            tx.claim_event_ids([make_event(1, eid="x")])
            tx.append(TP, epoch, 0, 2, [make_event(0), make_event(1, eid="x")], [])
            tx.write_rule_state({"r": "v"})
            tx.add_dead_records([DeadRecord("orders", 0, 9, "bad", "DecodeError", None, b"x")])
            raise RuntimeError("half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        half_way()
    assert store.count_events() == 0
    assert store.next_offsets() == {}
    assert store.read_rule_state(["r"]) == {}
    assert store.list_dead_records() == []
    with store.batch() as tx:
        assert tx.claim_event_ids([make_event(1, eid="x")]) == {("shop", "x")}


def test_a_finished_batch_cannot_be_written_to(store: CheckpointStore, epoch: int) -> None:
    with store.batch() as tx:
        pass
    with pytest.raises(CheckpointError, match="ended"):
        tx.append(TP, epoch, 0, 1, [make_event(0)], [])


def test_a_batch_must_start_at_the_stored_next_offset(store: CheckpointStore, epoch: int) -> None:
    with store.batch() as tx:
        tx.append(TP, epoch, 0, 10, [], [])
    for first in (0, 4, 12):  # behind, inside, beyond (a gap the caller did not state)

        def refused(first: int = first) -> None:
            with store.batch() as tx:
                tx.append(TP, epoch, first, first + 5, [make_event(first)], [])

        with pytest.raises(OffsetConflict) as caught:
            refused()
        assert (caught.value.partition, caught.value.stored, caught.value.first) == (
            TP, 10, first,
        )  # fmt: skip
    assert store.next_offsets() == {TP: 10}
    assert store.count_events() == 0
    append(store, [make_event(10), make_event(11)], epoch=epoch)
    assert store.next_offsets() == {TP: 12}


def test_a_batch_applied_again_after_a_lost_acknowledgement_changes_nothing(
    store: CheckpointStore, epoch: int
) -> None:
    """The same batch twice, as a pipeline retries one whose COMMIT was acknowledged to
    nobody: the second is refused whole, so ids, rule state, dead records and actions
    are as the first left them."""
    events = [make_event(0, eid="x"), make_event(1)]
    actions = [make_action(events[0]), make_action(events[1])]
    dead = DeadRecord(TP[0], TP[1], 2, "bad", "DecodeError", b"k", b"v")

    def apply() -> set[tuple[str, str]]:
        with store.batch() as tx:
            fresh = tx.claim_event_ids([e for e in events if e.explicit_id])
            state = tx.read_rule_state(["set"])
            tx.write_rule_state({"set": state.get("set", "") + "+"})
            tx.add_dead_records([dead])
            tx.append(TP, epoch, 0, 3, events, actions)
        return fresh

    assert apply() == {("shop", "x")}
    with pytest.raises(OffsetConflict):
        apply()
    assert store.read_rule_state(["set"]) == {"set": "+"}
    assert store.count_events() == 2
    assert store.count_actions_by_rule() == {actions[0].rule: 2}
    assert len(store.list_dead_records()) == 1
    assert pending_ids(store) == [0, 1]
    assert store.next_offsets() == {TP: 3}


def test_a_swallowed_offset_conflict_still_cancels_the_batch(
    store: CheckpointStore, epoch: int
) -> None:
    append(store, [make_event(0)], epoch=epoch)

    def swallowed() -> None:
        with store.batch() as tx:
            tx.append(TP1, epoch, 0, 1, [make_event(0, tp=TP1)], [])
            with contextlib.suppress(OffsetConflict):
                tx.append(TP, epoch, 0, 1, [make_event(0)], [])

    with pytest.raises(OffsetConflict):
        swallowed()
    assert store.count_events() == 1


def test_a_stale_epoch_is_fenced_and_writes_nothing(store: CheckpointStore, epoch: int) -> None:
    newer = store.claim("other", [TP])[TP].epoch
    assert newer == epoch + 1

    def both() -> None:
        with store.batch() as tx:
            tx.append(TP1, epoch, 0, 1, [make_event(0, tp=TP1)], [])  # TP1 is still ours
            tx.append(TP, epoch, 0, 1, [make_event(0)], [])

    with pytest.raises(Fenced, match="other owns it") as caught:
        both()
    assert caught.value.partitions == (TP,)
    assert store.count_events() == 0, "the whole batch rolled back"
    assert store.next_offsets() == {}
    append(store, [make_event(0)], epoch=newer)
    assert store.next_offsets() == {TP: 1}


def test_a_swallowed_fence_still_cancels_the_batch(store: CheckpointStore, epoch: int) -> None:
    store.claim("other", [TP])

    def swallowed() -> None:
        with store.batch() as tx:
            tx.append(TP1, epoch, 0, 1, [make_event(0, tp=TP1)], [])
            with contextlib.suppress(Fenced):
                tx.append(TP, epoch, 0, 1, [make_event(0)], [])

    with pytest.raises(Fenced):
        swallowed()
    assert store.count_events() == 0


def test_a_partition_never_claimed_is_fenced(store: CheckpointStore) -> None:
    def unclaimed() -> None:
        with store.batch() as tx:
            tx.append(TP, 1, 0, 1, [make_event(0)], [])

    with pytest.raises(Fenced, match="nobody owns it"):
        unclaimed()


def test_claims_bump_epochs_and_say_where_a_partition_stands(store: CheckpointStore) -> None:
    first = store.claim("a", [TP, TP1])
    assert {tp: c.epoch for tp, c in first.items()} == {TP: 1, TP1: 1}
    assert first[TP].next_offset is None and first[TP].next_aseq == 0
    events = [make_event(n) for n in range(3)]
    append(store, events, [make_action(e) for e in events], epoch=1)
    again = store.claim("b", [TP])[TP]
    assert (again.epoch, again.next_offset, again.next_aseq, again.watermark) == (2, 3, 3, 0)
    (info,) = [p for p in store.partitions() if p.tp == TP]
    assert (info.owner, info.epoch, info.next_offset) == ("b", 2, 3)
    assert store.epochs([TP, TP1, ("nope", 0)]) == {TP: 2, TP1: 1}


# -- actions ----------------------------------------------------------------------------


def test_actions_are_numbered_per_partition_and_pending_from_the_watermark(
    store: CheckpointStore, epoch: int
) -> None:
    events = [make_event(n) for n in range(5)]
    actions = [make_action(e) for e in events]
    assert append(store, events[:3], actions[:3], epoch=epoch) == 0
    assert append(store, events[3:], actions[3:], epoch=epoch) == 3
    other = make_event(0, tp=TP1)
    assert append(store, [other], [make_action(other)], epoch=epoch, tp=TP1) == 0
    assert store.pending(TP).queued[0].action == actions[0]
    assert store.settle({TP: Settlement(epoch, 2)}) == set()
    assert [q.aseq for q in store.pending(TP).queued] == [2, 3, 4]
    assert store.settle({TP: Settlement(epoch, 4)}) == set()
    assert pending_ids(store) == [4]
    assert store.count_actions(ActionState.PENDING) == 2  # aseq 4 of TP and 0 of TP1
    assert store.count_actions(ActionState.DONE) == 4
    assert [e.seq for e in store.list_actions(ActionState.DONE)] == [0, 1, 2, 3]
    assert store.count_actions_by_rule() == {"r1": 6}


def test_settled_spans_above_the_watermark_are_not_pending(
    store: CheckpointStore, epoch: int
) -> None:
    events = [make_event(n) for n in range(6)]
    actions = [make_action(e) for e in events]
    append(store, events, actions, epoch=epoch)
    assert store.settle({TP: Settlement(epoch, 1, done=[(2, 4), (5, 6)])}) == set()
    found = store.pending(TP)
    assert (found.watermark, found.end) == (1, 6)
    assert [q.aseq for q in found.queued] == [1, 4]
    assert store.count_actions(ActionState.PENDING) == 2
    assert store.count_actions(ActionState.DONE) == 4
    assert [e.seq for e in store.list_actions(ActionState.DONE)] == [0, 2, 3, 5]
    (info,) = [p for p in store.partitions() if p.tp == TP]
    assert info.done == ((2, 4), (5, 6))
    # Spans the watermark has passed (an older version wrote such) count once, not twice.
    assert store.settle({TP: Settlement(epoch, 6, done=[(2, 4), (5, 6)])}) == set()
    assert store.count_actions(ActionState.PENDING) == 0
    assert store.count_actions(ActionState.DONE) == 6


def test_the_watermark_never_moves_backwards(store: CheckpointStore, epoch: int) -> None:
    events = [make_event(n) for n in range(3)]
    append(store, events, [make_action(e) for e in events], epoch=epoch)
    store.settle({TP: Settlement(epoch, 3)})
    store.settle({TP: Settlement(epoch, 1)})
    assert pending_ids(store) == []


def test_parked_rows_let_the_watermark_pass_a_failing_key(
    store: CheckpointStore, epoch: int
) -> None:
    events = [make_event(n) for n in range(4)]
    actions = [make_action(e) for e in events]
    append(store, events, actions, epoch=epoch)
    retry = Parked(TP, 0, actions[0], Parking.RETRY, 1, time.time() + 60, "TargetError: 503")
    held = Parked(TP, 3, actions[3], Parking.HELD)
    dead = Parked(TP, 1, actions[1], Parking.DEAD, 8, 0.0, "TargetRejected: 400")
    assert store.settle({TP: Settlement(epoch, 4, [retry, held, dead])}) == set()
    found = store.pending(TP)
    assert found.queued == []
    assert found.parked == [retry, held]  # not the dead one
    assert store.count_actions(ActionState.PENDING) == 2
    assert store.count_actions(ActionState.DEAD) == 1
    assert store.count_actions(ActionState.DONE) == 1  # aseq 2
    (listed,) = store.list_actions(ActionState.DEAD)
    assert (listed.action, listed.attempts, listed.last_error) == (actions[1], 8, dead.last_error)
    # The retry succeeded, then the held one: their rows go.
    store.settle({TP: Settlement(epoch, 4, unpark=[0, 3])})
    assert store.pending(TP).parked == []
    assert store.count_actions(ActionState.PENDING) == 0
    assert store.count_actions(ActionState.DONE) == 3


def test_lineage_keeps_the_attempts_reported_and_when_actions_were_settled(
    store: CheckpointStore, epoch: int
) -> None:
    events = [make_event(n) for n in range(4)]
    actions = [make_action(e) for e in events]
    append(store, events, actions, epoch=epoch)
    before = time.time()

    def tried(i: int, outcome: str, detail: str | None = None) -> Tried:
        return Tried(i, actions[i].action_id, "log", time.time(), outcome, detail)

    retry = Parked(TP, 0, actions[0], Parking.RETRY, 1, time.time() + 60, "TargetError: 503")
    dead = Parked(TP, 1, actions[1], Parking.DEAD, 2, 0.0, "TargetRejected: 400")
    first_round = [
        tried(0, "failed", "TargetError: 503"),
        tried(1, "failed", "TargetError: 503"),
        tried(1, "dead", "TargetRejected: 400 " + "x" * 900),
    ]
    store.settle({TP: Settlement(epoch, 4, [retry, dead], tried=first_round)})
    store.settle({TP: Settlement(epoch, 4, unpark=[0], tried=[tried(0, "delivered")])})
    where = [(TP, i, a.action_id) for i, a in enumerate(actions)]
    found = store.action_lineage(where)
    first, second, third, _ = (found[a.action_id] for a in actions)
    assert first.state is ActionState.DONE
    assert [(t.n, t.outcome, t.target, t.detail) for t in first.attempts] == [
        (1, "failed", "log", "TargetError: 503"),
        (2, "delivered", "log", None),
    ]
    assert second.state is ActionState.DEAD and second.settled_by is None
    assert [(t.n, t.outcome) for t in second.attempts] == [(1, "failed"), (2, "dead")]
    assert len(second.attempts[1].detail or "") == 500  # trimmed
    assert second.last_error == "TargetRejected: 400"
    assert third.state is ActionState.DONE and third.attempts == ()  # a first-try delivery
    assert third.settled_by is not None and before <= third.settled_by <= time.time()
    # Where each action is, by id alone; the batch of an offset, of an action.
    assert store.find_action(actions[2].action_id, scan=10) == (TP, 2)
    assert store.find_action(actions[0].action_id, scan=0) == (TP, 0)  # from its attempts
    assert store.find_action("0" * 32, scan=10) is None
    batch = store.batch_at(TP, 2)
    assert batch is not None and (batch.first_offset, batch.next_offset) == (0, 4)
    assert [e.offset for e in batch.events] == [0, 1, 2, 3] and batch.actions == tuple(actions)
    assert store.batch_of_action(TP, 3) == batch
    assert store.batch_at(TP, 9) is None and store.batch_of_action(TP, 9) is None
    assert [b.seq for b in store.recent_batches(5)] == [batch.seq]


def test_lineage_off_writes_no_attempts(store: CheckpointStore, epoch: int) -> None:
    store.lineage = False
    event = make_event(0)
    action = make_action(event)
    append(store, [event], [action], epoch=epoch)
    failed = Tried(0, action.action_id, "log", time.time(), "failed", "TargetError: 503")
    store.settle({TP: Settlement(epoch, 1, tried=[failed])})
    (lineage,) = store.action_lineage([(TP, 0, action.action_id)]).values()
    assert lineage.state is ActionState.DONE
    assert (lineage.attempts, lineage.settled_by) == ((), None)


def test_lineage_is_capped_in_rows(
    store: CheckpointStore, epoch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import checkpoint.sql

    monkeypatch.setattr(checkpoint.sql, "LINEAGE_CAPS", {"kec_attempts": 3, "kec_settled": 1})
    event = make_event(0)
    action = make_action(event)
    append(store, [event], [action], epoch=epoch)
    rounds = [Tried(0, action.action_id, "log", float(n), "failed", f"e{n}") for n in range(5)]
    store.settle({TP: Settlement(epoch, 0, tried=rounds)})
    assert store.prune(0.0) == 2  # the two oldest attempts; the one settle mark stays
    (lineage,) = store.action_lineage([(TP, 0, action.action_id)]).values()
    assert [t.detail for t in lineage.attempts] == ["e2", "e3", "e4"]


def test_a_stale_settlement_writes_nothing_for_its_partition(
    store: CheckpointStore, epoch: int
) -> None:
    for tp in (TP, TP1):
        event = make_event(0, tp=tp)
        append(store, [event], [make_action(event)], epoch=epoch, tp=tp)
    store.claim("other", [TP])
    parked = Parked(TP, 0, make_action(make_event(0)), Parking.DEAD)
    fenced = store.settle({TP: Settlement(epoch, 1, [parked]), TP1: Settlement(epoch, 1)})
    assert fenced == {TP}
    assert store.list_actions(ActionState.DEAD) == []
    assert pending_ids(store, TP) == [0]
    assert pending_ids(store, TP1) == []


def test_due_retries_of_owned_partitions_only(store: CheckpointStore, epoch: int) -> None:
    now = time.time()
    rows = []
    for tp in (TP, TP1):
        events = [make_event(n, tp=tp) for n in range(2)]
        actions = [make_action(e) for e in events]
        append(store, events, actions, epoch=epoch, tp=tp)
        rows.append(Parked(tp, 0, actions[0], Parking.RETRY, 1, now - 1, "e"))
        rows.append(Parked(tp, 1, actions[1], Parking.RETRY, 1, now + 60, "e"))
    store.settle({tp: Settlement(epoch, 2, [r for r in rows if r.tp == tp]) for tp in (TP, TP1)})
    assert store.due_retries([TP], now) == [rows[0]]
    assert {r.tp for r in store.due_retries([TP, TP1], now)} == {TP, TP1}
    assert store.due_retries([], now) == []


def test_replay_dead_named_and_all(store: CheckpointStore, epoch: int) -> None:
    events = [make_event(n) for n in range(3)]
    actions = [make_action(e) for e in events]
    append(store, events, actions, epoch=epoch)
    dead = [Parked(TP, i, a, Parking.DEAD, 8, 0.0, "gone") for i, a in enumerate(actions)]
    store.settle({TP: Settlement(epoch, 3, dead)})
    assert store.replay_dead([actions[0].action_id, "unknown"]) == 1
    (due,) = store.due_retries([TP], time.time())
    assert (due.action, due.attempts, due.state) == (actions[0], 0, Parking.RETRY)
    assert store.replay_dead() == 2
    assert store.replay_dead([]) == 0
    assert store.count_actions(ActionState.DEAD) == 0
    assert store.count_actions(ActionState.PENDING) == 3


def test_checkpointed_ids_are_the_newest_batch_of_each_offset(
    store: CheckpointStore, epoch: int
) -> None:
    append(store, [make_event(n) for n in range(3)], epoch=epoch)
    store.reset_partition(TP, 1, None, force=True)  # offsets 1 and 2 are read again
    again = store.claim("next", [TP])[TP]
    assert again.generation == 1
    append(store, [make_event(n, eid=f"orders/0/{n}@1") for n in (1, 2, 3)], epoch=again.epoch)
    assert store.checkpointed_ids(TP, 0, 4) == {
        0: "orders/0/0",
        1: "orders/0/1@1",
        2: "orders/0/2@1",
        3: "orders/0/3@1",
    }
    assert store.checkpointed_ids(TP, 2, 3) == {2: "orders/0/2@1"}
    assert store.checkpointed_ids(TP, 4, 9) == {}
    assert store.checkpointed_ids(TP1, 0, 4) == {}


def test_a_frozen_owners_open_transaction_holds_no_lock_past_the_idle_timeout(
    pg_store_url: Callable[[], str],
) -> None:
    """A process stopped (SIGSTOP, a VM pause) inside a transaction keeps its connection
    open: without the server's idle timeout its row lock would hold every other owner's
    claim of the partition, and the group with it, until it woke."""
    url = pg_store_url()
    with (
        PostgresStore(url, idle_transaction_timeout=1.0) as frozen,
        PostgresStore(url, idle_transaction_timeout=1.0) as other,
    ):
        epoch = frozen.claim("frozen", [TP])[TP].epoch
        inside, wake = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def stopped_mid_batch() -> None:
            try:
                with frozen.batch() as tx:
                    tx.append(TP, epoch, 0, 1, [make_event(0)], [make_action(make_event(0))])
                    inside.set()
                    wake.wait(60)  # frozen, its transaction open
            except CheckpointError as exc:
                failures.append(exc)

        thread = threading.Thread(target=stopped_mid_batch, daemon=True)
        thread.start()
        assert inside.wait(30)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            claimed = pool.submit(other.claim, "other", [TP]).result(timeout=30)
        assert claimed[TP].epoch > epoch and claimed[TP].next_offset is None
        wake.set()
        thread.join(30)
        assert len(failures) == 1, "the frozen batch must fail, not commit"
        # Woken, it reconnects and is fenced like any stale owner.
        with pytest.raises(Fenced):
            append(frozen, [make_event(0)], epoch=epoch)
        assert other.count_events() == 0


def test_requeue_skips_what_was_queued_before(store: CheckpointStore, epoch: int) -> None:
    events = [make_event(n) for n in range(3)]
    original = [make_action(e) for e in events]
    append(store, events, original, epoch=epoch)
    fixed_rule = [make_action(e, rule="r2") for e in events]
    assert store.requeue(TP, original + fixed_rule, 0, 3) == 3
    assert store.requeue(TP, fixed_rule, 0, 3) == 0, "a second replay queues nothing"
    due = store.due_retries([TP], time.time())
    assert sorted(r.aseq for r in due) == [3, 4, 5]
    assert {r.action.action_id for r in due} == {a.action_id for a in fixed_rule}
    assert store.count_actions_by_rule() == {"r1": 3, "r2": 3}
    assert store.claim("next", [TP])[TP].next_aseq == 6


def test_rule_state_read_write_delete_and_expiry(store: CheckpointStore) -> None:
    """Expiry is in event time: a state goes once every partition's event time is past
    it (by more than the lateness), whatever the wall clock says."""
    now = 1_700_000_000.0  # event time, long before the wall clock
    with store.batch() as tx:
        assert tx.read_rule_state(["a", "b"]) == {}
        tx.write_rule_state({"a": "1", "b": "2"}, {"b": now - 1})
    with store.batch() as tx:
        assert tx.read_rule_state(["b", "a", "a"]) == {"a": "1", "b": "2"}
        tx.write_rule_state({"a": None, "b": "3"})
    assert store.read_rule_state(["a", "b"]) == {"b": "3"}
    with store.batch() as tx:
        tx.write_rule_state({"b": "4", "c": "5"}, {"b": now - 1, "c": now + 1})
    store.prune(time.time() - 3600, lateness=0)
    assert store.read_rule_state(["b"]) == {"b": "4"}, "no partition has an event time yet"
    epoch = store.claim("me", [TP])[TP].epoch
    assert store.mark_partition(TP, epoch, event_time=int(now * 1000))
    assert not store.mark_partition(TP, epoch + 1, event_time=int(now * 1000)), "stale epoch"
    store.prune(time.time() - 3600, lateness=0)
    assert store.read_rule_state(["b", "c"]) == {"c": "5"}


def test_event_time_watermark_and_a_batch_of_no_records_with_actions(
    store: CheckpointStore, epoch: int
) -> None:
    """The idle rule's tick with time-driven rules: a batch of no records (from the
    partition's own next offset to itself) numbers and queues its actions, moves the
    partition's event time, and the watermark is the least partition event time (one
    never checkpointed counting as 0), with the times the transaction moves to."""
    with store.batch() as tx:
        assert tx.event_time_watermark() == 0
        assert tx.event_time_watermark({TP: 5_000}) == 0, "TP1 has no event time yet"
        assert tx.event_time_watermark({TP: 5_000, TP1: 7_000}) == 5_000
    append(store, [make_event(0), make_event(1)], epoch=epoch)
    fired = [make_action(make_event(1), rule="due")]
    epoch1 = store.epochs([TP1])[TP1]
    with store.batch() as tx:
        first_aseq = tx.append(TP, epoch, 2, 2, [], fired, 9_000)
        tx.append(TP1, epoch1, 0, 0, [], [], 8_000)
    assert first_aseq == 0
    assert [q.action.action_id for q in store.pending(TP).queued] == [fired[0].action_id]
    assert store.next_offsets()[TP] == 2
    with store.batch() as tx:
        assert tx.event_time_watermark() == 8_000
        assert tx.event_time_watermark({TP1: 10_000}) == 9_000
    with pytest.raises(Fenced), store.batch() as tx:
        tx.append(TP, epoch + 1, 2, 2, [], fired, 10_000)


def test_rule_state_range_is_a_prefix_in_code_point_order(store: CheckpointStore) -> None:
    inside = ["q/a/0", "q/a/1", "q/a/10", "q/a/2", "q/a/Z", "q/a/~", "q/a/é", "q/a/\U0001f600"]
    outside = ["q/", "q/Z", "q/a", "q/b", "q/b/0", "q0", "p/a/0", "r"]
    with store.batch() as tx:
        tx.write_rule_state({k: f"v:{k}" for k in [*inside, *outside]})
    # Byte order of UTF-8 is code-point order: the order Python sorts strings in.
    assert store.read_rule_state_range("q/a/", 100) == [(k, f"v:{k}") for k in sorted(inside)]
    assert [k for k, _ in store.read_rule_state_range("q/a/", 3)] == sorted(inside)[:3]
    page = store.read_rule_state_range("q/a/", 3, after=sorted(inside)[2])
    assert [k for k, _ in page] == sorted(inside)[3:6]
    assert store.read_rule_state_range("q/a/", 3, after="q/a/\U0001f600") == []
    assert store.read_rule_state_range("q/a/", 0) == []
    assert store.read_rule_state_range("none/", 10) == []
    everything = sorted([*inside, *outside])
    assert [k for k, _ in store.read_rule_state_range("", 100)] == everything


def test_dead_records_are_listed_in_order_once_each(store: CheckpointStore) -> None:
    records = [
        DeadRecord("orders", 0, 7, "not JSON", "DecodeError", b"k\x00", b"\xff\xfe"),
        DeadRecord("orders", 1, 3, "too large", "DecodeError", None, None),
    ]
    with store.batch() as tx:
        tx.add_dead_records(records)
        tx.add_dead_records([records[0]])
    assert store.list_dead_records() == records


def test_put_step_keeps_the_first_event(store: CheckpointStore) -> None:
    first, second = make_event(1, eid="s1"), make_event(2, eid="s2")
    assert store.get_step("wf-1/step-1") is None
    assert store.put_step("wf-1/step-1", first) == first
    assert store.put_step("wf-1/step-1", second) == first
    assert store.get_step("wf-1/step-1") == first


def test_steps_looked_up_on_an_event_loop_find_what_is_stored(store: CheckpointStore) -> None:
    """``get_step_async`` for many steps at once (a store may read them in one query):
    each gets its own stored event, or None."""
    stored = {f"wf-{n}/look": make_event(n, eid=f"l{n}") for n in range(0, 40, 3)}
    for step_id, event in stored.items():
        store.put_step(step_id, event)

    async def look() -> list[Event | None]:
        return await asyncio.gather(*(store.get_step_async(f"wf-{n}/look") for n in range(40)))

    found = asyncio.run(look())
    assert found == [stored.get(f"wf-{n}/look") for n in range(40)]


def test_steps_recorded_at_once_are_each_durable_and_the_first_writer_wins(
    store: CheckpointStore,
) -> None:
    """Concurrent callers share transactions (group commit); each gets its own step back,
    and callers racing on one step all get the event of the one that won."""
    events = {f"wf-{n}/step": make_event(n, eid=f"g{n}") for n in range(24)}
    rivals = [make_event(100 + n, eid=f"r{n}") for n in range(8)]
    got: dict[str, Event] = {}
    raced: list[Event] = []
    start = threading.Barrier(len(events) + len(rivals))

    def put(step_id: str, event: Event, into: Callable[[Event], None]) -> None:
        start.wait(10)
        into(store.put_step(step_id, event))

    threads = [
        threading.Thread(target=put, args=(s, e, lambda r, s=s: got.__setitem__(s, r)))
        for s, e in events.items()
    ] + [threading.Thread(target=put, args=("shared", e, raced.append)) for e in rivals]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == events
    assert len(raced) == len(rivals) and len({e.event_id for e in raced}) == 1
    assert raced[0] in rivals and store.get_step("shared") == raced[0]
    assert all(store.get_step(s) == e for s, e in events.items())


def test_prune_deletes_what_is_old_and_settled_only(store: CheckpointStore, epoch: int) -> None:
    old = [make_event(n, eid=f"old-{n}") for n in range(3)]
    with store.batch() as tx:
        tx.claim_event_ids(old)
        tx.append(TP, epoch, 0, 3, old, [make_action(e) for e in old])
    unsettled = make_event(0, tp=TP1)
    append(store, [unsettled], [make_action(unsettled)], epoch=epoch, tp=TP1)
    store.settle({TP: Settlement(epoch, 3)})
    with store.batch() as tx:
        tx.add_dead_records([DeadRecord("orders", 0, 9, "bad", "DecodeError", None, b"x")])
    store.put_step("s", old[0])
    assert store.prune(time.time() - 3600) == 0, "nothing is old yet"
    cut = time.time() + 1
    # the settled batch, the dead record, the step, and the settle mark (lineage)
    assert store.prune(cut, limit=10) == 4
    assert [e.event_id for e in store.iter_events()] == [unsettled.event_id]
    assert store.list_dead_records() == [] and store.get_step("s") is None
    with store.batch() as tx:  # pruned ids are no longer known
        assert tx.claim_event_ids([old[0]]) == {("shop", "old-0")}
    assert store.next_offsets() == {TP: 3, TP1: 1}, "offsets stay"
    assert store.prune(cut) == 0


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
        opened.claim("a", [TP])


def test_writing_from_inside_ones_own_batch_is_refused_not_deadlocked(
    store: CheckpointStore, epoch: int
) -> None:
    def claim_inside_batch() -> None:
        with store.batch() as tx:
            tx.append(TP, epoch, 0, 1, [make_event(0)], [])
            store.claim("a", [TP])

    with pytest.raises(CheckpointError, match=r"in use by this thread|inside this thread"):
        claim_inside_batch()
    assert store.count_events() == 0


def test_the_pipeline_and_the_dispatcher_threads_lose_nothing(
    store: CheckpointStore, epoch: int
) -> None:
    batches, per_batch = 30, 40
    total = batches * per_batch
    errors: list[BaseException] = []
    appended = threading.Event()

    def pipeline() -> None:
        try:
            for b in range(batches):
                events = [make_event(b * per_batch + i) for i in range(per_batch)]
                with store.batch() as tx:
                    tx.append(
                        TP, epoch, b * per_batch, (b + 1) * per_batch, events,
                        [make_action(e) for e in events],
                    )  # fmt: skip
                    tx.write_rule_state({"progress": str(b)})
        except BaseException as exc:
            errors.append(exc)
        finally:
            appended.set()

    def dispatch() -> None:
        try:
            watermark = 0
            while watermark < total:
                found = store.pending(TP)
                if found.queued:
                    watermark = found.queued[-1].aseq + 1
                    assert store.settle({TP: Settlement(epoch, watermark)}) == set()
                elif appended.is_set() and not store.pending(TP).queued:
                    break
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pipeline), threading.Thread(target=dispatch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors
    assert store.count_events() == total
    assert store.next_offsets() == {TP: total}
    assert store.read_rule_state(["progress"]) == {"progress": str(batches - 1)}
    assert store.count_actions(ActionState.DONE) == total
    assert store.count_actions(ActionState.PENDING) == 0


def test_two_owners_never_lose_an_update_of_shared_rule_state(
    pg_store_url: Callable[[], str],
) -> None:
    """An all_of set whose keys live on partitions of two instances: read-modify-write in
    each one's batch, at once, on two connections; every increment survives. (PostgreSQL:
    several instances share it; a SQLite store has one process.)"""
    url = pg_store_url()
    rounds = 60
    stores = [open_store(url), open_store(url)]
    for s in stores:
        s.open()
    try:
        start = threading.Barrier(2)

        def bump(s: CheckpointStore) -> None:
            start.wait(30)
            for _ in range(rounds):
                with s.batch() as tx:
                    count = int(tx.read_rule_state(["set"]).get("set", "0"))
                    tx.write_rule_state({"set": str(count + 1)})

        threads = [threading.Thread(target=bump, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert stores[0].read_rule_state(["set"]) == {"set": str(2 * rounds)}
    finally:
        for s in stores:
            s.close()


# -- persistence ------------------------------------------------------------------------


def test_everything_survives_close_and_reopen(durable_url: str) -> None:
    events = [make_event(n, eid=f"e{n}") for n in range(3)]
    actions = [make_action(e) for e in events]
    record = DeadRecord("orders", 0, 99, "bad", "DecodeError", b"k", b"v")
    retry = Parked(TP, 1, actions[1], Parking.RETRY, 1, 50.0, "boom")
    with open_store(durable_url) as store:
        epoch = store.claim("a", [TP])[TP].epoch
        with store.batch() as tx:
            tx.claim_event_ids(events)
            tx.append(TP, epoch, 0, 3, events, actions)
            tx.write_rule_state({"r": "state"})
            tx.add_dead_records([record])
        store.settle({TP: Settlement(epoch, 2, [retry])})
        store.put_step("s", events[0])
    with open_store(durable_url) as store:
        assert list(store.iter_events()) == events
        assert store.next_offsets() == {TP: 3}
        found = store.pending(TP)
        assert found.parked == [retry]
        assert [q.action for q in found.queued] == [actions[2]]
        assert store.read_rule_state(["r"]) == {"r": "state"}
        assert store.list_dead_records() == [record]
        assert store.get_step("s") == events[0]
        assert store.get_event("e1", "shop") == events[1]
        with store.batch() as tx:  # the epoch survives too: the old owner is still current
            tx.append(TP, epoch, 3, 4, [], [])
        assert store.claim("b", [TP])[TP].epoch == epoch + 1


def test_iter_events_pages_through_large_stores(durable_url: str) -> None:
    with open_store(durable_url) as store:
        epoch = store.claim("a", [TP])[TP].epoch
        for b in range(250):
            append(store, [make_event(b * 10 + i) for i in range(10)], epoch=epoch)
        assert [e.offset for e in store.iter_events()] == list(range(2500))


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


# -- sqlite: refusals, one process per file, durability ----------------------------------


def _sqlite_files(path: Path) -> dict[str, bytes]:
    """The database file and any -wal/-shm companion, by name (not the lock file)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(path.parent.glob(path.name + "*"))
        if not p.name.endswith(".lock")
    }


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
    with SqliteStore(path) as store:
        store.claim("a", [TP])
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = _sqlite_files(path)
    with pytest.raises(SchemaTooNew, match=f"version {SCHEMA_VERSION + 1}"):
        SqliteStore(path).open()
    assert _sqlite_files(path) == before


def test_sqlite_creates_a_missing_file_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "store.db"
    with SqliteStore(path) as store:
        assert store.count_events() == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


_HOLD_SCRIPT = textwrap.dedent(
    """
    import sys
    from checkpoint.sqlite import SqliteStore

    store = SqliteStore(sys.argv[1], exclusive=True)
    store.open()
    print("open", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    store.close()
    """
)


def test_sqlite_one_connector_per_file_and_tools_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_SCRIPT, str(path)],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreLocked, match=f"in use by pid {holder.pid} on "):
            SqliteStore(path, exclusive=True).open()
        with SqliteStore(path) as tool:  # status, dlq, replay: beside the connector
            assert tool.count_events() == 0
    finally:
        holder.communicate(timeout=60)
    with SqliteStore(path, exclusive=True) as store:  # released when the other one closed
        assert store.count_events() == 0
    with SqliteStore(path, exclusive=True):  # and by a close in this process too
        pass


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from checkpoint.sqlite import SqliteStore
    from tests.integration.test_checkpoint_contract import TP, make_action, make_event

    store = SqliteStore(sys.argv[1])
    store.open()
    epoch = store.claim("a", [TP])[TP].epoch
    committed = [make_event(n, eid=f"evt-{n}") for n in range(100)]
    with store.batch() as tx:
        tx.claim_event_ids(committed)
        tx.append(TP, epoch, 0, 100, committed, [make_action(e) for e in committed])
    print("committed", flush=True)
    with store.batch() as tx:  # killed half-way through the next batch
        tx.append(TP, epoch, 100, 200, [make_event(n) for n in range(100, 200)], [])
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
    with SqliteStore(path) as store:  # the killed process's lock went with it
        assert store.count_events() == 100, "the committed batch, and nothing of the next"
        assert store.get_event("evt-99", "shop") == make_event(99, eid="evt-99")
        assert store.next_offsets() == {TP: 100}
        assert store.count_actions(ActionState.PENDING) == 100


# -- layouts no release shipped (schema 1 and 2) ---------------------------------------

_REFUSED = r"schema version 2, a layout of development builds.*move it aside.*start again"


def test_sqlite_refuses_a_version_2_store_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE next_offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, "
        "next_offset INTEGER NOT NULL, PRIMARY KEY (topic, partition)) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO next_offsets VALUES ('orders', 0, 3)")
    conn.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before = _sqlite_files(path)
    for store in (SqliteStore(path), SqliteStore(path, exclusive=True, create=False)):
        with pytest.raises(CheckpointError, match=_REFUSED) as refused:
            store.open()
        assert type(refused.value) is CheckpointError
        assert str(path) in str(refused.value)
    assert _sqlite_files(path) == before, "not even switched to WAL"


def test_postgres_refuses_a_version_2_store_and_leaves_it_alone(
    pg_store_url: Callable[[], str],
) -> None:
    url = pg_store_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kec_meta (key text PRIMARY KEY, value text NOT NULL)")
        conn.execute(
            "CREATE TABLE kec_next_offsets (topic text NOT NULL, partition integer NOT NULL, "
            "next_offset bigint NOT NULL, PRIMARY KEY (topic, partition))"
        )
        conn.execute(
            "INSERT INTO kec_meta (key, value) VALUES ('application', %s), ('schema_version', '2')",
            (POSTGRES_APPLICATION,),
        )
    with pytest.raises(CheckpointError, match=_REFUSED) as refused:
        open_store(url).open()
    assert type(refused.value) is CheckpointError
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT value FROM kec_meta WHERE key = 'schema_version'").fetchone()
        assert row == ("2",), "left as it was"
        assert conn.execute("SELECT to_regclass('kec_partitions')").fetchone() == (None,)


# -- migration from schema 3, and not under an older version ---------------------------


def _v3_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in V3_TABLES:
        conn.execute(statement.format(**SQLITE_TYPES))
    conn.execute(
        "INSERT INTO kec_partitions (topic, partition, owner, epoch, next_offset, next_aseq, "
        "watermark, claimed_at) VALUES ('orders', 0, 'old', 3, 7, 0, 0, 0)"
    )
    conn.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 3")
    conn.close()


def test_sqlite_migrates_a_version_3_store_unless_an_older_connector_holds_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    _v3_sqlite(path)
    # A version-3 `run` holds the connector lock of the file while it runs.
    held = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(held, b"pid 4242 on old-host\n")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        refused = rf"pid 4242 on old-host.*version 3 to {SCHEMA_VERSION}"
        with pytest.raises(StoreInUse, match=refused):
            SqliteStore(path).open()
    finally:
        os.close(held)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (3,), "left as it was"
    conn.close()
    with SqliteStore(path) as store:
        claim = store.claim("new", [TP])[TP]
        assert (claim.epoch, claim.next_offset, claim.topic_id, claim.stopped) == (4, 7, None, None)
        append(store, [make_event(7)], [make_action(make_event(7))], epoch=claim.epoch)
        assert [q.aseq for q in store.pending(TP).queued] == [0]


def test_postgres_migrates_a_version_3_store_unless_an_older_instance_is_connected(
    pg_store_url: Callable[[], str],
) -> None:
    url = pg_store_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kec_meta (key text PRIMARY KEY, value text NOT NULL)")
        for statement in V3_TABLES:
            conn.execute(statement.format(**POSTGRES_TYPES))
        conn.execute(
            "INSERT INTO kec_meta (key, value) VALUES ('application', %s), ('schema_version', '3')",
            (POSTGRES_APPLICATION,),
        )
        conn.execute(
            "INSERT INTO kec_partitions (topic, partition, owner, epoch, next_offset, next_aseq, "
            "watermark, claimed_at) VALUES ('orders', 0, 'old', 3, 7, 0, 0, 0)"
        )
    # An instance of the previous version, still running: its connection's name says so.
    with psycopg.connect(url, application_name=POSTGRES_APPLICATION):
        with pytest.raises(StoreInUse, match=r"1 connection.* of an older version"):
            open_store(url).open()
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT value FROM kec_meta WHERE key = 'schema_version'").fetchone()
        assert row == ("3",), "left as it was"
    with open_store(url) as store:
        claim = store.claim("new", [TP])[TP]
        assert (claim.epoch, claim.next_offset) == (4, 7)
        append(store, [make_event(7)], [make_action(make_event(7))], epoch=claim.epoch)
        assert [q.aseq for q in store.pending(TP).queued] == [0]


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


def test_postgres_refuses_tables_that_are_not_ours(pg_store_url: Callable[[], str]) -> None:
    url = pg_store_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kec_events (id int)")
    with pytest.raises(StoreCorrupt, match="kec_events"):
        open_store(url).open()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('kec_meta')").fetchone() == (None,)
