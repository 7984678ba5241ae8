"""Pure trigger evaluation: ``(rules, state, event) -> (actions, state updates)``.

No I/O here. The pipeline calls the engine inside its checkpoint transaction, once per new
event, in order, and applies the updates to what later events of the batch see::

    engine = TriggerEngine(rules)                  # compiles once
    keys = engine.state_keys(event)                # the rule state this event needs
    result = engine.evaluate(event, tx.read_rule_state(keys))
    result.actions                                 # ids: hash(rule name, event ids)
    result.state_updates                           # to write back; None deletes the key
    result.state_expiry                            # of partial all_of sets with a window

Semantics (AIFlow's; docs/architecture.md, "Rules"):

* An event reaches only the rules of its own namespace.
* A task rule (``START``/``STOP``/``RESTART``) acts on the event's workflow execution: it
  ignores events without a ``context``, and its action carries the event's ``context``.
* Workflow rules (``start``/``stop``) and ``notify`` rules see every event of their
  namespace, whatever its context; their action's ``context`` is ``None`` (the payload
  still says which execution sent the event).
* ``all_of`` keeps its partial set as JSON text in the rule state: one set per
  (rule, context) for task rules, one per rule for the others (they are not scoped to an
  execution). The set fires once when every key has an event, then starts empty again.
  ``latest`` keeps the event with the greatest ``create_time`` per key (a tie goes to the
  later arrival), ``first`` the least (a tie goes to the earlier one). With ``window``, an
  event more than ``window`` seconds older (by ``create_time``, never the wall clock) than
  the newest event of the set is dropped, or not taken in when it arrives that late.
* Value and ``context`` conditions are checked per event; an event that fails them
  does not count. Value conditions are bounded whatever the value
  (:class:`MatchLimits`): a value longer than ``max_value_length`` fails every value
  condition; JSON nested deeper than ``max_json_depth`` is not JSON (it fails every JSON
  predicate); a regex runs in time linear in the value (:mod:`connector.rules.linear_regex`).
* Actions come out in rule declaration order; their ids are deterministic.

State that cannot be read (corrupt, or from an older rule with other keys) is treated as
empty, or trimmed to the rule's current keys, and rewritten: a bad row must not stop the
pipeline (docs/architecture.md, "Bad input").
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any, Final

from connector.common.json_depth import json_too_deep
from connector.rules.join import Join
from connector.rules.limits import (
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_VALUE_LENGTH,
    MAX_JSON_DEPTH,
    MatchLimits,
)
from connector.rules.linear_regex import LinearRegex
from connector.rules.models import JsonPredicate, Rule, ValueMatch, check_unique_names, is_glob
from connector.rules.paths import MISSING as _MISSING
from connector.rules.paths import compile_path, resolve
from connector.rules.windows import Out, Timed
from kec import jsontext
from kec.action import Action, rule_action
from kec.errors import ConfigError
from kec.evaluation import Evaluation, Result, actions_only, event_payload
from kec.event import TP, Event

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_VALUE_LENGTH",
    "MAX_JSON_DEPTH",
    "MatchLimits",
    "TriggerEngine",
    "state_key",
]

_STATE_VERSION: Final = 1


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


_UNPARSED: Final = _Sentinel("<unparsed>")
_NOT_JSON: Final = _Sentinel("<not json>")


def state_key(rule: str, context: str | None) -> str:
    """The rule-state key of an ``all_of`` set (JSON, so any name and context is safe)."""
    return json.dumps(["all_of", rule, context], separators=(",", ":"))


# -- the event as the conditions see it ---------------------------------------------------


class _Subject:
    """An event's text and parsed JSON, computed at most once however many rules ask."""

    __slots__ = ("_doc", "_max_depth", "_text", "event")

    def __init__(self, event: Event, max_depth: int) -> None:
        self.event = event
        self._max_depth = max_depth
        self._text: str | None = None
        self._doc: object = _UNPARSED

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.event.text
        return self._text

    @property
    def doc(self) -> object:
        if self._doc is _UNPARSED:
            if json_too_deep(self.text, self._max_depth):
                self._doc = _NOT_JSON
                return self._doc
            try:
                self._doc = jsontext.loads(self.event.value)
            # RecursionError too: the depth check makes it unreachable, but it must never
            # escape evaluation, whatever the caller's own stack depth.
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                self._doc = _NOT_JSON
        return self._doc


