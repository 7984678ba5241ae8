"""Who waits for which HTTP event, and where a checkpointed one is found (docs/architecture.md).

Pure bookkeeping, no I/O:

* :class:`HttpIndex` is the gateway pipeline's evaluator. In the *same* store
  transaction that checkpoints an HTTP event it appends the event id to the queue of its
  ``(workflow_id, event_key)`` — kept as multi-event rule state under
  :func:`queue_key` — so "which events wait for this listener" is durable exactly when
  the events are. Only new events are evaluated, so a resend (same id) is queued once.
  Rules of the connector can ride along (``inner``) when the gateway's pipeline is the
  one that checkpoints the HTTP topic.
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
from kec.evaluation import Evaluation, Evaluator, Result
from kec.event import Event

QUEUE_PREFIX = "http-gateway/queue/"
CONSUMED_PREFIX = "http-gateway/consumed/"
H_WORKFLOW_ID = "workflow-id"
H_EVENT_KEY = "event-key"

Pair = tuple[str, str]  # (workflow_id, event_key)


def queue_key(workflow_id: str, event_key: str) -> str:
    """The rule-state key of a pair's queue (JSON: ``a/b``+``c`` differs from ``a``+``b/c``)."""
    return QUEUE_PREFIX + json.dumps([workflow_id, event_key], separators=(",", ":"))


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


def decode_queue(raw: str | None) -> list[str]:
    if not raw:
        return []
    ids = json.loads(raw)
    return [str(i) for i in ids] if isinstance(ids, list) else []


class HttpIndex:
    """Evaluator: queue each new HTTP event under its pair; delegate rules to ``inner``."""

    def __init__(self, inner: Evaluator | None = None) -> None:
        self._inner = inner

    def state_keys(self, event: Event) -> Sequence[str]:
        keys = list(self._inner.state_keys(event)) if self._inner is not None else []
        pair = pair_of(event)
        if pair is not None:
            keys.append(queue_key(*pair))
        return keys

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        actions: Sequence[Action] = ()
        updates: dict[str, str | None] = {}
        expires: dict[str, float] = {}
        if self._inner is not None:
            inner = self._inner.evaluate(event, state)
            actions, updates = inner.actions, dict(inner.state_updates)
            expires = dict(inner.state_expiry)
        pair = pair_of(event)
        if pair is not None:
            key = queue_key(*pair)
            ids = decode_queue(state.get(key))
            if event.event_id not in ids:
                ids.append(event.event_id)
            updates[key] = json.dumps(ids, separators=(",", ":"))
        return Result(actions, updates, expires)


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

    def release(self, event_id: str) -> None:
        self._until.pop(event_id, None)
