"""Action: deterministic ids and a lossless dict/JSON form."""

from __future__ import annotations

import json
from dataclasses import fields

from kec.action import Action, ActionKind, action_id


def _action(**overrides: object) -> Action:
    base: dict[str, object] = {
        "rule": "start-task2",
        "kind": ActionKind.START_TASK,
        "target": "log",
        "namespace": "default",
        "event_ids": ("e1", "e2"),
        "event_key": "key",
        "workflow": "workflow",
        "task": "task2",
        "context": "exec-1",
        "payload": {"value": "x", "nested": {"n": 1}},
    }
    base.update(overrides)
    return Action(**base)  # type: ignore[arg-type]


def test_id_depends_on_rule_and_event_ids_only() -> None:
    a = _action()
    assert a.action_id == action_id("start-task2", ("e1", "e2"))
    assert _action(target="other", payload={}).action_id == a.action_id
    assert _action(rule="other").action_id != a.action_id
    assert _action(event_ids=("e2", "e1")).action_id != a.action_id


def test_dict_form_has_every_field_and_round_trips() -> None:
    a = _action()
    data = a.to_dict()
    assert set(data) == {f.name for f in fields(Action)}
    assert data["kind"] == "START" and data["event_ids"] == ["e1", "e2"]
    assert Action.from_dict(data) == a
    assert Action.from_json(a.to_json()) == a


def test_json_form_is_compact_with_every_objects_keys_sorted() -> None:
    a = _action(payload={"z": {"b": 1, "a": "\u00e9\U0001f600"}, "value": 2.5})
    text = a.to_json()
    assert json.loads(text) == json.loads(json.dumps(a.to_dict(), sort_keys=True))
    assert text.startswith('{"action_id":') and ", " not in text and '": ' not in text
    assert '"payload":{"value":2.5,"z":{"a":"\u00e9\U0001f600","b":1}}' in text
    assert Action.from_json(text.encode()) == a


def test_dict_form_does_not_share_the_payload() -> None:
    a = _action()
    a.to_dict()["payload"]["value"] = "changed"
    assert a.payload["value"] == "x"
