"""Properties of trigger evaluation over generated rule sets and event sequences:
determinism, no mutation of inputs, namespace isolation, task scoping, and ``all_of``
firing exactly once per complete set whatever the interleaving."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from kec.action import action_id
from kec.event import Event
from tests.unit.trigger_helpers import make_event, run

NAMESPACES = ["a", "b"]
KEYS = ["k1", "k2", "k3"]
PATTERNS = [*KEYS, "k*", "?2"]
CONTEXTS = [None, "x", "y"]
VALUES: list[str | bytes] = ["", "ok", '{"s": "ok"}', '{"s": "no", "n": 3}', b"\xff"]
CONDITIONS: list[dict[str, Any] | None] = [
    None,  # listed thrice: most generated rules have no value condition, so they fire often
    None,
    None,
    {"equals": "ok"},
    {"regex": "ok"},
    {"json": [{"path": "s", "in": ["ok"]}]},
    {"json": [{"path": "n", "gt": 2}]},
]
BASE_TIME = 1_000_000

modest = settings(max_examples=60, deadline=None)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    rules = []
    for i in range(draw(st.integers(1, 6))):
        fields: dict[str, Any] = {"name": f"r{i}", "namespace": draw(st.sampled_from(NAMESPACES))}
        if draw(st.booleans()):
            action = draw(st.sampled_from(["START", "STOP", "RESTART"]))
            fields.update(action=action, workflow="wf", task="t")
        else:
            fields.update(action=draw(st.sampled_from(["start", "stop"])), workflow="wf")
        if draw(st.booleans()):
            fields["all_of"] = {
                "keys": draw(
                    st.lists(st.sampled_from(PATTERNS), min_size=2, max_size=3, unique=True)
                ),
                "policy": draw(st.sampled_from(["latest", "first"])),
                "window": draw(st.sampled_from([None, None, 1, 5])),
            }
        else:
            fields["key"] = draw(st.sampled_from(PATTERNS))
        condition = draw(st.sampled_from(CONDITIONS))
        if condition is not None:
            fields["value"] = condition
        rules.append(Rule.model_validate(fields))
    return rules


@st.composite
def event_lists(draw: st.DrawFn, max_size: int = 40) -> list[Event]:
    specs = draw(
        st.lists(
            st.tuples(
                st.sampled_from([*NAMESPACES, *NAMESPACES, "c"]),
                st.sampled_from([*KEYS, "z"]),
                st.sampled_from(CONTEXTS),
                st.sampled_from(VALUES),
                st.integers(0, 8_000),  # create times out of order, some outside windows
            ),
            min_size=8,
            max_size=max_size,
        )
    )
    return [
        make_event(key, value, ns=ns, ctx=ctx, t=BASE_TIME + t, eid=f"e{i}")
        for i, (ns, key, ctx, value, t) in enumerate(specs)
    ]


@modest
@given(rule_sets(), event_lists())
def test_same_events_give_same_actions_and_ids(rules: list[Rule], events: list[Event]) -> None:
    first, first_state = run(TriggerEngine(rules), events)
    second, second_state = run(TriggerEngine(rules), events)
    assert [a.to_dict() for a in first] == [a.to_dict() for a in second]
    assert first_state == second_state
    assert all(a.action_id == action_id(a.rule, a.event_ids) for a in first)


@modest
@given(rule_sets(), event_lists())
def test_evaluate_does_not_mutate_its_inputs(rules: list[Rule], events: list[Event]) -> None:
    dumped = [r.model_dump() for r in rules]
    engine = TriggerEngine(rules)
    state: dict[str, str] = {}
    for event in events:
        view = {k: state.get(k) for k in engine.state_keys(event)}
        before = (copy.deepcopy(view), event.to_dict())
        result = engine.evaluate(event, view)
        again = engine.evaluate(event, view)
        assert (view, event.to_dict()) == before
        assert [a.to_dict() for a in result.actions] == [a.to_dict() for a in again.actions]
        assert result.state_updates == again.state_updates
        for key, value in result.state_updates.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    assert [r.model_dump() for r in rules] == dumped


@modest
@given(rule_sets(), event_lists())
def test_actions_stay_in_namespace_and_execution(rules: list[Rule], events: list[Event]) -> None:
    by_name = {r.name: r for r in rules}
    engine = TriggerEngine(rules)
    state: dict[str, str] = {}
    for event in events:
        actions, state = run(engine, [event], state)
        for action in actions:
            rule = by_name[action.rule]
            assert rule.namespace == event.namespace == action.namespace
            if rule.is_task_rule:
                assert action.context is not None
                assert action.context == event.context
            else:
                assert action.context is None


def all_of_engine(policy: str, task: bool = True) -> TriggerEngine:
    fields: dict[str, Any] = {"action": "START", "task": "t"} if task else {"action": "start"}
    rule = Rule.model_validate(
        {"name": "all", "all_of": {"keys": ["a", "b", "c"], "policy": policy}, "workflow": "wf"}
        | fields
    )
    return TriggerEngine([rule])


@modest
@given(
    st.sampled_from(["latest", "first"]),
    st.lists(st.sampled_from(["x", "y", "z", "w"]), min_size=1, max_size=4, unique=True),
    st.data(),
)
def test_all_of_fires_once_per_execution_whatever_the_interleaving(
    policy: str, contexts: list[str], data: st.DataObject
) -> None:
    arrivals = [(ctx, key) for ctx in contexts for key in ("a", "b", "c")]
    noise = [(None, "a"), (None, "b"), (None, "c"), ("x", "other")]
    order = data.draw(st.permutations(arrivals + noise))
    events = [
        make_event(key, ctx=ctx, t=BASE_TIME + i, eid=f"{ctx}-{key}-{i}")
        for i, (ctx, key) in enumerate(order)
    ]
    actions, state = run(all_of_engine(policy), events)
    assert sorted(a.context or "" for a in actions) == sorted(contexts)
    for action in actions:
        keys = [eid.split("-")[1] for eid in action.event_ids]
        assert keys == ["a", "b", "c"]
        assert all(eid.startswith(f"{action.context}-") for eid in action.event_ids)
    assert state == {}


@modest
@given(
    st.sampled_from(["latest", "first"]),
    st.booleans(),
    st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=40),
)
def test_all_of_fires_exactly_once_per_complete_set(
    policy: str, task: bool, keys: list[str]
) -> None:
    events = [make_event(key, ctx="x", t=BASE_TIME + i, eid=f"e{i}") for i, key in enumerate(keys)]
    # The model: collect keys until a, b and c are all there; then fire and start over.
    expected: list[tuple[str, ...]] = []
    held: dict[str, str] = {}
    for event in events:
        if event.key == "d":
            continue
        if policy == "latest" or event.key not in held:
            held[event.key] = event.event_id
        if len(held) == 3:
            expected.append((held["a"], held["b"], held["c"]))
            held = {}
    actions, state = run(all_of_engine(policy, task), events)
    assert [a.event_ids for a in actions] == expected
    assert (state == {}) == (not held)
