"""A JSON value travels as JSON: an action carries a JSON object or array as itself, so a
receiver decodes once; everything else stays text (kec.evaluation.event_value)."""

from __future__ import annotations

import json
import tracemalloc

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


@pytest.mark.parametrize("pad", [10, 4_000])
def test_a_cached_payload_holds_its_own_size_not_the_writers_buffer(pad: int) -> None:
    """Actions wait in the outbox holding their payload's JSON: orjson's output buffer
    (at least 4 KiB, 8x a 4 KB text) would be what each holds (kec.jsontext.owned)."""
    actions = [
        a
        for i in range(200)
        for a in NotifyAll()
        .evaluate(Event(key="k", value=json.dumps({"i": i, "p": "x" * pad})), {})
        .actions
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        texts = [a.payload_json() for a in actions]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    written = sum(map(len, texts))
    assert held < written + 100 * len(texts), (held, written)
