"""Correlation rules: ``correlate`` (a business key from the value, a header or the
context) on ``all_of`` and ``sequence``; the models' errors and the engine's behaviour on
chosen cases. Properties over generated streams are in test_correlation_properties.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from connector.rules import Rule
from connector.rules.join import MAX_PENDING, correlation_text
from connector.rules.trigger import TriggerEngine
from connector.targets.engine import workflow_input
from kec.action import action_id
from kec.event import Event
from tests.unit.trigger_helpers import run

T0 = 1_700_000_000_000


def rule(**fields: Any) -> Rule:
    data: dict[str, Any] = {"name": "join", "action": "start", "workflow": "ship"}
    data.update(fields)
    return Rule.model_validate(data)


JOIN = rule(
    all_of={"keys": ["payment", "shipment"], "window": 600, "policy": "latest"},
    correlate={"json": "order.id"},
)


def ev(
    key: str,
    order: object,
    t: int = 0,
    *,
    eid: str | None = None,
    ctx: str | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Event:
    value = json.dumps({"order": {"id": order}}) if order is not None else "{}"
    return Event(
        key=key,
        value=value,
        context=ctx,
        create_time=T0 + t * 1000,
        event_id=eid or f"{key}-{order}-{t}",
        headers=headers,
    )


# -- models --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key": "k", "correlate": {"json": "id"}}, "`correlate` needs `all_of` or `sequence`"),
        (
            {"all_of": {"keys": ["a", "b"], "policy": "latest"}, "correlate": {"json": "id"}},
            "needs `window` or `correlate.ttl`",
        ),
        (
            {"all_of": {"keys": ["a", "b"], "window": 5, "policy": "latest"}, "correlate": {}},
            "exactly one of json, header, context",
        ),
        (
            {
                "all_of": {"keys": ["a", "b"], "window": 5, "policy": "latest"},
                "correlate": {"json": "id", "header": "h"},
            },
            "exactly one of json, header, context (got json, header)",
        ),
        (
            {
                "all_of": {"keys": ["a", "b"], "window": 5, "policy": "latest"},
                "correlate": {"context": False},
            },
            "`context: false` is no source",
        ),
        ({"all_of": None, "sequence": {"keys": ["a"], "window": 5}}, "at least 2"),
        ({"sequence": {"keys": ["a", "a"], "window": 5}}, "keys repeated: a"),
        ({"sequence": {"keys": ["a", "b"]}}, "window"),
        ({"key": "k", "sequence": {"keys": ["a", "b"], "window": 5}}, "not key and sequence"),
        (
            {
                "all_of": {"keys": ["a", "b"], "policy": "latest"},
                "sequence": {"keys": ["a", "b"], "window": 5},
            },
            "not all_of and sequence",
        ),
        (
            {
                "all_of": {"keys": ["a", "b"], "window": 5, "policy": "latest"},
                "correlate": {"json": "a..b"},
            },
            "empty segment",
        ),
    ],
)
def test_bad_correlation_rules_are_refused_with_the_reason(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rule(**fields)


def test_a_sequence_rule_listens_to_its_keys_and_dumps_back_to_an_equal_rule() -> None:
    r = rule(sequence={"keys": ["a", "b*"], "window": 60}, correlate={"header": "sid"})
    assert r.patterns == ("a", "b*")
    assert Rule.model_validate(r.model_dump(by_alias=True)) == r


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("42", "42"),
        (42, "42"),
        (42.0, "42"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
        (float("nan"), None),
    ],
)
def test_correlation_values_compare_as_text(value: object, text: str | None) -> None:
    assert correlation_text(value) == text


# -- correlated all_of -------------------------------------------------------------------


def test_payment_and_shipment_of_one_order_fire_once_and_orders_never_meet() -> None:
    engine = TriggerEngine([JOIN])
    events = [ev("payment", 42, 0), ev("payment", 43, 1), ev("shipment", 43, 2),
              ev("shipment", "42", 3)]  # fmt: skip
    actions, state = run(engine, events)
    assert [(a.payload["correlation"], a.event_ids) for a in actions] == [
        ("43", ("payment-43-1", "shipment-43-2")),
        ("42", ("payment-42-0", "shipment-42-3")),
    ]
    assert actions[0].action_id == action_id("join", ("payment-43-1", "shipment-43-2"))
    assert state == {}  # complete sets are deleted


def test_an_event_without_the_correlation_value_does_not_count() -> None:
    engine = TriggerEngine([JOIN])
    assert engine.state_keys(ev("payment", None)) == []
    actions, state = run(engine, [ev("payment", None), ev("payment", [1]), ev("shipment", 7)])
    assert actions == []
    assert len(state) == 1  # only order 7's set


def test_header_and_context_sources() -> None:
    by_header = rule(
        name="h",
        all_of={"keys": ["a", "b"], "window": 60, "policy": "first"},
        correlate={"header": "order-id"},
    )
    by_context = rule(
        name="c", all_of={"keys": ["a", "b"], "window": 60, "policy": "first"},
        correlate={"context": True},
    )  # fmt: skip
    engine = TriggerEngine([by_header, by_context])
    events = [
        ev("a", 1, 0, eid="a1", ctx="wf-1", headers=(("order-id", b"9"),)),
        ev("b", 1, 1, eid="b1", ctx="wf-2", headers=(("order-id", b"9"),)),
        ev("b", 1, 2, eid="b2", ctx="wf-1", headers=(("order-id", b"\xff"),)),
    ]
    actions, _ = run(engine, events)
    assert [(a.rule, a.payload["correlation"], a.event_ids) for a in actions] == [
        ("h", "9", ("a1", "b1")),
        ("c", "wf-1", ("a1", "b2")),
    ]


def test_window_drops_old_members_and_ttl_starts_a_stale_set_over() -> None:
    windowed = TriggerEngine([JOIN])
    actions, _ = run(windowed, [ev("payment", 1, 0), ev("shipment", 1, 601)])
    assert actions == []
    ttl = rule(
        all_of={"keys": ["payment", "shipment"], "policy": "latest"},
        correlate={"json": "order.id", "ttl": 100},
    )
    engine = TriggerEngine([ttl])
    # the set opened at 0 outlives its TTL at 150 even though payments kept it fresh
    events = [ev("payment", 1, 0), ev("payment", 1, 90), ev("shipment", 1, 150)]
    actions, state = run(engine, events)
    assert actions == []
    (row,) = state.values()
    assert json.loads(row)["opened"] == T0 + 150_000
    # a late event older than the newest member by more than the TTL is not taken
    actions, state2 = run(engine, [ev("payment", 1, -200)], state)
    assert actions == [] and state2 == state


def test_expiry_is_the_earlier_of_window_and_ttl() -> None:
    r = rule(
        all_of={"keys": ["payment", "shipment"], "window": 600, "policy": "latest"},
        correlate={"json": "order.id", "ttl": 100},
    )
    engine = TriggerEngine([r])
    event = ev("payment", 5, 10)
    result = engine.evaluate(event, {})
    (key,) = result.state_updates
    assert result.state_expiry[key] == (T0 + 10_000 + 100_000) / 1000


def test_a_duplicate_of_a_held_event_changes_nothing() -> None:
    engine = TriggerEngine([JOIN])
    first = ev("payment", 1, 0)
    _, state = run(engine, [first])
    again = engine.evaluate(first, {k: state.get(k) for k in engine.state_keys(first)})
    assert not again.actions and not again.state_updates


def test_a_task_rule_keeps_sets_per_context_and_value() -> None:
    r = rule(
        action="START", task="pack",
        all_of={"keys": ["payment", "shipment"], "window": 60, "policy": "latest"},
        correlate={"json": "order.id"},
    )  # fmt: skip
    engine = TriggerEngine([r])
    events = [ev("payment", 1, 0, ctx="x"), ev("shipment", 1, 1, ctx="y"),
              ev("shipment", 1, 2, ctx="x")]  # fmt: skip
    actions, _ = run(engine, events)
    assert [(a.context, a.event_ids) for a in actions] == [("x", ("payment-1-0", "shipment-1-2"))]


# -- sequences ---------------------------------------------------------------------------

SEQ = rule(
    name="funnel", action="notify", workflow=None,
    sequence={"keys": ["cart", "checkout", "paid"], "window": 900},
    correlate={"json": "order.id"},
)  # fmt: skip


def test_a_then_b_then_c_fires_once_in_event_time_order_whatever_the_read_order() -> None:
    engine = TriggerEngine([SEQ])
    # read out of order (a lagging partition): paid, cart, checkout; happened in order
    events = [ev("paid", 1, 30), ev("cart", 1, 10), ev("checkout", 1, 20)]
    actions, state = run(engine, events)
    assert [a.event_ids for a in actions] == [("cart-1-10", "checkout-1-20", "paid-1-30")]
    assert list(actions[0].payload["events"]) == ["cart", "checkout", "paid"]
    assert state == {}


def test_out_of_order_in_event_time_does_not_fire() -> None:
    engine = TriggerEngine([SEQ])
    actions, state = run(engine, [ev("checkout", 1, 5), ev("cart", 1, 10), ev("paid", 1, 30)])
    assert actions == []
    assert len(state) == 1


def test_a_sequence_must_complete_within_its_window() -> None:
    engine = TriggerEngine([SEQ])
    actions, _ = run(engine, [ev("cart", 1, 0), ev("checkout", 1, 500), ev("paid", 1, 901)])
    assert actions == []
    actions, _ = run(engine, [ev("cart", 2, 0), ev("checkout", 2, 500), ev("paid", 2, 900)])
    assert len(actions) == 1


def test_the_earliest_chain_fires_and_the_others_wait() -> None:
    engine = TriggerEngine([SEQ])
    events = [ev("cart", 1, 0), ev("cart", 1, 5), ev("checkout", 1, 6), ev("paid", 1, 7),
              ev("checkout", 1, 8), ev("paid", 1, 9)]  # fmt: skip
    actions, _ = run(engine, events)
    assert [a.event_ids for a in actions] == [
        ("cart-1-0", "checkout-1-6", "paid-1-7"),
        ("cart-1-5", "checkout-1-8", "paid-1-9"),
    ]


def test_a_step_keeps_at_most_max_pending_events() -> None:
    engine = TriggerEngine([SEQ])
    events = [ev("cart", 1, i) for i in range(MAX_PENDING + 5)]
    _, state = run(engine, events)
    (row,) = state.values()
    assert len(json.loads(row)["steps"][0]) == MAX_PENDING


def test_a_sequence_without_correlate_is_one_per_rule() -> None:
    r = rule(name="s", sequence={"keys": ["a", "b"], "window": 60})
    engine = TriggerEngine([r])
    actions, _ = run(engine, [ev("a", 1, 0), ev("b", 2, 1)])
    assert [a.payload["correlation"] for a in actions] == [None]


def test_the_joined_events_reach_a_workflow_engine_as_its_input() -> None:
    engine = TriggerEngine([JOIN])
    actions, _ = run(engine, [ev("payment", 42, 0), ev("shipment", 42, 1)])
    doc = workflow_input(actions[0])
    assert doc["event_ids"] == ["payment-42-0", "shipment-42-1"]
    assert doc["event"]["correlation"] == "42"
    assert doc["event"]["events"]["payment"]["value"] == {"order": {"id": 42}}


def test_the_python_api_builds_the_same_correlation_rules() -> None:
    from connector.rules import AllOf, Correlate, KeySequence
    from connector.workflow import Workflow

    wf = Workflow("ship", namespace="orders")
    joined = wf.trigger_on_event(
        all_of=AllOf(keys=("payment", "shipment"), window=600, policy="latest"),
        correlate=Correlate.model_validate({"json": "order.id"}),
    )
    task = wf.task("notify")
    seq = task.action_on_event_received(
        "START",  # type: ignore[arg-type]
        sequence=KeySequence(keys=("cart", "paid"), window=60),
        correlate=Correlate(header="sid"),
    )
    assert joined.name == "ship:start:payment+shipment"
    assert joined.correlate is not None and joined.correlate.source == "json:order.id"
    assert seq.name == "ship:notify:START:cart>paid"
    assert seq.sequence is not None and seq.patterns == ("cart", "paid")
