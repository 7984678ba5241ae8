"""``event-connector explain``: each rule's verdict for an event, and the first reason
a rule would not fire (connector.rules.explain), checked against the engine itself."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from connector.cli import cli
from connector.rules import Rule
from connector.rules.explain import FIRES, NO, WAITS, explain
from connector.rules.limits import MatchLimits
from connector.rules.trigger import TriggerEngine
from kec.event import Event

RULES = [
    Rule.model_validate(r)
    for r in (
        {"name": "orders", "namespace": "shop", "key": "order-*", "action": "start",
         "workflow": "wf", "value": {"json": [{"path": "total", "gt": 10}]}},
        {"name": "task", "namespace": "shop", "key": "order-created", "action": "START",
         "workflow": "wf", "task": "t", "context": "exec-*"},
        {"name": "join", "namespace": "shop", "action": "notify",
         "all_of": {"keys": ["order-created", "paid"], "window": 60, "policy": "first"}},
        {"name": "elsewhere", "namespace": "other", "key": "order-created", "action": "notify"},
        {"name": "text", "namespace": "shop", "key": "order-created", "action": "notify",
         "value": {"regex": "^urgent"}},
    )
]  # fmt: skip


def _verdicts(event: Event) -> dict[str, tuple[str, str]]:
    return {v.rule: (v.verdict, v.reason) for v in explain(RULES, event)}


def test_each_rule_says_whether_it_fires_and_why_not() -> None:
    event = Event(key="order-created", value='{"total": 5}', namespace="shop", context="exec-1")
    found = _verdicts(event)
    assert found["orders"] == (NO, "condition not met: json total: gt 10.0")
    assert found["task"] == (FIRES, "every condition holds")
    assert found["join"][0] == WAITS and "'paid'" in found["join"][1]
    assert found["join"][1].endswith("within 60s")
    assert found["elsewhere"] == (NO, "namespace 'other'; the event's is 'shop'")
    assert found["text"] == (NO, "condition not met: value regex '^urgent'")


def test_context_and_key_reasons() -> None:
    found = _verdicts(Event(key="order-created", value="{}", namespace="shop"))
    assert found["task"][0] == NO and "has no context" in found["task"][1]
    found = _verdicts(Event(key="order-created", value="{}", namespace="shop", context="x"))
    assert found["task"] == (NO, "context 'x' does not match 'exec-*'")
    found = _verdicts(Event(key="refund", value="{}", namespace="shop"))
    assert found["orders"] == (NO, "key 'refund' does not match the key 'order-*'")
    assert found["join"][1] == "key 'refund' does not match any of the keys 'order-created', 'paid'"


def test_a_value_over_the_limit_fails_every_condition() -> None:
    event = Event(key="order-1", value='{"total": 50}', namespace="shop")
    (verdict,) = explain(RULES[:1], event, MatchLimits(max_value_length=5))
    assert verdict.verdict == NO and "over the limit of 5" in verdict.reason


def test_the_verdicts_agree_with_the_engine() -> None:
    engine = TriggerEngine(RULES)
    for key in ("order-created", "order-9", "paid", "refund"):
        for value in ('{"total": 50}', '{"total": 1}', "urgent: yes", "not json"):
            for context in (None, "exec-2", "other"):
                event = Event(key=key, value=value, namespace="shop", context=context)
                fired = {a.rule for a in engine.evaluate(event, {}).actions}
                said = {v.rule for v in explain(RULES, event) if v.verdict == FIRES}
                assert said == fired, (key, value, context)


def test_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 'localhost:1'}\n"
        "namespaces: {shop: {}}\n"
        "rules:\n"
        "  - {name: big, namespace: shop, key: order, action: notify,"
        " value: {json: [{path: total, gt: 10}]}}\n"
    )
    runner = CliRunner()
    shown = runner.invoke(cli, ["explain", "-c", str(config), "order", '{"total": 12}'])
    assert shown.exit_code == 0, shown.output
    assert "big" in shown.output and "fires" in shown.output
    assert "1 action for key 'order' in namespace 'shop'" in shown.output
    as_json = runner.invoke(cli, ["explain", "-c", str(config), "order", "{}", "--json"])
    (line,) = as_json.output.splitlines()
    assert json.loads(line)["verdict"] == NO
    wrong = runner.invoke(cli, ["explain", "-c", str(config), "order", "--namespace", "x"])
    assert wrong.exit_code == 2 and "not a namespace" in wrong.output


def test_version() -> None:
    shown = CliRunner().invoke(cli, ["--version"])
    assert shown.exit_code == 0
    assert shown.output.startswith("event-connector 0.")


def test_sequences_and_correlation_values_are_explained() -> None:
    rules = [
        Rule.model_validate(
            {"name": "paid-then-shipped", "namespace": "orders", "action": "notify",
             "sequence": {"keys": ["payment", "shipment"], "window": 3600},
             "correlate": {"json": "order.id"}}
        ),
        Rule.model_validate(
            {"name": "ship", "namespace": "orders", "action": "start", "workflow": "ship",
             "all_of": {"keys": ["payment", "shipment"], "window": 600, "policy": "latest"},
             "correlate": {"json": "order.id", "ttl": 86400}}
        ),
    ]  # fmt: skip

    def verdicts(key: str, value: str) -> dict[str, tuple[str, str]]:
        event = Event(key=key, value=value, namespace="orders")
        return {v.rule: (v.verdict, v.reason) for v in explain(rules, event)}

    first = verdicts("payment", '{"order": {"id": 7}}')
    assert first["paid-then-shipped"] == (
        WAITS,
        "takes 'payment' as step 1 of its sequence for json:order.id '7'; fires once "
        "'shipment' follow(s) in event time, within 3600s",
    )
    assert first["ship"][0] == WAITS and "for json:order.id '7'" in first["ship"][1]
    last = verdicts("shipment", '{"order": {"id": 7}}')
    assert last["paid-then-shipped"][1].endswith("'payment' came before it in event time, "
                                                  "within 3600s")  # fmt: skip
    for verdict, reason in verdicts("payment", '{"no": "order"}').values():
        assert verdict == NO and "carries no correlation value (json:order.id)" in reason
    # The verdicts agree with the engine: a lone step makes no action.
    event = Event(key="payment", value='{"order": {"id": 7}}', namespace="orders")
    assert TriggerEngine(rules).evaluate(event, {}).actions == []


def test_time_driven_rules_wait_and_say_for_what(tmp_path: Path) -> None:
    rules = [
        Rule.model_validate(
            {"name": "reprice", "namespace": "shop", "key": "item-*", "action": "start",
             "workflow": "reprice", "debounce": {"quiet": 10}}
        ),
        Rule.model_validate(
            {"name": "load", "namespace": "shop", "key": "row-*", "action": "start",
             "workflow": "load", "batch": {"size": 100, "within": 30}}
        ),
        Rule.model_validate(
            {"name": "unpaid", "namespace": "shop", "key": "order-created", "action": "start",
             "workflow": "remind", "absence": {"then": "order-paid", "within": 900,
                                               "by": "value.order"}}
        ),
    ]  # fmt: skip

    def verdict(key: str, value: str, rule: str) -> tuple[str, str]:
        event = Event(key=key, value=value, namespace="shop")
        (found,) = [v for v in explain(rules, event) if v.rule == rule]
        return found.verdict, found.reason

    assert verdict("item-1", "{}", "reprice") == (
        WAITS,
        "joins the burst of its key; fires once no event of it comes for 10s of event "
        "time, carrying the burst's last event",
    )
    assert verdict("row-1", "{}", "load")[1].startswith("joins the partition's batch; fires at "
                                                         "100 events or 30s")  # fmt: skip
    assert verdict("order-created", '{"order": 5}', "unpaid")[0] == WAITS
    assert verdict("order-created", '{"v": 1}', "unpaid") == (
        NO,
        "the event has no value.order (the rule's group): it does not count",
    )
    # As the engine: none of them makes an action for its first event.
    for key, value in (("item-1", "{}"), ("row-1", "{}"), ("order-created", '{"order": 5}')):
        event = Event(key=key, value=value, namespace="shop")
        assert TriggerEngine(rules).evaluate(event, {}).actions == []
