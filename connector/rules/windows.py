"""Time-driven rules, pure: ``debounce``, ``throttle``, ``batch`` and ``absence``
(docs/architecture.md, "Time-driven rules"). No I/O and no clock: the time is given.

:class:`connector.rules.trigger.TriggerEngine` hands each event a time-driven rule matched
to :meth:`Timed.arrive` (with the rule-state rows :meth:`Timed.keys` named), and the
pipeline runs a *due pass* per partition, in the same store transaction as the batch that
moved the partition's event time, or in an idle tick's transaction when the idle rule
moved it (:meth:`Timed.timer_key`, :meth:`Timed.due_keys`, :meth:`Timed.due`)::

    index = tx.read_rule_state([t.timer_key(tp) for t in timed])
    more = t.due_keys(tp, index, now)           # absence: the pending rows due
    t.due(tp, now, watermark, state, out)       # actions, state updates

**Where the state lives.** ``debounce``, ``throttle`` and ``batch`` keep one row per rule
and partition (``["timed", rule, topic, partition]``) holding every open group of that
partition: only the partition's owner writes it, in transactions fenced by its epoch, so
a fired group is deleted in the transaction that queues its action, exactly once. A group
is therefore per partition: events of one group must share a partition to be one group
(the record key is the event key, so ``by: key`` always does). ``absence`` keeps one
pending row per rule and group (``["absence", rule, group]``: A, its deadline and its
partition), which a B on any partition reads and answers under the row's lock, and one
timer row per rule and A's partition (``["absence-timers", rule, topic, partition]``:
group -> deadline) that the owner of A's partition reads in its due pass.

**Time.** Partition-local groups fire when the partition's event time (the newest record
timestamp of the batch, or the present in an idle tick) reaches their deadline; an event
whose create time is at or past a group's deadline closes that group first. ``absence``
fires when the store's event-time watermark (the least event time of all partitions)
reaches A's deadline, since B may come on any partition.

**Payloads.** ``debounce``, ``throttle`` and ``absence`` carry one event as a plain rule
does (``event_id``, ``key``, ``value``...: templates read ``{{ value.x }}`` alike), with
``count``, ``first_time`` and ``last_time`` (debounce), ``suppressed`` (throttle) or
``deadline`` and ``then`` (absence) beside it; ``batch`` carries ``events`` (a list),
``count``, ``values_dropped`` and ``reason`` (``size`` or ``time``).

**Ids.** An action's id derives from the events it closes: a burst's first and last ids,
a batch's ids, A's id, the throttled event's id. A crash before the transaction commits
loses nothing (the state and the records are read again); after, the state is gone and
the action is in the batch record, so it is neither lost nor made twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from connector.rules.models import Rule
from connector.rules.paths import MISSING as _MISSING
from connector.rules.paths import compile_path, resolve
from connector.rules.timing import Absence, Batch, Debounce, Throttle
from kec import jsontext
from kec.action import Action
from kec.evaluation import event_payload, event_value
from kec.event import TP, Event

__all__ = ["Out", "Timed"]

_V: Final = 1
# What a row of the right version but the wrong shape raises (corrupt, or hand-edited).
_UNREADABLE: Final = (KeyError, TypeError, ValueError, AttributeError, IndexError)


@dataclass
class Out:
    """What evaluation produced: actions in order, state updates (``None`` deletes), and
    the event time (epoch seconds) after which an updated row may be pruned."""

    actions: list[Action] = field(default_factory=list)
    updates: dict[str, str | None] = field(default_factory=dict)
    expiry: dict[str, float] = field(default_factory=dict)

    def mark(self) -> tuple[int, dict[str, str | None], dict[str, float]]:
        return len(self.actions), dict(self.updates), dict(self.expiry)

    def rewind(self, mark: tuple[int, dict[str, str | None], dict[str, float]]) -> None:
        """Back to :meth:`mark` (in place: the lists and dicts may be the caller's)."""
        del self.actions[mark[0] :]
        self.updates.clear()
        self.updates.update(mark[1])
        self.expiry.clear()
        self.expiry.update(mark[2])


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _load(raw: str | None) -> dict[str, Any]:
    """A stored row; anything unreadable (corrupt, another version) counts as none."""
    if raw is None:
        return {}
    try:
        data = jsontext.loads(raw)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("v") != _V:
        return {}
    return data


def _group_of(by: str | None) -> Callable[[Event], object]:
    """The function that gives an event's group value (``_MISSING``: it does not count)."""
    if by is None:
        return lambda e: None
    if by == "key":
        return lambda e: e.key
    if by == "context":
        return lambda e: _MISSING if e.context is None else e.context
    path = compile_path(by[6:])

    def group(event: Event) -> object:
        current: object = event.document()
        if current is None:
            return _MISSING
        return resolve(current, path)

    return group


def _tp(event: Event) -> TP:
    return (event.topic or "", event.partition if event.partition is not None else -1)


@dataclass(frozen=True, eq=False)
class Timed:
    """One time-driven rule, compiled; ``scoped``: a task rule (its groups and actions
    carry the event's context)."""

    rule: Rule
    scoped: bool

    def __post_init__(self) -> None:
        timing = self.rule.timing
        assert timing is not None
        object.__setattr__(self, "_group", _group_of(timing.by))

    @property
    def timing(self) -> Debounce | Throttle | Batch | Absence:
        timing = self.rule.timing
        assert timing is not None
        return timing

    # -- keys --------------------------------------------------------------------------

    def _row_key(self, tp: TP) -> str:
        return _dump_key("timed", self.rule.name, tp[0], tp[1])

    def _pending_key(self, group: str) -> str:
        return _dump_key("absence", self.rule.name, group)

    def timer_key(self, tp: TP) -> str | None:
        """The row the due pass of partition ``tp`` reads first (None: the rule has no
        timers: ``throttle``)."""
        if isinstance(self.timing, Throttle):
            return None
        if isinstance(self.timing, Absence):
            return _dump_key("absence-timers", self.rule.name, tp[0], tp[1])
        return self._row_key(tp)

    def group(self, event: Event) -> str | None:
        """The event's group as text (None: the event has no such field)."""
        value = self._group(event)  # type: ignore[attr-defined]
        if value is _MISSING:
            return None
        return json.dumps([event.context if self.scoped else None, value], sort_keys=True)

    def keys(self, event: Event, slots: Sequence[int]) -> list[str]:
        """The rows :meth:`arrive` reads for ``event`` (the key indices it matched)."""
        group = self.group(event)
        if group is None:
            return []
        if isinstance(self.timing, Absence):
            keys = [self._pending_key(group)]
            if 0 in slots:
                keys.append(_dump_key("absence-timers", self.rule.name, *_tp(event)))
            return keys
        return [self._row_key(_tp(event))]

    # -- events ------------------------------------------------------------------------

    def arrive(
        self,
        event: Event,
        slots: Sequence[int],
        passes: bool,
        state: Mapping[str, str | None],
        out: Out,
    ) -> None:
        """Take ``event`` in; ``passes``: whether the rule's value and context conditions
        hold for it (for ``absence`` they are A's); ``state`` holds (at least)
        :meth:`keys`, as earlier events of the batch left them. A row that cannot be read
        counts as none (and is replaced), as an ``all_of`` set's is."""
        mark = out.mark()
        try:
            self._arrive(event, slots, passes, state, out)
        except _UNREADABLE:
            out.rewind(mark)
            for key in self.keys(event, slots):
                out.updates[key] = None
            self._arrive(event, slots, passes, state, out)

    def _arrive(
        self,
        event: Event,
        slots: Sequence[int],
        passes: bool,
        state: Mapping[str, str | None],
        out: Out,
    ) -> None:
        if self.scoped and event.context is None:
            return
        group = self.group(event)
        if group is None:
            return
        timing = self.timing
        if isinstance(timing, Absence):
            if 0 in slots and passes:
                self._absence_a(timing, event, group, state, out)
            elif 1 in slots:
                self._absence_b(timing, event, group, state, out)
            return
        if not passes:
            return
        key = self._row_key(_tp(event))
        row = _load(_current(key, state, out))
        groups = self._groups(row)
        if isinstance(timing, Debounce):
            self._debounce(timing, event, group, groups, out)
        elif isinstance(timing, Throttle):
            self._throttle(timing, event, group, groups, out)
        else:
            self._batch(timing, event, group, groups, out)
        out.updates[key] = _dump({"v": _V, "groups": groups}) if groups else None

    def _groups(self, row: dict[str, Any]) -> dict[str, Any]:
        """A partition row's groups, those of the wrong shape left out (they count as none)."""
        groups = row.get("groups")
        if not isinstance(groups, dict):
            return {}
        fields = _GROUP_FIELDS[type(self.timing)]
        return {
            g: held
            for g, held in groups.items()
            if isinstance(held, dict) and all(isinstance(held.get(f), t) for f, t in fields)
        }

    def _debounce(
        self, d: Debounce, event: Event, group: str, groups: dict[str, Any], out: Out
    ) -> None:
        now = event.create_time
        quiet = int(d.quiet * 1000)
        burst = groups.get(group)
        if burst is not None and now >= burst["t1"] + quiet:
            self._fire_debounce(d, burst, out)  # the burst was over before this event
            burst = None
        entry = event_payload(event)
        if burst is None:
            groups[group] = {"first": entry, "last": entry, "n": 1, "t0": now, "t1": now}
            return
        burst["n"] += 1
        if now >= burst["last"]["create_time"]:
            burst["last"] = entry
        if now < burst["first"]["create_time"]:
            burst["first"] = entry
        burst["t0"] = min(burst["t0"], now)
        burst["t1"] = max(burst["t1"], now)

    def _fire_debounce(self, d: Debounce, burst: dict[str, Any], out: Out) -> None:
        first, last = burst["first"], burst["last"]
        ids = (first["event_id"],) if first is last or first == last else (
            first["event_id"], last["event_id"])  # fmt: skip
        carried = last if d.carry == "last" else first
        payload = {
            **carried,
            "count": burst["n"],
            "first_time": burst["t0"],
            "last_time": burst["t1"],
        }
        out.actions.append(self._action(carried, ids, payload))

    def _throttle(
        self, t: Throttle, event: Event, group: str, groups: dict[str, Any], out: Out
    ) -> None:
        now = event.create_time
        for g in [g for g, held in groups.items() if held["n"] == 0 and held["until"] <= now]:
            del groups[g]  # a period over with nothing counted is as good as none
        held = groups.get(group)
        if held is not None and now < held["until"]:
            held["n"] += 1
            return
        suppressed = held["n"] if held is not None else 0
        entry = event_payload(event)
        out.actions.append(
            self._action(entry, (event.event_id,), {**entry, "suppressed": suppressed})
        )
        groups[group] = {"until": now + int(t.period * 1000), "n": 0}

    def _batch(self, b: Batch, event: Event, group: str, groups: dict[str, Any], out: Out) -> None:
        now = event.create_time
        held = groups.get(group)
        if held is not None and now >= held["t0"] + int(b.within * 1000):
            self._fire_batch(held, "time", out)  # its time was up before this event
            held = None
        if held is None:
            held = groups[group] = {"events": [], "t0": now, "chars": 0, "dropped": 0}
        if any(e["event_id"] == event.event_id for e in held["events"]):
            return  # the same event again (a replay of its record): taken once
        entry: dict[str, Any] = {
            "event_id": event.event_id,
            "key": event.key,
            "create_time": now,
            "context": event.context,
        }
        value = event_value(event)
        size = len(json.dumps(value))
        if held["chars"] + size <= b.max_bytes:
            entry["value"] = value
            held["chars"] += size
        else:
            held["dropped"] += 1
        held["events"].append(entry)
        held["t0"] = min(held["t0"], now)
        if len(held["events"]) >= b.size:
            self._fire_batch(held, "size", out)
            del groups[group]

    def _fire_batch(self, held: dict[str, Any], reason: str, out: Out) -> None:
        events = held["events"]
        ids = tuple(e["event_id"] for e in events)
        payload = {
            "events": events,
            "count": len(events),
            "values_dropped": held["dropped"],
            "reason": reason,
        }
        out.actions.append(self._action(events[-1], ids, payload))

    def _absence_a(
        self, a: Absence, event: Event, group: str, state: Mapping[str, str | None], out: Out
    ) -> None:
        key = self._pending_key(group)
        row = _load(_current(key, state, out))
        now = event.create_time
        within = int(a.within * 1000)
        b = row.get("b")
        if isinstance(b, int) and now <= b <= now + within:
            return  # its B was read first
        pending: list[dict[str, Any]] = row.get("a", [])
        if any(p["e"]["event_id"] == event.event_id for p in pending):
            return  # the same event again (a replay of its record): taken once
        tp = _tp(event)
        due = now + within
        pending.append({"e": event_payload(event), "due": due, "tp": list(tp)})
        self._write_pending(a, key, {**row, "a": pending}, out)
        timers_key = _dump_key("absence-timers", self.rule.name, *tp)
        timers = _load(_current(timers_key, state, out)).get("due", {})
        timers[group] = min(due, timers.get(group, due))
        out.updates[timers_key] = _dump({"v": _V, "due": timers})

    def _absence_b(
        self, a: Absence, event: Event, group: str, state: Mapping[str, str | None], out: Out
    ) -> None:
        key = self._pending_key(group)
        row = _load(_current(key, state, out))
        now = event.create_time
        b = max(now, row["b"]) if isinstance(row.get("b"), int) else now
        # Every pending A this B follows in time is answered; the others still wait.
        pending = [p for p in row.get("a", []) if not p["e"]["create_time"] <= now <= p["due"]]
        self._write_pending(a, key, {"a": pending, "b": b}, out)

    @staticmethod
    def _write_pending(a: Absence, key: str, row: dict[str, Any], out: Out) -> None:
        """A group's row: pending As (no expiry: they fire), else the latest B alone, kept
        for an A read later and pruned once event time has passed it."""
        pending = row.get("a") or []
        b = row.get("b")
        if pending:
            data: dict[str, Any] = {"v": _V, "a": pending}
            if isinstance(b, int):
                data["b"] = b
            out.updates[key] = _dump(data)
            out.expiry.pop(key, None)
        elif isinstance(b, int):
            out.updates[key] = _dump({"v": _V, "b": b})
            out.expiry[key] = b / 1000 + a.within
        else:
            out.updates[key] = None
            out.expiry.pop(key, None)

    # -- time --------------------------------------------------------------------------

    def due_keys(self, tp: TP, state: Mapping[str, str | None], now: int) -> list[str]:
        """The rows the due pass also reads, given the timer row in ``state``: the pending
        rows of ``absence`` groups due by ``now`` (the partition's event time)."""
        if not isinstance(self.timing, Absence):
            return []
        key = self.timer_key(tp)
        assert key is not None
        timers = _load(state.get(key)).get("due", {})
        if not isinstance(timers, dict):
            return []  # unreadable: the due pass deletes it
        return [
            self._pending_key(g) for g, due in timers.items() if isinstance(due, int) and due <= now
        ]

    def due(
        self, tp: TP, now: int, watermark: int | None, state: Mapping[str, str | None], out: Out
    ) -> None:
        """Fire what is due on partition ``tp`` at event time ``now`` (ms); ``absence`` at
        the store's ``watermark`` (ms; None: not read, nothing of it is due). A timer row
        that cannot be read is deleted."""
        mark = out.mark()
        try:
            self._due(tp, now, watermark, state, out)
        except _UNREADABLE:
            out.rewind(mark)
            key = self.timer_key(tp)
            assert key is not None
            out.updates[key] = None

    def _due(
        self, tp: TP, now: int, watermark: int | None, state: Mapping[str, str | None], out: Out
    ) -> None:
        timing = self.timing
        key = self.timer_key(tp)
        if key is None:
            return
        raw = _current(key, state, out)
        if raw is None:
            return
        if isinstance(timing, Absence):
            if watermark is not None:
                self._absence_due(tp, key, raw, watermark, state, out)
            return
        row = _load(raw)
        groups = self._groups(row)
        fired = False
        for group, held in sorted(groups.items()):
            if isinstance(timing, Debounce) and now >= held["t1"] + int(timing.quiet * 1000):
                self._fire_debounce(timing, held, out)
            elif isinstance(timing, Batch) and now >= held["t0"] + int(timing.within * 1000):
                self._fire_batch(held, "time", out)
            else:
                continue
            del groups[group]
            fired = True
        if fired:
            out.updates[key] = _dump({"v": _V, "groups": groups}) if groups else None

    def _absence_due(
        self,
        tp: TP,
        key: str,
        raw: str,
        watermark: int,
        state: Mapping[str, str | None],
        out: Out,
    ) -> None:
        timing = self.timing
        assert isinstance(timing, Absence)
        timers: dict[str, int] = _load(raw).get("due", {})
        changed = False
        for group, due in sorted(timers.items()):
            if due > watermark:
                continue
            pending_key = self._pending_key(group)
            row = _load(_current(pending_key, state, out))
            left: list[dict[str, Any]] = []
            for p in sorted(row.get("a", []), key=lambda p: (p["due"], p["e"]["event_id"])):
                if p["tp"] != list(tp) or p["due"] > watermark:
                    left.append(p)  # another partition's, or not due yet
                    continue
                carried = p["e"]
                payload = {**carried, "deadline": p["due"], "then": timing.then}
                out.actions.append(self._action(carried, (carried["event_id"],), payload))
            if len(left) != len(row.get("a", [])):
                self._write_pending(timing, pending_key, {**row, "a": left}, out)
            mine = [p["due"] for p in left if p["tp"] == list(tp)]
            if mine:
                timers[group] = min(mine)
            else:
                del timers[group]
            changed = True
        if changed:
            out.updates[key] = _dump({"v": _V, "due": timers}) if timers else None

    # -- actions -----------------------------------------------------------------------

    def _action(
        self, carried: Mapping[str, Any], ids: tuple[str, ...], payload: dict[str, Any]
    ) -> Action:
        rule = self.rule
        return Action(
            rule=rule.name,
            kind=rule.action,
            target=rule.target,
            namespace=carried.get("namespace", rule.namespace),
            event_ids=ids,
            event_key=carried["key"],
            workflow=rule.workflow,
            task=rule.task,
            context=carried.get("context") if self.scoped else None,
            payload=payload,
        )


# The fields a group of each feature must have, with their types (see _groups).
_GROUP_FIELDS: Final[dict[type, tuple[tuple[str, type | tuple[type, ...]], ...]]] = {
    Debounce: (("first", dict), ("last", dict), ("n", int), ("t0", int), ("t1", int)),
    Throttle: (("until", int), ("n", int)),
    Batch: (("events", list), ("t0", int), ("chars", int), ("dropped", int)),
}


def _dump_key(*parts: object) -> str:
    return json.dumps(parts, separators=(",", ":"))


def _current(key: str, state: Mapping[str, str | None], out: Out) -> str | None:
    """A row as this evaluation left it, else as given."""
    if key in out.updates:
        return out.updates[key]
    return state.get(key)
