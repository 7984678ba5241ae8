"""Action: deterministic ids and a lossless dict/JSON form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kec import jsontext
from kec.action import Action, ActionKind, action_id, rule_action
from kec.evaluation import event_payload
from kec.event import Event


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


_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(st.lists(st.tuples(_names, st.lists(_names, min_size=1, max_size=3)), max_size=12))
def test_id_is_blake2b_of_the_rule_and_ids_nul_separated(
    calls: list[tuple[str, list[str]]],
) -> None:
    """The documented formula, whatever the per-rule hashes kept (a small cache: cleared
    between calls too)."""
    for rule, ids in calls:
        expected = hashlib.blake2b("\x00".join([rule, *ids]).encode(), digest_size=16)
        assert action_id(rule, tuple(ids)) == expected.hexdigest()


def test_id_of_many_rules_past_the_kept_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kec.action._RULE_PREFIXES", 3)
    monkeypatch.setattr("kec.action._rule_prefixes", {})
    for n in range(10):
        rule = f"rule-{n % 5}"
        expected = hashlib.blake2b(f"{rule}\x00e{n}".encode(), digest_size=16).hexdigest()
        assert action_id(rule, (f"e{n}",)) == expected


def test_dict_form_has_every_field_and_round_trips() -> None:
    a = _action()
    data = a.to_dict()
    # Every field of the action's value (not the cache of its payload's JSON).
    assert set(data) == {f.name for f in fields(Action) if f.compare}
    assert data["kind"] == "START" and data["event_ids"] == ["e1", "e2"]
    assert Action.from_dict(data) == a
    assert Action.from_json(a.to_json()) == a


def test_json_form_writes_the_payload_once_and_the_same_with_or_without_it() -> None:
    a = _action(payload={"b": [1.5, None], "a": {"z": 1, "y": "\u00e9"}})
    first = a.to_json_bytes()
    assert a.payload_json() == b'{"a":{"y":"\xc3\xa9","z":1},"b":[1.5,null]}'
    assert a.to_json_bytes() == first and a.to_json() == first.decode()
    assert json.loads(first) == {**a.to_dict(), "payload": a.payload}
    # A copy with another payload does not keep the first one's JSON.
    other = dataclasses.replace(a, payload={"c": 2})
    assert json.loads(other.to_json())["payload"] == {"c": 2}


def test_json_form_of_a_payload_json_cannot_write_is_still_read_back() -> None:
    # NaN (orjson would write null) and an integer past 64 bits: json writes the payload.
    a = _action(payload={"n": float("nan"), "big": 2**70})
    back = json.loads(a.to_json())["payload"]
    assert back["big"] == 2**70 and back["n"] != back["n"]
    # A lone surrogate in the key: the whole action is written by json.
    b = _action(event_key="k\ud800")
    assert json.loads(b.to_json())["event_key"] == "k\ud800"


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


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=15,
)


@given(_json_values, st.sampled_from([None, "billing"]))
def test_an_event_payload_vouched_finite_is_written_as_one_looked_at(
    value: object, sender: str | None
) -> None:
    """What the rules vouch for (an event's payload: its floats come from a parsed
    document, never NaN) is written as it would be had the floats been looked at."""
    event = Event(key="k", value=json.dumps(value), sender=sender, topic="t", partition=0,
                  offset=7)  # fmt: skip
    payload = event_payload(event)
    vouched = _action(payload=payload, finite=True).payload_json()
    assert vouched == _action(payload=dict(payload)).payload_json()
    assert json.loads(vouched) == json.loads(json.dumps(payload))


def test_a_vouched_payload_is_not_looked_at_and_a_copy_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walked: list[object] = []
    real = jsontext.finite
    monkeypatch.setattr(jsontext, "finite", lambda obj: walked.append(obj) or real(obj))
    vouched = _action(payload={"v": [1.5, None]}, finite=True)
    assert vouched.payload_json() == b'{"v":[1.5,null]}' and walked == []
    # A copy made by dataclasses.replace is not vouched for: its NaN is kept.
    copy = dataclasses.replace(vouched, payload={"v": [float("nan"), None]})
    assert json.loads(copy.payload_json())["v"][0] != json.loads(copy.payload_json())["v"][0]
    assert walked


@given(
    st.booleans(),
    st.sampled_from([None, "wf-1"]),
    st.lists(st.text(max_size=5), min_size=1, max_size=3),
)
def test_an_action_the_rules_build_is_the_action_the_constructor_builds(
    finite: bool, context: str | None, ids: list[str]
) -> None:
    args = ("r", ActionKind.START_TASK, "t", "ns", tuple(ids), "k", "wf", "task", context,
            {"v": [1.5, None]})  # fmt: skip
    fast = rule_action(*args, finite)
    slow = Action(*args, finite=finite)
    assert type(fast) is Action and fast == slow
    assert fast.action_id == slow.action_id == action_id("r", tuple(ids))
    assert fast._finite is slow._finite is finite
    assert fast.payload_json() == slow.payload_json()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.rule = "other"  # type: ignore[misc]
    assert Action.from_json(fast.to_json()) == fast
