"""Trigger evaluation, one example per feature: namespaces, keys, value conditions, task
scoping by execution, workflow triggers, ``all_of`` sets and their state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.rules.trigger import TriggerEngine, state_key
from kec.action import ActionKind, action_id
from kec.errors import ConfigError
from tests.unit.trigger_helpers import make_event, make_rule, run

TASK: dict[str, Any] = {"action": "START", "workflow": "wf", "task": "t"}


def fired(rule_fields: dict[str, Any], *events_args: dict[str, Any]) -> list[str]:
    """The names of the rules fired by events built from ``events_args``."""
    engine = TriggerEngine([make_rule(**rule_fields)])
    actions, _ = run(engine, [make_event(**a) for a in events_args])
    return [a.rule for a in actions]


# -- namespaces and keys ------------------------------------------------------------------


def test_event_reaches_only_rules_of_its_namespace() -> None:
    engine = TriggerEngine(
        [make_rule(name="in-a", namespace="a"), make_rule(name="in-b", namespace="b")]
    )
    actions, _ = run(engine, [make_event(ns="a"), make_event(ns="b"), make_event(ns="c")])
    assert [(a.rule, a.namespace) for a in actions] == [("in-a", "a"), ("in-b", "b")]


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("order-1", "order-1", True),
        ("order-1", "order-10", False),
        ("order-1", "Order-1", False),
        ("order-*", "order-1", True),
        ("order-*", "order-", True),
        ("order-*", "order", False),
        ("order-*", "xorder-1", False),
        ("order-?", "order-1", True),
        ("order-?", "order-12", False),
        ("order-[12]", "order-2", True),
        ("order-[12]", "order-3", False),
        ("a[*]", "a*", True),
        ("a[*]", "ab", False),
        ("*/done", "x/y/done", True),
    ],
)
def test_key_exact_and_glob(pattern: str, key: str, matches: bool) -> None:
    assert fired({"key": pattern}, {"key": key}) == (["r"] if matches else [])


def test_exact_and_glob_rules_fire_in_declaration_order() -> None:
    engine = TriggerEngine(
        [
            make_rule(name="glob", key="k*"),
            make_rule(name="exact", key="k"),
            make_rule(name="other", key="z"),
            make_rule(name="glob2", key="?"),
            make_rule(name="stars", key="*k*k*"),
            make_rule(name="glob3", key="[a-z]"),
        ]
    )
    actions, _ = run(engine, [make_event("k"), make_event("kk"), make_event("1")])
    expected = ["glob", "exact", "glob2", "glob3", "glob", "stars", "glob2"]
    assert [a.rule for a in actions] == expected


# -- value conditions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "event_value", "matches"),
    [
        ({"equals": "done"}, "done", True),
        ({"equals": "done"}, "done ", False),
        ({"equals": ""}, "", True),
        ({"equals": "done"}, b"done", True),
        ({"regex": "^ok"}, "ok then", True),
        ({"regex": "ok"}, "it is ok", True),  # re.search: anchor to match the whole value
        ({"regex": "^ok$"}, "it is ok", False),
        ({"regex": "ok", "equals": "ok"}, "ok", True),
        ({"regex": "ok", "equals": "ok!"}, "ok", False),
        ({}, "anything", True),
    ],
)
def test_value_text_conditions(
    value: dict[str, Any], event_value: str | bytes, matches: bool
) -> None:
    assert fired({"value": value}, {"value": event_value}) == (["r"] if matches else [])


DOC = json.dumps(
    {
        "status": "ok",
        "n": 5,
        "flag": True,
        "none": None,
        "order": {"total": 10.5, "items": [{"sku": "a"}, {"sku": "b"}]},
        "a.b": 1,
    }
)


@pytest.mark.parametrize(
    ("predicate", "matches"),
    [
        ({"path": "status", "in": ["ok", "done"]}, True),
        ({"path": "status", "in": ["failed"]}, False),
        ({"path": "n", "in": [5, "x"]}, True),
        ({"path": "n", "in": ["5"]}, False),
        ({"path": "status", "equals": "ok"}, True),
        ({"path": "n", "equals": 5.0}, True),
        ({"path": "flag", "equals": True}, True),
        ({"path": "flag", "equals": 1}, False),  # JSON: true is not 1
        ({"path": "n", "equals": True}, False),
        ({"path": "none", "equals": None}, True),
        ({"path": "missing", "equals": None}, False),
        ({"path": "order", "equals": {"total": 10.5, "items": [{"sku": "a"}, {"sku": "b"}]}}, True),
        ({"path": "order.items", "equals": [{"sku": "a"}]}, False),
        ({"path": "none", "exists": True}, True),
        ({"path": "missing", "exists": True}, False),
        ({"path": "missing", "exists": False}, True),
        ({"path": "status.deeper", "exists": False}, True),
        ({"path": "order.total", "gt": 10}, True),
        ({"path": "order.total", "gt": 10.5}, False),
        ({"path": "order.total", "ge": 10.5}, True),
        ({"path": "n", "lt": 5}, False),
        ({"path": "n", "le": 5, "gt": 4}, True),
        ({"path": "status", "gt": 0}, False),  # not a number
        ({"path": "flag", "gt": 0}, False),  # a bool is not a number
        ({"path": "order.items.1.sku", "equals": "b"}, True),
        ({"path": "order.items.2.sku", "exists": False}, True),
        ({"path": "order.items.x", "exists": True}, False),
        ({"path": "a.b", "exists": True}, False),  # dotted keys cannot be addressed
    ],
)
def test_json_predicates(predicate: dict[str, Any], matches: bool) -> None:
    assert fired({"value": {"json": [predicate]}}, {"value": DOC}) == (["r"] if matches else [])


def test_all_json_predicates_must_hold() -> None:
    value = {"json": [{"path": "status", "equals": "ok"}, {"path": "n", "gt": 9}]}
    assert fired({"value": value}, {"value": DOC}) == []


@pytest.mark.parametrize(
    ("event_value", "predicate", "matches"),
    [
        ("not json", {"path": "status", "exists": False}, False),
        ("{", {"path": "status", "exists": False}, False),
        ("", {"path": "status", "exists": False}, False),
        (b"\xff\xfe", {"path": "status", "exists": False}, False),
        ('"ok"', {"path": "status", "exists": False}, True),  # JSON, just not an object
        ('"ok"', {"path": "status", "equals": "ok"}, False),
        ("[1, 2]", {"path": "0", "equals": 1}, True),
        ("[1, 2]", {"path": "status", "exists": True}, False),
    ],
)
def test_value_that_is_not_json_fails_every_json_predicate(
    event_value: str | bytes, predicate: dict[str, Any], matches: bool
) -> None:
    assert fired({"value": {"json": [predicate]}}, {"value": event_value}) == (
        ["r"] if matches else []
    )


def test_binary_value_is_matched_as_text() -> None:
    assert fired({"value": {"regex": "caf"}}, {"value": "café".encode()}) == ["r"]


# -- task scoping and workflow triggers ---------------------------------------------------


def test_task_rule_acts_on_the_events_execution() -> None:
    engine = TriggerEngine([make_rule(**TASK)])
    actions, _ = run(engine, [make_event(ctx="exec-1"), make_event(ctx="exec-2")])
    assert [(a.kind, a.task, a.context) for a in actions] == [
        (ActionKind.START_TASK, "t", "exec-1"),
        (ActionKind.START_TASK, "t", "exec-2"),
    ]


def test_task_rule_ignores_events_without_execution() -> None:
    engine = TriggerEngine([make_rule(**TASK)])
    event = make_event(ctx=None)
    assert engine.evaluate(event, {}).actions == []


def test_workflow_trigger_sees_every_context() -> None:
    engine = TriggerEngine([make_rule()])
    actions, _ = run(engine, [make_event(ctx=None), make_event(ctx="exec-1")])
    assert [(a.kind, a.workflow, a.context) for a in actions] == [
        (ActionKind.START_WORKFLOW, "wf", None),
        (ActionKind.START_WORKFLOW, "wf", None),
    ]
    assert [a.payload["context"] for a in actions] == [None, "exec-1"]


@pytest.mark.parametrize(
    ("pattern", "context", "matches"),
    [
        ("wf-7", "wf-7", True),
        ("wf-7", "wf-70", False),
        ("wf-*", "wf-70", True),
        ("wf-*", "other-1", False),
        ("wf-*", None, False),  # no context: a rule that asks for one never matches
    ],
)
def test_context_condition_exact_and_glob(pattern: str, context: str | None, matches: bool) -> None:
    assert fired({"context": pattern}, {"ctx": context}) == (["r"] if matches else [])


def test_gateway_style_event_matches_key_and_workflow_separately() -> None:
    # The gateway's events: key = the body's event_key, context = the URL's workflow id.
    engine = TriggerEngine(
        [
            make_rule(name="any-wf", key="approve", namespace="http", **TASK),
            make_rule(name="wf-7-only", key="approve", context="wf-7", namespace="http"),
        ]
    )
    events = [
        make_event("approve", ns="http", ctx="wf-7"),
        make_event("approve", ns="http", ctx="wf-8"),
    ]
    actions, _ = run(engine, events)
    assert [(a.rule, a.context) for a in actions] == [
        ("any-wf", "wf-7"),
        ("wf-7-only", None),
        ("any-wf", "wf-8"),
    ]


def test_all_of_with_context_counts_events_of_that_context_only() -> None:
    rule = {"all_of": {"keys": ["a", "b"], "policy": "latest"}, "context": "wf-1"}
    assert fired(rule, {"key": "a", "ctx": "wf-1"}, {"key": "b", "ctx": "wf-2"}) == []
    assert fired(rule, {"key": "a", "ctx": "wf-1"}, {"key": "b", "ctx": "wf-1"}) == ["r"]


def test_action_fields_and_payload() -> None:
    engine = TriggerEngine([make_rule(name="stop-it", action="stop", target="hooks")])
    event = make_event(value=b"bye", ctx="x", sender="task1", t=42, eid="id-1")
    (action,) = engine.evaluate(event, {}).actions
    assert action.kind is ActionKind.STOP_WORKFLOW
    assert action.target == "hooks"
    assert action.event_ids == ("id-1",)
    assert action.event_key == "k"
    assert action.action_id == action_id("stop-it", ("id-1",))
    assert action.payload == {
        "event_id": "id-1",
        "key": "k",
        "value": "bye",
        "namespace": "default",
        "sender": "task1",
        "context": "x",
        "event_type": None,
        "create_time": 42,
    }
    assert json.loads(action.to_json())["payload"]["value"] == "bye"


def test_notify_rule_hands_on_the_event() -> None:
    engine = TriggerEngine([make_rule(action="notify", workflow=None)])
    (action,) = engine.evaluate(make_event(ctx="c"), {}).actions
    assert (action.kind, action.workflow, action.context) == (ActionKind.NOTIFY, None, None)


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="repeated: r"):
        TriggerEngine([make_rule(), make_rule(key="other")])


def test_no_state_for_single_key_rules() -> None:
    engine = TriggerEngine([make_rule()])
    event = make_event()
    assert engine.state_keys(event) == []
    assert engine.evaluate(event, {}).state_updates == {}


# -- all_of -------------------------------------------------------------------------------


def all_of_rule(policy: str = "latest", window: float | None = None, **fields: Any) -> Any:
    spec: dict[str, Any] = {"keys": ["a", "b", "c"], "policy": policy}
    if window is not None:
        spec["window"] = window
    return make_rule(all_of=spec, **fields)


def test_all_of_fires_once_when_complete_then_resets() -> None:
    engine = TriggerEngine([all_of_rule()])
    events = [make_event(k, f"v{k}", eid=f"id-{k}") for k in ("c", "a", "b")]
    actions, state = run(engine, events)
    (action,) = actions
    assert action.event_ids == ("id-a", "id-b", "id-c")  # in the rule's key order
    assert action.action_id == action_id("r", ("id-a", "id-b", "id-c"))
    assert action.event_key == "b"  # the key that completed the set
    assert action.payload["context"] is None
    assert {k: e["value"] for k, e in action.payload["events"].items()} == {
        "a": "va",
        "b": "vb",
        "c": "vc",
    }
    assert state == {}
    more, _ = run(engine, [make_event("a"), make_event("b")], state)
    assert more == []


def test_all_of_incomplete_keeps_state_as_json_text() -> None:
    engine = TriggerEngine([all_of_rule()])
    first = make_event("a", "x", eid="id-a", t=5)
    assert engine.state_keys(first) == [state_key("r", None)]
    result = engine.evaluate(first, {})
    assert result.actions == []
    (text,) = result.state_updates.values()
    assert text is not None
    assert json.loads(text)["events"]["a"]["event_id"] == "id-a"


def test_all_of_state_round_trips_through_text_and_a_new_engine() -> None:
    rules = [all_of_rule()]
    _, state = run(TriggerEngine(rules), [make_event("a", eid="id-a"), make_event("b", eid="id-b")])
    assert all(isinstance(v, str) for v in state.values())
    # as after a restart: a fresh engine, the state read back as text
    actions, state = run(TriggerEngine(rules), [make_event("c", eid="id-c")], state)
    assert [a.event_ids for a in actions] == [("id-a", "id-b", "id-c")]
    assert state == {}


def test_all_of_task_rule_keeps_one_set_per_execution() -> None:
    engine = TriggerEngine([all_of_rule(**TASK)])
    events = [
        make_event("a", ctx="x", eid="xa"),
        make_event("b", ctx="y", eid="yb"),
        make_event("b", ctx="x", eid="xb"),
        make_event("c", ctx=None, eid="nc"),  # no execution: ignored by a task rule
        make_event("a", ctx="y", eid="ya"),
        make_event("c", ctx="y", eid="yc"),
        make_event("c", ctx="x", eid="xc"),
    ]
    actions, state = run(engine, events)
    assert [(a.context, a.event_ids) for a in actions] == [
        ("y", ("ya", "yb", "yc")),
        ("x", ("xa", "xb", "xc")),
    ]
    assert actions[0].payload["context"] == "y"
    assert state == {}


def test_all_of_task_rule_state_key_names_the_execution() -> None:
    engine = TriggerEngine([all_of_rule(**TASK)])
    context = 'exec "1"/é'
    assert engine.state_keys(make_event("a", ctx=context)) == [state_key("r", context)]
    assert engine.state_keys(make_event("a", ctx=None)) == []
    assert state_key("r", context) != state_key("r", None)


def test_all_of_workflow_rule_joins_events_of_any_context() -> None:
    engine = TriggerEngine([all_of_rule()])
    events = [
        make_event("a", ctx="x", eid="xa"),
        make_event("b", ctx=None, eid="nb"),
        make_event("c", ctx="y", eid="yc"),
    ]
    actions, _ = run(engine, events)
    assert [(a.context, a.event_ids) for a in actions] == [(None, ("xa", "nb", "yc"))]
    assert actions[0].payload["events"]["a"]["context"] == "x"


@pytest.mark.parametrize(("policy", "expected"), [("latest", "a2"), ("first", "a1")])
def test_all_of_policy_chooses_the_kept_event(policy: str, expected: str) -> None:
    engine = TriggerEngine([all_of_rule(policy)])
    events = [
        make_event("a", eid="a1", t=1),
        make_event("a", eid="a2", t=2),
        make_event("b", eid="b1", t=3),
        make_event("c", eid="c1", t=4),
    ]
    actions, _ = run(engine, events)
    assert [a.event_ids for a in actions] == [(expected, "b1", "c1")]


@pytest.mark.parametrize(("policy", "expected"), [("latest", "a-new"), ("first", "a-old")])
def test_all_of_policy_goes_by_create_time_not_arrival(policy: str, expected: str) -> None:
    engine = TriggerEngine([all_of_rule(policy)])
    events = [
        make_event("a", eid="a-new", t=20),
        make_event("a", eid="a-old", t=10),  # arrives later, was created earlier
        make_event("b", eid="b", t=30),
        make_event("c", eid="c", t=30),
    ]
    actions, _ = run(engine, events)
    assert [a.event_ids[0] for a in actions] == [expected]


@pytest.mark.parametrize(("policy", "expected"), [("latest", "a2"), ("first", "a1")])
def test_all_of_policy_ties_go_by_arrival(policy: str, expected: str) -> None:
    engine = TriggerEngine([all_of_rule(policy)])
    events = [make_event("a", eid="a1", t=5), make_event("a", eid="a2", t=5)]
    events += [make_event("b", eid="b", t=5), make_event("c", eid="c", t=5)]
    actions, _ = run(engine, events)
    assert [a.event_ids[0] for a in actions] == [expected]


def test_all_of_window_drops_old_events() -> None:
    engine = TriggerEngine([all_of_rule(window=10)])  # seconds; create_time is in ms
    events = [
        make_event("a", eid="a-old", t=1_000),  # create_time 0 would mean "now"
        make_event("b", eid="b", t=6_000),
        make_event("c", eid="c", t=11_001),  # a-old is now 10.001 s older: dropped
    ]
    actions, state = run(engine, events)
    assert actions == []
    (text,) = state.values()
    assert sorted(json.loads(text)["events"]) == ["b", "c"]
    actions, _ = run(engine, [make_event("a", eid="a-new", t=12_000)], state)
    assert [a.event_ids for a in actions] == [("a-new", "b", "c")]


def test_all_of_window_is_inclusive() -> None:
    engine = TriggerEngine([all_of_rule(window=10)])
    events = [make_event("a", t=1_000), make_event("b", t=6_000), make_event("c", t=11_000)]
    actions, _ = run(engine, events)
    assert len(actions) == 1


def test_all_of_window_refuses_a_late_arrival() -> None:
    engine = TriggerEngine([all_of_rule(window=1)])
    events = [
        make_event("a", t=10_000),
        make_event("b", t=10_000),
        make_event("c", eid="late", t=8_000),  # 2 s older than the newest: not taken
    ]
    actions, state = run(engine, events)
    assert actions == []
    (text,) = state.values()
    assert sorted(json.loads(text)["events"]) == ["a", "b"]


def test_all_of_with_value_condition_counts_matching_events_only() -> None:
    engine = TriggerEngine(
        [make_rule(all_of={"keys": ["a", "b"], "policy": "first"}, value={"equals": "ok"})]
    )
    actions, _ = run(engine, [make_event("a", "ok"), make_event("b", "no")])
    assert actions == []
    actions, _ = run(engine, [make_event("a", "ok"), make_event("b", "ok")])
    assert len(actions) == 1


def test_all_of_glob_key_fills_its_slot() -> None:
    engine = TriggerEngine([make_rule(all_of={"keys": ["order-*", "payment"], "policy": "latest"})])
    actions, _ = run(engine, [make_event("order-7", eid="o"), make_event("payment", eid="p")])
    assert [(a.event_ids, sorted(a.payload["events"])) for a in actions] == [
        (("o", "p"), ["order-*", "payment"])
    ]


@pytest.mark.parametrize(
    "stored",
    ["not json", "[]", '{"v": 99, "events": {}}', '{"v": 1, "events": {"a": "bad"}}', "null"],
)
def test_unreadable_state_counts_as_empty_and_is_rewritten(stored: str) -> None:
    engine = TriggerEngine([all_of_rule()])
    event = make_event("b", eid="id-b")
    (key,) = engine.state_keys(event)
    result = engine.evaluate(event, {key: stored})
    assert result.actions == []
    text = result.state_updates[key]
    assert text is not None
    assert list(json.loads(text)["events"]) == ["b"]


def test_state_of_keys_no_longer_in_the_rule_is_trimmed() -> None:
    old = TriggerEngine([make_rule(all_of={"keys": ["a", "x"], "policy": "latest"})])
    _, state = run(old, [make_event("a", eid="id-a")])
    ((key, text),) = state.items()
    stored = json.loads(text)
    stored["events"]["x"] = {**stored["events"]["a"], "event_id": "id-x", "key": "x"}
    # the rule (same name) now waits for a, b, c: the x event no longer belongs to it
    actions, state = run(
        TriggerEngine([all_of_rule()]), [make_event("b")], {key: json.dumps(stored)}
    )
    assert actions == []
    assert sorted(json.loads(state[key])["events"]) == ["a", "b"]


def test_missing_state_key_counts_as_no_state() -> None:
    engine = TriggerEngine([all_of_rule()])
    result = engine.evaluate(make_event("a"), {})
    assert list(result.state_updates) == [state_key("r", None)]


# -- which engines read rule state ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "reads"),
    [
        (
            [
                make_rule(),
                make_rule(name="g", key="k*", value={"json": [{"path": "x", "equals": 1}]}),
            ],
            False,
        ),
        ([make_rule(), all_of_rule(name="set")], True),
        ([make_rule(name="d", debounce={"quiet": 10})], True),
        (
            [
                make_rule(
                    name="j",
                    all_of={"keys": ["a", "b"], "window": 60, "policy": "latest"},
                    correlate={"json": "id"},
                )
            ],
            True,
        ),
        ([], False),
    ],
)
def test_an_engine_says_whether_it_reads_rule_state(rules: list[Any], reads: bool) -> None:
    engine = TriggerEngine(rules)
    assert engine.reads_state() is reads
    events = [make_event(k, '{"x": 1, "id": 7}', ctx="c") for k in ("k", "a", "b", "kx")]
    if not reads:  # what lets the pipeline skip asking: no event names a row
        assert all(engine.state_keys(e) == [] for e in events)
    else:
        assert any(engine.state_keys(e) for e in events)


# -- glob matches remembered per key --------------------------------------------------------


def test_a_remembered_glob_match_still_depends_on_the_event_context() -> None:
    engine = TriggerEngine(
        [make_rule(name="task", key="k-*", **TASK), make_rule(name="wf", key="k-*")]
    )
    for ctx in (None, "exec-1", None, "exec-2"):  # the same key, matched once
        actions = engine.evaluate(make_event("k-1", ctx=ctx), {}).actions
        assert [a.rule for a in actions] == (["wf"] if ctx is None else ["task", "wf"])


def test_remembered_glob_matches_are_bounded_and_answer_as_fresh_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("connector.rules.trigger._MATCHED_KEYS", 4)
    rules = [make_rule(name="odd", key="k-*[13579]"), make_rule(name="any", key="k-*")]
    rules.append(make_rule(name="exact", key="k-7"))
    engine = TriggerEngine(rules)
    keys = [f"k-{i}" for i in range(10)] * 3 + ["x-1"]
    for key in keys:
        fresh = TriggerEngine(rules).evaluate(make_event(key), {}).actions
        assert [a.rule for a in engine.evaluate(make_event(key), {}).actions] == [
            a.rule for a in fresh
        ]
        assert len(engine._index["default"].matched) <= 4
    assert [a.rule for a in engine.evaluate(make_event("k-7"), {}).actions] == [
        "odd", "any", "exact",
    ]  # fmt: skip