_Check = Callable[[_Subject], bool]


def _json_equal(a: object, b: object) -> bool:
    """JSON equality: ``true`` is not ``1`` (as it is in Python), ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compile_predicate(pred: JsonPredicate) -> _Check:
    path = compile_path(pred.path)
    tests: list[Callable[[object], bool]] = []
    if pred.exists is not None:
        wanted = pred.exists
        tests.append(lambda v: (v is not _MISSING) is wanted)
    if pred.has_equals:
        expected = pred.equals
        tests.append(lambda v: v is not _MISSING and _json_equal(v, expected))
    if pred.in_ is not None:
        options = pred.in_
        if all(isinstance(o, str) for o in options):
            strings = frozenset(options)  # the common case: a set lookup
            tests.append(lambda v: isinstance(v, str) and v in strings)
        else:
            tests.append(lambda v: v is not _MISSING and any(_json_equal(v, o) for o in options))
    for bound, compare in (
        (pred.gt, operator.gt),
        (pred.ge, operator.ge),
        (pred.lt, operator.lt),
        (pred.le, operator.le),
    ):
        if bound is not None:
            tests.append(_bound_test(compare, bound))

    def check(subject: _Subject) -> bool:
        doc = subject.doc
        if doc is _NOT_JSON:
            return False
        value = resolve(doc, path)
        return all(test(value) for test in tests)

    return check


def _bound_test(compare: Callable[[Any, Any], bool], bound: float) -> Callable[[object], bool]:
    return lambda v: _is_number(v) and compare(v, bound)


def _compile_value(match: ValueMatch | None) -> _Check | None:
    if match is None:
        return None
    checks: list[_Check] = []
    if match.equals is not None:
        equals = match.equals
        checks.append(lambda s: s.text == equals)
    if match.regex is not None:
        search = LinearRegex(match.regex).search
        checks.append(lambda s: search(s.text))
    checks.extend(_compile_predicate(p) for p in match.json_)
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda s: all(check(s) for check in checks)


# -- compiled rules and the namespace index -----------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _Compiled:
    position: int  # declaration order: actions come out in it
    rule: Rule
    scoped: bool  # a task rule: needs a context, and its action carries it
    check: _Check | None
    slots: tuple[str, ...]  # the all_of keys; () for a single-key rule
    latest: bool
    window_ms: float | None
    key_prefix: str  # of its state keys, so a key costs one concatenation
    join: Join | None  # correlate or sequence: sets per correlation value (rules.join)
    timed: Timed | None = None  # debounce, throttle, batch or absence (windows.py)

    def state_key(self, context: str | None) -> str:
        """Equal to :func:`state_key` for this rule (the context only if scoped)."""
        return self.key_prefix + (json.dumps(context) if self.scoped else "null") + "]"


# A rule the event's key matched, with the indices of the all_of keys it matched.
_Hit = tuple[_Compiled, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class _NamespaceIndex:
    exact: dict[str, tuple[_Hit, ...]]
    globs: tuple[tuple[Callable[[str], object], _Compiled, int], ...]  # in rule order
    any_glob: Callable[[str], object] | None  # one regex for all: most keys match none
    has_scoped: bool
    # Keys the globs were matched against, with their hits (all rules, before the context
    # filter); cleared when full. Shared by threads: a lost race only matches again.
    matched: dict[str, tuple[_Hit, ...]] = field(default_factory=dict)


_MATCHED_KEYS = 16_384  # keys of at most 1 KiB (the codec's limit): a bounded cache


def _compile_context(pattern: str | None) -> _Check | None:
    if pattern is None:
        return None
    if not is_glob(pattern):
        return lambda s: s.event.context == pattern
    match = re.compile(translate(pattern)).match
    return lambda s: s.event.context is not None and match(s.event.context) is not None


def _both(first: _Check | None, second: _Check | None) -> _Check | None:
    if first is None or second is None:
        return first or second
    return lambda s: first(s) and second(s)


def _compile(position: int, rule: Rule) -> _Compiled:
    all_of = rule.all_of
    return _Compiled(
        position=position,
        rule=rule,
        scoped=rule.is_task_rule,
        check=_both(_compile_context(rule.context), _compile_value(rule.value)),
        slots=rule.patterns if rule.key is None else (),
        latest=all_of is None or all_of.policy == "latest",
        window_ms=all_of.window * 1000 if all_of is not None and all_of.window else None,
        key_prefix=state_key(rule.name, None)[: -len("null]")],
        join=Join(rule) if rule.correlate is not None or rule.sequence is not None else None,
        timed=_timed(rule),
    )


def _timed(rule: Rule) -> Timed | None:
    return None if rule.timing is None else Timed(rule, rule.is_task_rule)


def _merge(hits: Iterable[tuple[_Compiled, int]]) -> tuple[_Hit, ...]:
    """Group (rule, key index) pairs by rule, in declaration order."""
    by_rule: dict[int, tuple[_Compiled, list[int]]] = {}
    for compiled, slot in hits:
        by_rule.setdefault(compiled.position, (compiled, []))[1].append(slot)
    return tuple((c, tuple(sorted(slots))) for _, (c, slots) in sorted(by_rule.items()))


def _group(pairs: Sequence[tuple[_Compiled, int]]) -> tuple[_Hit, ...]:
    """Like :func:`_merge` for pairs already in (rule, key index) order: no sorting."""
    hits: list[_Hit] = []
    for c, slot in pairs:
        if hits and hits[-1][0] is c:
            hits[-1] = (c, (*hits[-1][1], slot))
        else:
            hits.append((c, (slot,)))
    return tuple(hits)


def _index(compiled: Sequence[_Compiled]) -> dict[str, _NamespaceIndex]:
    exact: dict[str, dict[str, list[tuple[_Compiled, int]]]] = {}
    globs: dict[str, list[tuple[str, _Compiled, int]]] = {}
    for c in compiled:  # in declaration order, which the glob lists keep
        ns = c.rule.namespace
        exact.setdefault(ns, {})
        globs.setdefault(ns, [])
        for slot, pattern in enumerate(c.rule.patterns):
            if is_glob(pattern):
                globs[ns].append((translate(pattern), c, slot))
            else:
                exact[ns].setdefault(pattern, []).append((c, slot))
    indexes = {}
    for ns, by_key in exact.items():
        regexes = [regex for regex, _, _ in globs[ns]]
        indexes[ns] = _NamespaceIndex(
            exact={key: _merge(pairs) for key, pairs in by_key.items()},
            globs=tuple((re.compile(regex).match, c, slot) for regex, c, slot in globs[ns]),
            any_glob=re.compile("|".join(f"(?:{r})" for r in regexes)).match if regexes else None,
            has_scoped=any(c.scoped for c in compiled if c.rule.namespace == ns),
        )
    return indexes


def _match(index: _NamespaceIndex, key: str) -> tuple[_Hit, ...]:
    """The rules of ``index`` whose keys match ``key``, exact and globs, in rule order."""
    hits = index.exact.get(key, ())
    if index.any_glob is not None and index.any_glob(key):
        matched = [(c, slot) for match, c, slot in index.globs if match(key)]
        if hits:
            matched.extend((c, slot) for c, slots in hits for slot in slots)
            hits = _merge(matched)
        else:
            hits = _group(matched)
    return hits


# -- the engine ---------------------------------------------------------------------------


class TriggerEngine:
    """Compiled rules: globs and regexes compiled, rules indexed by namespace and key.

    An event of a namespace without rules costs one dict lookup; otherwise one lookup by
    exact key, and in a namespace with globs one match of a regex that joins them all
    (each glob is tried on its own only when that one matches), remembered per key for
    the next event of that key. The rules are immutable after construction and the
    remembered matches are only ever added or cleared, so one engine may serve several
    threads.
    """

    def __init__(self, rules: Sequence[Rule], *, limits: MatchLimits | None = None) -> None:
        try:
            check_unique_names(rules)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self._rules = tuple(rules)
        self._limits = limits or MatchLimits()
        compiled = [_compile(i, r) for i, r in enumerate(self._rules)]
        self._index = _index(compiled)
        self._timed = tuple(c.timed for c in compiled if c.timed is not None)
        # state_keys names rows only for all_of sets and time-driven rules.
        self._reads_state = any(c.slots or c.timed is not None for c in compiled)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    @property
    def limits(self) -> MatchLimits:
        return self._limits

    def _hits(self, event: Event) -> tuple[_Hit, ...]:
        index = self._index.get(event.namespace)
        if index is None:
            return ()
        key = event.key
        if index.any_glob is None:
            hits = index.exact.get(key, ())
        else:
            cached = index.matched.get(key)
            if cached is None:
                cached = _match(index, key)
                if len(index.matched) >= _MATCHED_KEYS:
                    index.matched.clear()
                index.matched[key] = cached
            hits = cached
        if event.context is None and index.has_scoped:
            hits = tuple(hit for hit in hits if not hit[0].scoped)
        return hits

    def state_keys(self, event: Event) -> list[str]:
        """The rule-state keys :meth:`evaluate` reads for ``event``.

        Decided by namespace, key and context only: an event that later fails a value
        condition still names its keys (one cheap read) rather than parsing its value twice.
        """
        keys: list[str] = []
        subject: _Subject | None = None
        for c, slots in self._hits(event):
            if c.timed is not None:
                keys.extend(c.timed.keys(event, slots))
                continue
            if not c.slots:
                continue
            if c.join is None:
                keys.append(c.state_key(event.context))
                continue
            subject = subject or _Subject(event, self._limits.max_json_depth)
            joined = self._join_key(c, subject)
            if joined is not None:
                keys.append(joined[0])
        return keys

    def reads_state(self) -> bool:
        """False when every rule is a single-key one: :meth:`state_keys` is always empty."""
        return self._reads_state

    def _join_key(self, c: _Compiled, subject: _Subject) -> tuple[str, str | None] | None:
        """The row of the event's set for a correlation rule, and its correlation value;
        ``None`` when the rule is correlated and the event carries no value."""
        assert c.join is not None
        event = subject.event
        too_long = len(event.value) > self._limits.max_value_length
        value = c.join.value(
            event.context, event.headers, lambda: _NOT_JSON if too_long else subject.doc
        )
        if value is None and c.join.correlated:
            return None
        return c.join.state_key(event.context if c.scoped else None, value), value

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        """Actions and state updates for one event; ``state`` holds :meth:`state_keys`.

        A key missing from ``state`` counts as no state. Neither argument is modified.
        """
        hits = self._hits(event)
        if not hits:
            return Result([], {})
        actions: list[Action] = []
        updates: dict[str, str | None] = {}
        expiry: dict[str, float] = {}
        subject: _Subject | None = None
        too_long = False
        for c, slots in hits:
            if c.timed is None and c.check is None and not c.slots:  # a key, no condition
                actions.append(
                    self._action(c, event, (event.event_id,), event_payload(event), finite=True)
                )
                continue
            if subject is None:  # the value is looked at only for rules with conditions
                subject = _Subject(event, self._limits.max_json_depth)
                too_long = len(event.value) > self._limits.max_value_length
            if c.timed is not None:
                # The conditions hold for the events that count (absence: for A only).
                passes = c.check is None or (not too_long and c.check(subject))
                c.timed.arrive(event, slots, passes, state, Out(actions, updates, expiry))
                continue
            if c.check is not None and (too_long or not c.check(subject)):
                continue
            if not c.slots:
                actions.append(
                    self._action(c, event, (event.event_id,), event_payload(event), finite=True)
                )
                continue
            context = event.context if c.scoped else None
            if c.join is not None:
                joined = self._join_key(c, subject)
                if joined is None:
                    continue
                key, value = joined
                arrival = c.join.arrive(state.get(key), event_payload(event), slots)
                if arrival.changed:
                    updates[key] = arrival.update
                    if arrival.update is not None and arrival.expires is not None:
                        expiry[key] = arrival.expires
                if arrival.fired is not None:
                    ids = tuple(e["event_id"] for e in arrival.fired.values())
                    payload = {
                        "namespace": event.namespace,
                        "context": context,
                        "correlation": value,
                        "events": arrival.fired,
                    }
                    actions.append(self._action(c, event, ids, payload))
                continue
            key = c.state_key(context)
            changed, update, fired, oldest = _arrive(c, state.get(key), event, slots)
            if changed:
                updates[key] = update
                if update is not None and c.window_ms is not None and oldest is not None:
                    expiry[key] = (oldest + c.window_ms) / 1000
            if fired is not None:
                ids = tuple(fired[s]["event_id"] for s in c.slots)
                payload = {"namespace": event.namespace, "context": context, "events": fired}
                actions.append(self._action(c, event, ids, payload))
        if not updates and not expiry:
            return actions_only(actions)
        return Result(actions, updates, expiry)

    # -- time-driven rules: the due pass (connector/rules/windows.py) ----------------------

    def has_timers(self) -> bool:
        """Whether any rule is time-driven."""
        return bool(self._timed)

    def timer_keys(self, tp: TP) -> list[str]:
        """The rows the due pass of partition ``tp`` reads first."""
        return [k for t in self._timed if (k := t.timer_key(tp)) is not None]

    def due_keys(self, tp: TP, state: Mapping[str, str | None], now: int) -> list[str]:
        """The rows the due pass also reads, given :meth:`timer_keys`' rows in ``state``."""
        return [k for t in self._timed for k in t.due_keys(tp, state, now)]

    def due(
        self, tp: TP, now: int, watermark: int | None, state: Mapping[str, str | None]
    ) -> Evaluation:
        """What time-driven rules fire on partition ``tp`` at event time ``now`` (ms);
        ``absence`` fires by the store's event-time ``watermark`` (ms)."""
        out = Out()
        for t in self._timed:
            t.due(tp, now, watermark, state, out)
        return Result(out.actions, out.updates, out.expiry)

    @staticmethod
    def _action(
        c: _Compiled,
        event: Event,
        event_ids: tuple[str, ...],
        payload: dict[str, Any],
        *,
        finite: bool = False,
    ) -> Action:
        rule = c.rule
        return rule_action(
            rule.name,
            rule.action,
            rule.target,
            event.namespace,
            event_ids,
            event.key,
            rule.workflow,
            rule.task,
            event.context if c.scoped else None,
            payload,
            finite,
        )


