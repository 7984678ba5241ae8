"""The compact record of a batch: its events and its actions as two JSON documents.

A batch is stored as one row, not one row per event: the hot path then costs a constant
number of statements per partition, and JSON lists of plain values encode in C
(:mod:`kec.jsontext`, well under a microsecond an event) and decode with :mod:`json`.
The layouts are part of the schema: change them only with a new schema version.

Event, as a list: ``[offset, id, key, value, namespace, sender, context, event_type,
create_time, headers]`` where ``id`` is the explicit event id or null (the id is then
``topic/partition/offset``), ``value`` a string or ``{"b": base64}`` for bytes, and
``headers`` null or ``[[name, base64], ...]``. Topic and partition are the batch row's.

Action, as a list: ``[action_id, rule, kind, target, namespace, event_ids, event_key,
workflow, task, context, payload]``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from operator import is_
from typing import Any

import orjson

from kec.action import Action, ActionKind
from kec.event import Event, Headers
from kec.jsontext import dumps, dumps_bytes

_loads = json.JSONDecoder().decode
_KINDS = {kind.value: kind for kind in ActionKind}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_headers(headers: Headers) -> list[list[str]] | None:
    return [[k, _b64(v)] for k, v in headers] if headers else None


def decode_headers(data: list[list[str]] | None) -> Headers:
    return tuple((k, base64.b64decode(v)) for k, v in data) if data else ()


def _event_row(e: Event) -> list[Any]:
    value = e.value
    headers = e.headers
    return [
        e.offset,
        e.event_id if e.explicit_id else None,
        e.key,
        value if isinstance(value, str) else {"b": _b64(value)},
        e.namespace,
        e.sender,
        e.context,
        e.event_type,
        e.create_time,
        encode_headers(headers) if headers else None,  # once per event: no call if none
    ]


def encode_events(events: Sequence[Event]) -> bytes:
    # An event row holds no float: nothing to check for NaN.
    return dumps_bytes([_event_row(e) for e in events], floats_in=())


def _event(row: list[Any], topic: str, partition: int) -> Event:
    offset, eid, key, value, ns, sender, context, event_type, ctime, headers = row
    if isinstance(value, dict):
        value = base64.b64decode(value["b"])
    return Event(
        key=key,
        value=value,
        namespace=ns,
        sender=sender,
        context=context,
        event_type=event_type,
        create_time=ctime,
        headers=decode_headers(headers),
        topic=topic,
        partition=partition,
        offset=offset,
        event_id=eid or "",
    )


def decode_events(blob: bytes | memoryview, topic: str, partition: int) -> list[Event]:
    rows = _loads(bytes(blob).decode("utf-8", "surrogatepass"))
    return [_event(row, topic, partition) for row in rows]


def decode_event_ids(blob: bytes | memoryview, topic: str, partition: int) -> list[tuple[int, str]]:
    """``(offset, event id)`` of each event of a batch's ``events`` blob, without building
    the events (an id not stored is the record's ``topic/partition/offset``)."""
    rows = _loads(bytes(blob).decode("utf-8", "surrogatepass"))
    return [(row[0], row[1] or f"{topic}/{partition}/{row[0]}") for row in rows]


def action_row(a: Action, payload: Any = None) -> list[Any]:
    """The action's row; ``payload``: what to write for a payload (default: the payload
    itself, None when empty)."""
    return [
        a.action_id, a.rule, a.kind._value_, a.target, a.namespace, a.event_ids,  # JSON array
        a.event_key, a.workflow, a.task, a.context,
        (a.payload or None) if payload is None else payload,
    ]  # fmt: skip


def action_from_row(row: Sequence[Any]) -> Action:
    aid, rule, kind, target, ns, event_ids, event_key, workflow, task, context, payload = row
    return Action(
        rule=rule, kind=_KINDS[kind], target=target, namespace=ns, event_ids=tuple(event_ids),
        event_key=event_key, workflow=workflow, task=task, context=context,
        payload=payload or {}, action_id=aid,
    )  # fmt: skip


class Encoded:
    """A partition's batch record encoded before its transaction opened, from exactly
    ``events`` and ``actions`` (the same objects, in order): a store takes the blobs only
    for those (:meth:`of`), so nothing else can be written under them."""

    __slots__ = ("actions", "actions_blob", "events", "events_blob")

    def __init__(self, events: Sequence[Event], actions: Sequence[Action]) -> None:
        self.events = events
        self.actions = actions
        self.events_blob = encode_events(events)
        self.actions_blob = encode_actions(actions)

    def of(self, events: Sequence[Event], actions: Sequence[Action]) -> bool:
        """Whether these blobs are the record of ``events`` and ``actions``."""
        return (
            len(events) == len(self.events)
            and len(actions) == len(self.actions)
            and all(map(is_, events, self.events))
            and all(map(is_, actions, self.actions))
        )


def encode_actions(actions: Sequence[Action]) -> bytes:
    fragment = orjson.Fragment
    try:
        # Each payload as its action's JSON (Action.payload_json: written once, checked
        # for NaN there, and read again by the targets); nothing else holds a float.
        return orjson.dumps(
            [action_row(a, fragment(a.payload_json()) if a.payload else None) for a in actions]
        )
    except orjson.JSONEncodeError:  # a lone surrogate in a name, say: json writes it
        rows = [action_row(a) for a in actions]
        return dumps(rows, floats_in=[a.payload for a in actions]).encode()


def decode_actions(blob: bytes | memoryview) -> list[Action]:
    return [action_from_row(r) for r in _loads(bytes(blob).decode("utf-8", "surrogatepass"))]


def encode_action(action: Action) -> str:
    """One action as JSON text (parked rows)."""
    return dumps(action_row(action), floats_in=(action.payload,))


def decode_action(text: str) -> Action:
    return action_from_row(_loads(text))
