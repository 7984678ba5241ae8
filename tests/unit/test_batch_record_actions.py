"""A batch record's actions read back as they were written, whichever writer wrote them:
orjson with each payload's JSON embedded (Action.payload_json), or json when orjson
cannot (a lone surrogate) or must not (NaN, integers past 64 bits) write a part."""

from __future__ import annotations

import json
import math

import pytest

from checkpoint.records import decode_actions, encode_actions
from connector.targets.log import action_line
from kec.action import Action, ActionKind


def _action(i: int, **overrides: object) -> Action:
    fields: dict[str, object] = {
        "rule": "r", "kind": ActionKind.NOTIFY, "target": "log", "namespace": "ns",
        "event_ids": (f"t/0/{i}",), "event_key": f"k{i}", "context": None,
        "payload": {"value": {"n": i, "s": "é"}, "offset": i},
    }  # fmt: skip
    fields.update(overrides)
    return Action(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "odd",
    [
        {},  # every part orjson's
        {"payload": {}},  # an empty payload is stored as null
        {"payload": {"big": 2**70, "f": 1.25}},
        {"event_key": "k\ud800"},  # a lone surrogate: json writes the batch
    ],
)
def test_actions_read_back_as_written(odd: dict[str, object]) -> None:
    actions = [_action(0), _action(1, **odd), _action(2)]
    back = decode_actions(encode_actions(actions))
    assert back == actions
    assert [a.action_id for a in back] == [a.action_id for a in actions]


def test_a_payload_with_nan_reads_back_as_nan_not_null() -> None:
    (back,) = decode_actions(encode_actions([_action(0, payload={"x": math.nan})]))
    assert math.isnan(back.payload["x"])


def test_log_line_embeds_the_payload_and_falls_back_for_a_surrogate() -> None:
    plain = json.loads(action_line(_action(3), 1.5))
    assert plain["payload"] == {"value": {"n": 3, "s": "é"}, "offset": 3}
    assert plain["idempotency_key"] == plain["action_id"] and plain["delivered_at"] == 1.5
    odd = action_line(_action(4, event_key="k\ud800"), 2.0)
    assert odd.endswith("\n") and odd.encode()  # UTF-8 safe: the surrogate is escaped
    assert json.loads(odd)["event_key"] == "k\ud800"
