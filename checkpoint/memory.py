"""An in-memory checkpoint store for tests: the contract's semantics, no durability.

A batch stages its writes in a :class:`_MemoryBatch` and applies them only when the block
exits cleanly, so a block that raises leaves the store exactly as it was. One lock
serialises batches and dispatch calls, as the SQL backends' transactions do; like the
SQLite store, it refuses writes from inside the same thread's open batch. Data survives
``close()``/``open()`` of the same instance (there is nothing to reconnect to).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

from checkpoint.base import (
    ActionState,
    BatchTransaction,
    CheckpointStore,
    DeadRecord,
    OutboxEntry,
    TopicPartition,
)
from checkpoint.rows import unique_by_id
from kec.action import Action
from kec.errors import CheckpointError, Fenced
from kec.event import Event


class MemoryStore(CheckpointStore):
    """Everything in dicts, guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._batch_thread: int | None = None
        self._is_open = False
        self._events: dict[str, Event] = {}  # dicts keep insertion (= checkpoint) order
        self._event_at: dict[str, float] = {}  # event id -> when stored
        self._action_at: dict[str, float] = {}  # action id -> when queued
        self._offsets: dict[TopicPartition, int] = {}
        self._owners: dict[TopicPartition, tuple[str, int]] = {}
        self._outbox: dict[str, OutboxEntry] = {}  # by action id, in seq order
        self._seq = itertools.count(1)
        self._rule_state: dict[str, str] = {}
        self._dead: dict[tuple[str, int, int], DeadRecord] = {}
        self._steps: dict[str, Event] = {}

    def open(self) -> None:
        with self._lock:
            self._is_open = True

    def close(self) -> None:
        with self._lock:
            self._is_open = False

    def _check_open(self) -> None:
        if not self._is_open:
            raise CheckpointError("the memory store is not open")

    def _check_writable(self) -> None:
        self._check_open()
        if self._batch_thread == threading.get_ident():
            raise CheckpointError("store written to from inside this thread's own batch()")

    @contextlib.contextmanager
    def batch(self) -> Iterator[BatchTransaction]:
        with self._lock:
            self._check_writable()
            tx = _MemoryBatch(self)
            self._batch_thread = threading.get_ident()
            try:
                yield tx
                tx.raise_if_failed()
                self._apply(tx)
            finally:
                tx.closed = True
                self._batch_thread = None

    def _apply(self, tx: _MemoryBatch) -> None:
        now = time.time()
        self._events.update(tx.events)
        self._event_at.update(dict.fromkeys(tx.events, now))
        self._action_at.update(dict.fromkeys(tx.actions, now))
        for key, value in tx.rule_state.items():
            if value is None:
                self._rule_state.pop(key, None)
            else:
                self._rule_state[key] = value
        for action in tx.actions.values():
            self._outbox[action.action_id] = OutboxEntry(
                next(self._seq), action, ActionState.PENDING, 0, 0.0, None
            )
        for record in tx.dead:
            self._dead.setdefault((record.topic, record.partition, record.offset), record)
        for tp, offset in tx.offsets.items():
            self._offsets[tp] = max(offset, self._offsets.get(tp, offset))

    # -- offsets and ownership -----------------------------------------------------------

    def next_offsets(self, topic: str | None = None) -> dict[TopicPartition, int]:
        with self._lock:
            self._check_open()
            return {tp: o for tp, o in self._offsets.items() if topic is None or tp[0] == topic}

    def claim_partitions(
        self, owner: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        with self._lock:
            self._check_writable()
            claimed = {}
            for tp in partitions:
                epoch = self._owners.get(tp, ("", 0))[1] + 1
                self._owners[tp] = (owner, epoch)
                claimed[tp] = epoch
            return claimed

    def epoch(self, tp: TopicPartition) -> tuple[str, int]:
        return self._owners.get(tp, ("", 0))

    # -- events --------------------------------------------------------------------------

    def get_event(self, event_id: str) -> Event | None:
        with self._lock:
            self._check_open()
            return self._events.get(event_id)

    def count_events(self) -> int:
        with self._lock:
            self._check_open()
            return len(self._events)

    def iter_events(self) -> Iterator[Event]:
        with self._lock:
            self._check_open()
            snapshot = list(self._events.values())
        return iter(snapshot)

    def has_event(self, event_id: str) -> bool:
        return event_id in self._events

    def has_action(self, action_id: str) -> bool:
        return action_id in self._outbox

    # -- outbox --------------------------------------------------------------------------

    def due_actions(self, now: float, limit: int) -> list[OutboxEntry]:
        with self._lock:
            self._check_open()
            due = (
                e
                for e in self._outbox.values()
                if e.state is ActionState.PENDING and e.next_attempt_at <= now
            )
            return list(itertools.islice(due, max(limit, 0)))

    def count_actions(self, state: ActionState) -> int:
        with self._lock:
            self._check_open()
            return sum(1 for e in self._outbox.values() if e.state is state)

    def count_actions_by_rule(self) -> dict[str, int]:
        with self._lock:
            self._check_open()
            return dict(Counter(e.action.rule for e in self._outbox.values()))

    def _update(self, action_id: str, expect: ActionState, **changes: object) -> bool:
        """Apply ``changes`` to an action in state ``expect``; False if there is none."""
        entry = self._outbox.get(action_id)
        if entry is None or entry.state is not expect:
            return False
        self._outbox[action_id] = dataclasses.replace(entry, **changes)  # type: ignore[arg-type]
        return True

    def mark_done(self, action_ids: Sequence[str]) -> None:
        with self._lock:
            self._check_writable()
            for aid in action_ids:
                self._update(aid, ActionState.PENDING, state=ActionState.DONE)

    def mark_retry(self, action_id: str, next_attempt_at: float, error: str) -> None:
        with self._lock:
            self._check_writable()
            entry = self._outbox.get(action_id)
            if entry is not None:
                self._update(
                    action_id, ActionState.PENDING, attempts=entry.attempts + 1,
                    next_attempt_at=next_attempt_at, last_error=error,
                )  # fmt: skip

    def mark_dead(self, action_id: str, error: str) -> None:
        with self._lock:
            self._check_writable()
            entry = self._outbox.get(action_id)
            if entry is not None:
                self._update(
                    action_id, ActionState.PENDING, state=ActionState.DEAD,
                    attempts=entry.attempts + 1, last_error=error,
                )  # fmt: skip

    def list_actions(self, state: ActionState, limit: int = 1000) -> list[OutboxEntry]:
        with self._lock:
            self._check_open()
            matching = (e for e in self._outbox.values() if e.state is state)
            return list(itertools.islice(matching, max(limit, 0)))

    def replay_dead(self, action_ids: Sequence[str] | None = None) -> int:
        with self._lock:
            self._check_writable()
            ids = list(self._outbox) if action_ids is None else action_ids
            replay = {"state": ActionState.PENDING, "attempts": 0, "next_attempt_at": 0.0}
            return sum(self._update(aid, ActionState.DEAD, **replay) for aid in ids)

    def prune(self, before: float, limit: int = 10_000) -> int:
        with self._lock:
            self._check_writable()
            event_at, action_at = self._event_at, self._action_at
            old = [e for e in itertools.islice(self._events, limit) if event_at[e] < before]
            done = [
                aid
                for aid, entry in self._outbox.items()
                if entry.state is ActionState.DONE and action_at[aid] < before
            ][:limit]
            for key in old:
                del self._events[key], event_at[key]
            for key in done:
                del self._outbox[key], action_at[key]
            return len(old) + len(done)

    def list_dead_records(self, limit: int = 1000) -> list[DeadRecord]:
        with self._lock:
            self._check_open()
            return list(itertools.islice(self._dead.values(), max(limit, 0)))

    # -- durable steps -------------------------------------------------------------------

    def get_step(self, step_id: str) -> Event | None:
        with self._lock:
            self._check_open()
            return self._steps.get(step_id)

    def put_step(self, step_id: str, event: Event) -> Event:
        with self._lock:
            self._check_writable()
            return self._steps.setdefault(step_id, event)

    def get_rule_state(self, key: str) -> str | None:
        return self._rule_state.get(key)


class _MemoryBatch(BatchTransaction):
    """Staged writes of one batch; the store's lock is held while it is open."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.events: dict[str, Event] = {}
        self.rule_state: dict[str, str | None] = {}
        self.actions: dict[str, Action] = {}
        self.dead: list[DeadRecord] = []
        self.offsets: dict[TopicPartition, int] = {}
        self.closed = False
        self._failed: CheckpointError | None = None

    def _check(self) -> None:
        if self.closed:
            raise CheckpointError("this batch has ended; open a new one")

    def raise_if_failed(self) -> None:
        # A Fenced swallowed inside the block must still cancel the whole batch.
        if self._failed is not None:
            raise self._failed

    def insert_events(self, events: Sequence[Event]) -> list[Event]:
        self._check()
        new = [
            e
            for eid, e in unique_by_id(events).items()
            if eid not in self.events and not self._store.has_event(eid)
        ]
        self.events.update((e.event_id, e) for e in new)
        return new

    def get_rule_state(self, key: str) -> str | None:
        self._check()
        if key in self.rule_state:
            return self.rule_state[key]
        return self._store.get_rule_state(key)

    def put_rule_state(self, key: str, value: str | None) -> None:
        self._check()
        self.rule_state[key] = value

    def add_actions(self, actions: Sequence[Action]) -> None:
        self._check()
        for action in actions:
            aid = action.action_id
            if aid not in self.actions and not self._store.has_action(aid):
                self.actions[aid] = action

    def add_dead_records(self, records: Sequence[DeadRecord]) -> None:
        self._check()
        self.dead.extend(records)

    def set_next_offsets(
        self,
        offsets: Mapping[TopicPartition, int],
        epochs: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        self._check()
        for tp, epoch in (epochs or {}).items():
            owner, current = self._store.epoch(tp)
            if current != epoch:
                self._failed = Fenced(
                    f"{tp[0]}[{tp[1]}]: epoch {epoch} is stale; {owner or 'nobody'} "
                    f"owns it at epoch {current}",
                    (tp,),
                )
                raise self._failed
        for tp, offset in offsets.items():
            self.offsets[tp] = max(offset, self.offsets.get(tp, offset))
