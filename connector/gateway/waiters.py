"""Who waits for which HTTP event, and where a checkpointed one is found (docs/architecture.md).

Pure bookkeeping, no I/O:

* :class:`HttpIndex` wraps the rules of the pipeline that reads the gateway's topic
  (``run`` with an ``http:`` section). In the *same* store transaction that checkpoints an
  HTTP event it writes one rule-state row for it, keyed :func:`queue_row`: the queue
  prefix of its ``(workflow_id, event_key)`` (:func:`queue_prefix`) and its fixed-width
  partition and offset, the event id as value. A range read over the prefix lists the
  pair's events in arrival order (the record key is the event key, so a pair's events
  are on one partition, in offset order); queuing one more costs one small row whatever
  the queue's length, and consuming one deletes its row. Only new events are evaluated,
  so a resend (same id) is queued once.
* :class:`Waiters` counts the listeners waiting now per ``(workflow_id, event_key)``;
  strict mode accepts an event only for a pair that is waited for (or was, within
  ``ttl`` seconds: a listener between two long polls still counts).
* :class:`Leases` hands one event to one listener at a time: until
  ``event_checkpointed`` marks it consumed (a durable step, see :func:`consumed_step`)
  or the lease runs out, other listeners of the same pair do not get it.

Keys are always the pair, never the event key alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kec.action import Action
from kec.evaluation import Evaluation, Evaluator, Result, Timers, has_timers, reads_state
from kec.event import TP, Event

QUEUE_PREFIX = "http-gateway/queue/"
CONSUMED_PREFIX = "http-gateway/consumed/"
H_WORKFLOW_ID = "workflow-id"
H_EVENT_KEY = "event-key"

Pair = tuple[str, str]  # (workflow_id, event_key)


def queue_prefix(namespace: str, workflow_id: str, event_key: str) -> str:
    """The rule-state key prefix of a pair's queue rows.

    JSON, so no pair's prefix starts another's (``a/b``+``c`` differs from ``a``+``b/c``,
    and the closing ``]`` ends it); the namespace keeps two gateways sharing a store apart.
    """
    pair = json.dumps([namespace, workflow_id, event_key], separators=(",", ":"))
    return f"{QUEUE_PREFIX}{pair}/"


def queue_row(namespace: str, pair: Pair, partition: int, offset: int) -> str:
    """The rule-state key of one queued event: fixed width, so key order is offset order."""
    return f"{queue_prefix(namespace, *pair)}{partition:010d}.{offset:020d}"


def queue_row_of(event: Event) -> str | None:
    """The queue row of a checkpointed gateway event, else ``None``."""
    pair = pair_of(event)
    if pair is None or event.partition is None or event.offset is None:
        return None
    return queue_row(event.namespace, pair, event.partition, event.offset)


def consumed_step(event_id: str) -> str:
    """The durable-step id that marks an HTTP event consumed by a listener."""
    return CONSUMED_PREFIX + event_id


def pair_of(event: Event) -> Pair | None:
    """The ``(workflow_id, event_key)`` of an event the gateway produced, else ``None``."""
    headers = {name: value for name, value in event.headers}
    wf, key = headers.get(H_WORKFLOW_ID), headers.get(H_EVENT_KEY)
    if wf is None or key is None:
        return None
    try:
        return wf.decode(), key.decode()
    except UnicodeDecodeError:
        return None


class HttpIndex:
    """Evaluator: ``inner``'s rules for every event, and a queue row for each new
    gateway event of ``namespace``; ``indexed`` counts the rows written (for a wake-up)."""

    def __init__(self, inner: Evaluator, namespace: str) -> None:
        self._inner = inner
        self.namespace = namespace
        self.indexed = 0

    def state_keys(self, event: Event) -> Sequence[str]:
        # A queue row is written, never read: nothing to read (or lock) for it.
        return self._inner.state_keys(event)

    def reads_state(self) -> bool:
        return reads_state(self._inner)

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        inner = self._inner.evaluate(event, state)
        row = queue_row_of(event) if event.namespace == self.namespace else None
        if row is None:
            return inner
        self.indexed += 1
        actions: Sequence[Action] = inner.actions
        updates = {**inner.state_updates, row: event.event_id}
        return Result(actions, updates, dict(inner.state_expiry))

    # The due pass of time-driven rules is the inner rules' (kec.evaluation.Timers).

    def has_timers(self) -> bool:
        return has_timers(self._inner)

    def timer_keys(self, tp: TP) -> Sequence[str]:
        return self._inner.timer_keys(tp) if isinstance(self._inner, Timers) else ()

    def due_keys(self, tp: TP, state: Mapping[str, str | None], now: int) -> Sequence[str]:
        return self._inner.due_keys(tp, state, now) if isinstance(self._inner, Timers) else ()

    def due(
        self, tp: TP, now: int, watermark: int | None, state: Mapping[str, str | None]
    ) -> Evaluation:
        if not isinstance(self._inner, Timers):
            return Result((), {})
        return self._inner.due(tp, now, watermark, state)


@dataclass
class Waiters:
    """Listeners waiting now, per pair; ``recent`` remembers when the last one left."""

    ttl: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _active: dict[Pair, int] = field(default_factory=dict)
    _left: dict[Pair, float] = field(default_factory=dict)

    def enter(self, pair: Pair) -> None:
        self._active[pair] = self._active.get(pair, 0) + 1

    def leave(self, pair: Pair) -> None:
        left = self._active.get(pair, 0) - 1
        if left > 0:
            self._active[pair] = left
            return
        self._active.pop(pair, None)
        self._left[pair] = self.clock()
        self._expire()

    def is_waited(self, pair: Pair) -> bool:
        if pair in self._active:
            return True
        left = self._left.get(pair)
        return left is not None and self.clock() - left <= self.ttl

    def _expire(self) -> None:
        now = self.clock()
        for pair in [p for p, t in self._left.items() if now - t > self.ttl]:
            del self._left[pair]


@dataclass
class Leases:
    """Event ids handed to a listener and not yet consumed, with their expiry."""

    seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _until: dict[str, float] = field(default_factory=dict)

    def take(self, event_id: str) -> bool:
        now = self.clock()
        until = self._until.get(event_id)
        if until is not None and until > now:
            return False
        self._until[event_id] = now + self.seconds
        for eid in [e for e, t in self._until.items() if t <= now]:
            del self._until[eid]
        return True

    def held(self) -> frozenset[str]:
        """The event ids leased now."""
        now = self.clock()
        return frozenset(e for e, t in self._until.items() if t > now)

    def release(self, event_id: str) -> None:
        self._until.pop(event_id, None)
