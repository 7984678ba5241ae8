"""Properties of correlation rules over generated streams: per-value isolation, windows
and TTLs, event-time order in sequences whatever the read order (late events), duplicates,
agreement with a plain ``all_of`` for one value, and stable action ids."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from kec.action import Action, action_id
from kec.event import Event
from tests.unit.trigger_helpers import run

T0 = 1_700_000_000_000
ORDERS = ["1", "2", "3"]
KEYS = ["pay", "ship", "bill"]

modest = settings(max_examples=80, deadline=None)


def _rule(kind: str, window: int | None, ttl: int | None, policy: str = "latest") -> Rule:
    data: dict[str, Any] = {"name": "r", "action": "notify", "correlate": {"json": "o"}}
    if ttl is not None:
        data["correlate"]["ttl"] = ttl
    if kind == "sequence":
        data["sequence"] = {"keys": KEYS, "window": window or 100}
    else:
        data["all_of"] = {"keys": KEYS[:2], "policy": policy, "window": window}
    return Rule.model_validate(data)


@st.composite
def streams(draw: st.DrawFn, keys: list[str] = KEYS) -> list[Event]:
    n = draw(st.integers(0, 14))
    events = []
    for i in range(n):
        events.append(
            Event(
                key=draw(st.sampled_from(keys)),
                value=json.dumps({"o": draw(st.sampled_from(ORDERS))}),
                create_time=T0 + draw(st.integers(0, 300)) * 1000,
                event_id=f"e{i}",
            )
        )
    return events


def _order(e: Event) -> str:
    return str(json.loads(e.value)["o"])


def _check_invariants(actions: list[Action], events: list[Event], rule: Rule) -> None:
    by_id = {e.event_id: e for e in events}
    used: set[str] = set()
    for a in actions:
        members = [by_id[i] for i in a.event_ids]
        assert {_order(e) for e in members} == {a.payload["correlation"]}
        assert a.action_id == action_id("r", a.event_ids)
        assert not used & set(a.event_ids), "an event fired twice"
        used |= set(a.event_ids)
        times = [e.create_time for e in members]
        span = max(times) - min(times)
        window = rule.sequence.window if rule.sequence else rule.all_of.window  # type: ignore[union-attr]
        if window is not None:
            assert span <= window * 1000
        if rule.correlate and rule.correlate.ttl is not None:
            assert span <= rule.correlate.ttl * 1000
        if rule.sequence is not None:
            assert [e.key for e in members] == KEYS
            assert times == sorted(times), "a sequence fired out of event-time order"


def _valid(kind: str, window: int | None, ttl: int | None) -> bool:
    return kind == "sequence" or window is not None or ttl is not None


@st.composite
def valid_rules(draw: st.DrawFn) -> Rule:
    kind = draw(st.sampled_from(["all_of", "sequence"]))
    window = draw(st.sampled_from([None, 50, 200]))
    ttl = draw(st.sampled_from([None, 80]))
    if not _valid(kind, window, ttl):
        ttl = 80
    return _rule(kind, window, ttl, draw(st.sampled_from(["latest", "first"])))


@modest
@given(valid_rules(), streams())
def test_actions_join_one_value_fire_each_event_once_and_keep_windows(
    rule: Rule, events: list[Event]
) -> None:
    actions, _ = run(TriggerEngine([rule]), events)
    _check_invariants(actions, events, rule)


@modest
@given(valid_rules(), streams())
def test_each_value_is_evaluated_as_if_alone(rule: Rule, events: list[Event]) -> None:
    engine = TriggerEngine([rule])
    together, state = run(engine, events)
    for order in ORDERS:
        alone, alone_state = run(engine, [e for e in events if _order(e) == order])
        assert [a for a in together if a.payload["correlation"] == order] == alone
        assert {k: v for k, v in state.items() if f'"{order}"]' in k} == alone_state


@modest
@given(valid_rules(), streams(), st.integers(0, 13))
def test_a_duplicate_of_an_event_still_held_changes_nothing(
    rule: Rule, events: list[Event], at: int
) -> None:
    engine = TriggerEngine([rule])
    if at >= len(events):
        return
    head, _ = run(engine, events[: at + 1])
    if any(events[at].event_id in a.event_ids for a in head):
        return  # it fired: its set is gone, and the pipeline drops resent events itself
    once = run(engine, events)
    twice = run(engine, [*events[: at + 1], events[at], *events[at + 1 :]])
    assert once == twice


@modest
@given(st.permutations([0, 1, 2]), st.lists(st.integers(0, 120), min_size=3, max_size=3))
def test_a_sequence_judges_event_time_not_read_order(read: list[int], times: list[int]) -> None:
    rule = _rule("sequence", 100, None)
    happened = [
        Event(key=KEYS[i], value='{"o": 1}', create_time=T0 + times[i] * 1000, event_id=f"s{i}")
        for i in range(3)
    ]
    actions, _ = run(TriggerEngine([rule]), [happened[i] for i in read])
    in_order = times == sorted(times) and times[2] - times[0] <= 100
    assert [a.event_ids for a in actions] == ([("s0", "s1", "s2")] if in_order else [])


@modest
@given(streams(keys=KEYS[:2]), st.sampled_from(["latest", "first"]), st.sampled_from([50, 200]))
def test_one_value_behaves_as_a_plain_all_of(events: list[Event], policy: str, window: int) -> None:
    one = [
        Event(key=e.key, value='{"o": "1"}', create_time=e.create_time, event_id=e.event_id)
        for e in events
    ]
    plain = Rule.model_validate(
        {"name": "r", "action": "notify",
         "all_of": {"keys": KEYS[:2], "policy": policy, "window": window}}
    )  # fmt: skip
    joined, _ = run(TriggerEngine([_rule("all_of", window, None, policy)]), one)
    expected, _ = run(TriggerEngine([plain]), one)
    assert [a.action_id for a in joined] == [a.action_id for a in expected]


@modest
@given(valid_rules(), streams(), st.integers(1, 5))
def test_batches_and_restarts_change_nothing(rule: Rule, events: list[Event], cut: int) -> None:
    """State goes through its stored text between any two events: evaluating in pieces
    (a restart between batches) gives the actions of one pass, with the same ids."""
    engine = TriggerEngine([rule])
    whole, state = run(engine, events)
    first, mid = run(engine, events[:cut])
    rest, end = run(TriggerEngine([rule]), events[cut:], mid)
    assert [a.action_id for a in first + rest] == [a.action_id for a in whole]
    assert end == state
