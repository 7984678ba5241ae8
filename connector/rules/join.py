"""Sets per correlation value and sequences: the pure part of correlation rules.

:class:`~connector.rules.trigger.TriggerEngine` hands an event here when its rule has
``correlate`` or ``sequence`` (:mod:`connector.rules.correlation` says what they mean).
No I/O: a set is one rule-state row of JSON text, read and locked in the batch's store
transaction and written back in it, like an ``all_of`` set (docs/architecture.md,
"Rules", its part on correlation).

* **The row.** ``["join", rule, context, value]`` for a correlated ``all_of``,
  ``["sequence", rule, context, value]`` for a sequence (``context`` only for task
  rules, ``value`` ``null`` for a sequence without ``correlate``). One row per
  correlation value: two owners of the partitions that carry order 42's payment and
  shipment serialise on that row's lock, and orders 42 and 43 never wait for each other.
* **A correlated all_of** keeps one event per key (``latest`` or ``first``, as ``all_of``),
  drops members more than ``window`` seconds older than its newest one, and fires once
  every key has an event; the row is then deleted.
* **A sequence** keeps, per step, the events that may still start or continue a chain,
  in order of create time (at most :data:`MAX_PENDING` per step, the earliest). It fires
  for the earliest chain in event time: the earliest first-step event that has one, then
  at each step the earliest event not before the previous one (a tie in create time
  counts as in order), the last within ``window`` of the first. An event read late (its
  partition lagged) takes its place by create time, so the order is the order in which
  the events happened, not the order they were read. The chain's events are used up;
  the others wait. No chain exists before an event arrives (each arrival fires the chain
  it completes), so one event fires at most once.
* **TTL** (``correlate.ttl``): a set lives at most ``ttl`` seconds of event time after
  its first event. A newer event past that starts the set over without the old members;
  an event older than the set's newest member by more than ``ttl`` is not taken.
* **Duplicates**: an event whose id the set already holds changes nothing (the pipeline
  already drops events it has checkpointed; this keeps the evaluator idempotent too).
* **Expiry**: each written row names the event time after which nothing can complete it
  (the oldest member plus ``window``, the first event plus ``ttl``, whichever is
  earlier); the store deletes it once every partition's event time passed that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from connector.rules.correlation import Correlate
from connector.rules.models import Rule
from connector.rules.paths import compile_path, resolve
from kec import jsontext

__all__ = ["MAX_PENDING", "Arrival", "Join", "correlation_text"]

_VERSION: Final = 1
MAX_PENDING: Final = 64
"""Events a sequence keeps per step: the earliest by create time."""

_Entry = dict[str, Any]


def correlation_text(value: object) -> str | None:
    """A JSON value as a correlation value, or ``None`` when it cannot be one."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return None


@dataclass(frozen=True, slots=True)
class Arrival:
    """What one event did to its set: whether the row changes, its new text (``None``
    deletes it), the events of what fired (in key order) and the row's expiry (event
    time, epoch seconds)."""

    changed: bool
    update: str | None
    fired: dict[str, _Entry] | None
    expires: float | None


_UNCHANGED_EMPTY = Arrival(False, None, None, None)