# -- all_of sets --------------------------------------------------------------------------

_Entries = dict[str, dict[str, Any]]


def _load(raw: str | None, slots: tuple[str, ...]) -> tuple[_Entries, bool]:
    """The stored set, and whether it was clean (else it must be rewritten)."""
    if raw is None:
        return {}, True
    try:
        data = jsontext.loads(raw)
        events = data["events"] if data.get("v") == _STATE_VERSION else None
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
        events = None
    if not isinstance(events, dict):
        return {}, False
    entries = {
        slot: entry
        for slot, entry in events.items()
        if slot in slots
        and isinstance(entry, dict)
        and isinstance(entry.get("event_id"), str)
        and isinstance(entry.get("create_time"), int)
    }
    return entries, len(entries) == len(events)


def _arrive(
    c: _Compiled, raw: str | None, event: Event, slots: tuple[int, ...]
) -> tuple[bool, str | None, _Entries | None, int | None]:
    """Add ``event`` to the rule's set: (whether to write, what to write, the fired set,
    the create time of the oldest event kept)."""
    entries, clean = _load(raw, c.slots)
    changed = not clean
    now = event.create_time
    take = True
    if c.window_ms is not None:
        window = c.window_ms
        newest = max([now, *(e["create_time"] for e in entries.values())])
        take = newest - now <= window
        kept = {s: e for s, e in entries.items() if newest - e["create_time"] <= window}
        if len(kept) != len(entries):
            entries, changed = kept, True
    if take:
        entry = event_payload(event)
        for i in slots:
            slot = c.slots[i]
            held = entries.get(slot)
            if (
                held is None
                or (c.latest and now >= held["create_time"])
                or (not c.latest and now < held["create_time"])
            ):
                entries[slot] = entry
                changed = True
    if len(entries) == len(c.slots):
        fired = {slot: entries[slot] for slot in c.slots}
        return raw is not None, None, fired, None  # a complete set starts over: delete it
    oldest = min((e["create_time"] for e in entries.values()), default=None)
    if not changed:
        return False, raw, None, oldest
    text = json.dumps(
        {"v": _STATE_VERSION, "events": entries}, separators=(",", ":"), sort_keys=True
    )
    return True, text, None, oldest
