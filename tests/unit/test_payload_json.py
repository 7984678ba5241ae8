"""A JSON value travels as JSON: an action carries a JSON object or array as itself, so a
receiver decodes once; everything else stays text (kec.evaluation.event_value)."""

from __future__ import annotations

import json

import pytest

from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from connector.targets.log import action_line
from kec.evaluation import NotifyAll, event_value
from kec.event import Event


@pytest.mark.parametrize(
    ("value", "carried"),
    [
        ('{"order": 1, "items": [{"sku": "a"}]}', {"order": 1, "items": [{"sku": "a"}]}),
        (" [1, 2]", [1, 2]),
        ('{"big": 123456789012345678901234567890}', {"big": 123456789012345678901234567890}),
        ("123", "123"),  # a scalar stays text: "123" may well be an id
        ('"quoted"', '"quoted"'),
        ("plain text", "plain text"),
        ('{"broken": ', '{"broken": '),
        ('{"n": NaN}', '{"n": NaN}'),  # not JSON to a receiver
        ("[" * 100 + "]" * 100, "[" * 100 + "]" * 100),  # too deep: text
    ],
)
def test_what_travels_as_json(value: str, carried: object) -> None:
    assert event_value(Event(key="k", value=value)) == carried


def test_binary_stays_text() -> None:
    assert event_value(Event(key="k", value=b'{"a": 1}')) == '{"a": 1}'


def test_every_action_carries_the_document() -> None:
    event = Event(key="order", value='{"total": 12}', namespace="shop", context="c1")
    rules = [
        Rule.model_validate(
            {"name": "n", "namespace": "shop", "key": "order", "action": "notify"}
        ),
        Rule.model_validate(
            {"name": "j", "namespace": "shop", "action": "START", "workflow": "w", "task": "t",
             "all_of": {"keys": ["order", "paid"], "policy": "first"}}
        ),
    ]  # fmt: skip
    engine = TriggerEngine(rules)
    first = engine.evaluate(event, {})
    assert first.actions[0].payload["value"] == {"total": 12}
    paid = Event(key="paid", value='{"amount": 12}', namespace="shop", context="c1")
    (joined,) = engine.evaluate(paid, dict(first.state_updates)).actions
    assert joined.payload["events"]["order"]["value"] == {"total": 12}
    assert joined.payload["events"]["paid"]["value"] == {"amount": 12}
    (notified,) = NotifyAll().evaluate(event, {}).actions
    line = json.loads(action_line(notified))
    assert line["payload"]["value"] == {"total": 12}