class Join:
    """One rule's correlation: its value from an event, its rows, its sets."""

    __slots__ = ("_correlate", "_latest", "_path", "_prefix", "_ttl_ms", "_window_ms", "keys")

    def __init__(self, rule: Rule) -> None:
        self._correlate: Correlate | None = rule.correlate
        self._path = (
            compile_path(rule.correlate.json_)
            if rule.correlate is not None and rule.correlate.json_ is not None
            else None
        )
        ttl = rule.correlate.ttl if rule.correlate is not None else None
        self._ttl_ms = ttl * 1000 if ttl is not None else None
        if rule.sequence is not None:
            self.keys: tuple[str, ...] = rule.sequence.keys
            self._window_ms: float | None = rule.sequence.window * 1000
            self._latest = True
            kind = "sequence"
        else:
            assert rule.all_of is not None  # the rule's validator: correlate needs one
            self.keys = rule.all_of.keys
            self._window_ms = rule.all_of.window * 1000 if rule.all_of.window else None
            self._latest = rule.all_of.policy == "latest"
            kind = "join"
        self._prefix = json.dumps([kind, rule.name], separators=(",", ":"))[:-1] + ","

    @property
    def is_sequence(self) -> bool:
        return self._prefix.startswith('["sequence"')

    @property
    def correlated(self) -> bool:
        """Whether the rule has ``correlate`` (else one set per rule, or rule and context)."""
        return self._correlate is not None

    @property
    def needs_document(self) -> bool:
        """Whether :meth:`value` parses the event's value (a ``json`` source)."""
        return self._path is not None

    def value(
        self, context: str | None, headers: tuple[tuple[str, bytes], ...], doc: Callable[[], object]
    ) -> str | None:
        """The event's correlation value; ``None`` when the event carries none (it does not
        count for a :attr:`correlated` rule) or the rule has no ``correlate``."""
        correlate = self._correlate
        if correlate is None:
            return None
        if self._path is not None:
            text = correlation_text(resolve(doc(), self._path))
        elif correlate.header is not None:
            text = None
            for name, raw in headers:
                if name == correlate.header:
                    try:
                        text = raw.decode()
                    except UnicodeDecodeError:
                        text = None
                    break
        else:
            text = context
        return text

    def state_key(self, context: str | None, value: str | None) -> str:
        """The row of the set of ``value`` (``context`` only for task rules)."""
        return self._prefix + json.dumps([context, value], separators=(",", ":"))[1:]

    # -- sets ------------------------------------------------------------------------------

    def arrive(self, raw: str | None, entry: _Entry, slots: tuple[int, ...]) -> Arrival:
        """Add the event ``entry`` (an action payload's event, with ``event_id`` and
        ``create_time``) that matched the keys at ``slots`` to the set stored as ``raw``."""
        steps, opened, clean = self._load(raw)
        event_id = entry["event_id"]
        if any(e["event_id"] == event_id for step in steps for e in step):
            expires = self._expiry(steps, opened) if clean else None
            if clean:
                return Arrival(False, raw, None, expires)
            return self._store(steps, opened, None)
        changed = not clean
        now: int = entry["create_time"]
        members = [e["create_time"] for step in steps for e in step]
        if not members:
            opened = None
        ttl = self._ttl_ms
        take = True
        if ttl is not None and opened is not None:
            if now - opened > ttl:  # the set outlived its TTL: start over
                steps, opened, members, changed = [[] for _ in self.keys], None, [], True
            elif max(members, default=now) - now > ttl:
                take = False
        if self._window_ms is not None and members:
            window = self._window_ms
            newest = max(now, *members)
            take = take and newest - now <= window
            kept = [[e for e in step if newest - e["create_time"] <= window] for step in steps]
            if sum(map(len, kept)) != len(members):
                steps, changed = kept, True
        if take:
            if self.is_sequence:
                taken = self._take_sequence(steps, entry, slots)
            else:
                taken = self._take_all_of(steps, entry, slots)
            if taken:
                changed = True
                opened = now if opened is None else min(opened, now)
        if not any(steps):
            opened = None
        fired = self._fire(steps) if take else None
        if fired is not None and not any(steps):
            return Arrival(raw is not None, None, fired, None)
        if not changed and fired is None:
            return Arrival(False, raw, None, self._expiry(steps, opened))
        return self._store(steps, opened, fired)

    def _take_all_of(
        self, steps: list[list[_Entry]], entry: _Entry, slots: tuple[int, ...]
    ) -> bool:
        now = entry["create_time"]
        taken = False
        for i in slots:
            held = steps[i][0] if steps[i] else None
            if (
                held is None
                or (self._latest and now >= held["create_time"])
                or (not self._latest and now < held["create_time"])
            ):
                steps[i] = [entry]
                taken = True
        return taken

    @staticmethod
    def _take_sequence(steps: list[list[_Entry]], entry: _Entry, slots: tuple[int, ...]) -> bool:
        now = entry["create_time"]
        taken = False
        for i in slots:
            step = steps[i]
            # After events of the same create time: arrival order breaks ties.
            at = next((n for n, e in enumerate(step) if e["create_time"] > now), len(step))
            if at >= MAX_PENDING:
                continue
            step.insert(at, entry)
            del step[MAX_PENDING:]
            taken = True
        return taken

    def _fire(self, steps: list[list[_Entry]]) -> dict[str, _Entry] | None:
        """The complete set or earliest chain, removed from ``steps``; else ``None``."""
        if not all(steps):
            return None
        if not self.is_sequence:
            fired = {key: step[0] for key, step in zip(self.keys, steps, strict=True)}
            for step in steps:
                step.clear()
            return fired
        window = self._window_ms
        for first in steps[0]:
            chain = [first]
            used = {first["event_id"]}
            for step in steps[1:]:
                after = chain[-1]["create_time"]
                nxt = next(
                    (
                        e
                        for e in step
                        if e["create_time"] >= after
                        and e["event_id"] not in used
                        and (window is None or e["create_time"] - first["create_time"] <= window)
                    ),
                    None,
                )
                if nxt is None:
                    break
                chain.append(nxt)
                used.add(nxt["event_id"])
            if len(chain) == len(steps):
                for step in steps:
                    step[:] = [e for e in step if e["event_id"] not in used]
                return dict(zip(self.keys, chain, strict=True))
        return None

    def _expiry(self, steps: list[list[_Entry]], opened: int | None) -> float | None:
        times = [e["create_time"] for step in steps for e in step]
        if not times:
            return None
        bounds = []
        if self._window_ms is not None:
            bounds.append(min(times) + self._window_ms)
        if self._ttl_ms is not None and opened is not None:
            bounds.append(opened + self._ttl_ms)
        return min(bounds) / 1000 if bounds else None

    def _store(
        self, steps: list[list[_Entry]], opened: int | None, fired: dict[str, _Entry] | None
    ) -> Arrival:
        if not any(steps):
            return Arrival(True, None, fired, None)
        body = {"v": _VERSION, "opened": opened, "steps": steps}
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        return Arrival(True, text, fired, self._expiry(steps, opened))

    def _load(self, raw: str | None) -> tuple[list[list[_Entry]], int | None, bool]:
        """The stored steps, the set's first event time, and whether it was clean (else
        it must be rewritten); an unreadable row counts as an empty set."""
        empty: list[list[_Entry]] = [[] for _ in self.keys]
        if raw is None:
            return empty, None, True
        try:
            data = jsontext.loads(raw)
            steps = data["steps"] if data.get("v") == _VERSION else None
            opened = data.get("opened")
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
            return empty, None, False
        if (
            not isinstance(steps, list)
            or len(steps) != len(self.keys)
            or not (opened is None or isinstance(opened, int))
        ):
            return empty, None, False
        loaded = [
            [
                e
                for e in step
                if isinstance(e, dict)
                and isinstance(e.get("event_id"), str)
                and isinstance(e.get("create_time"), int)
            ]
            if isinstance(step, list)
            else []
            for step in steps
        ]
        clean = all(
            isinstance(step, list) and len(step) == len(kept)
            for step, kept in zip(steps, loaded, strict=True)
        )
        return loaded, opened, clean
