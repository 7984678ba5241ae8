"""Flat row codecs for events and actions, shared by the SQL backends.

Events and actions are stored as columns, not as one JSON document: the hot path writes
thousands per batch, and building tuples from attributes costs a fraction of
``dataclasses.asdict`` + ``json.dumps``. The column order here is the order of the
``INSERT`` statements in :mod:`checkpoint.sqlite` and :mod:`checkpoint.postgres`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from checkpoint.base import ActionState, OutboxEntry
from kec.action import Action, ActionKind
from kec.event import Event, Headers

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.JSONDecoder().decode

EVENT_COLUMNS = (
    "event_id", "key", "value", "namespace", "sender", "context", "event_type",
    "create_time", "headers", "topic", "partition", '"offset"',
)  # fmt: skip
ACTION_COLUMNS = (
    "action_id", "rule", "kind", "target", "namespace", "event_ids", "event_key",
    "workflow", "task", "context", "payload",
)  # fmt: skip
OUTBOX_COLUMNS = ("seq", *ACTION_COLUMNS, "state", "attempts", "next_attempt_at", "last_error")

EventRow = tuple[
    str, str, "str | bytes", str, "str | None", "str | None", "str | None",
    int, "str | None", "str | None", "int | None", "int | None",
]  # fmt: skip
ActionRow = tuple[
    str, str, str, str, str, str, str, "str | None", "str | None", "str | None", "str | None"
]


def unique_by_id(events: Iterable[Event]) -> dict[str, Event]:
    """Events keyed by id, first occurrence wins, in input order."""
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    return unique


def encode_headers(headers: Headers) -> str | None:
    if not headers:
        return None
    return _dumps([[k, base64.b64encode(v).decode()] for k, v in headers])


def decode_headers(text: str | None) -> Headers:
    if not text:
        return ()
    return tuple((k, base64.b64decode(v)) for k, v in _loads(text))


def event_row(e: Event) -> EventRow:
    return (
        e.event_id, e.key, e.value, e.namespace, e.sender, e.context, e.event_type,
        e.create_time, encode_headers(e.headers), e.topic, e.partition, e.offset,
    )  # fmt: skip


def event_from_row(row: Sequence[Any]) -> Event:
    eid, key, value, ns, sender, context, event_type, ctime, headers, topic, part, off = row
    return Event(
        key=key, value=value, namespace=ns, sender=sender, context=context,
        event_type=event_type, create_time=ctime, headers=decode_headers(headers),
        topic=topic, partition=part, offset=off, event_id=eid,
    )  # fmt: skip


def encode_event_ids(ids: tuple[str, ...]) -> str:
    """One id as itself (the common case, and cheap), anything else as a JSON list.

    Unambiguous because an id that itself starts with ``[`` is always written as JSON.
    """
    if len(ids) == 1 and not ids[0].startswith("["):
        return ids[0]
    return _dumps(ids)


def decode_event_ids(text: str) -> tuple[str, ...]:
    return tuple(_loads(text)) if text.startswith("[") else (text,)


def action_row(a: Action) -> ActionRow:
    return (
        a.action_id, a.rule, a.kind.value, a.target, a.namespace, encode_event_ids(a.event_ids),
        a.event_key, a.workflow, a.task, a.context, _dumps(a.payload) if a.payload else None,
    )  # fmt: skip


def action_from_row(row: Sequence[Any]) -> Action:
    aid, rule, kind, target, ns, event_ids, event_key, workflow, task, context, payload = row
    return Action(
        rule=rule, kind=ActionKind(kind), target=target, namespace=ns,
        event_ids=decode_event_ids(event_ids), event_key=event_key, workflow=workflow,
        task=task, context=context, payload=_loads(payload) if payload else {},
        action_id=aid,
    )  # fmt: skip


def outbox_entry_from_row(row: Sequence[Any]) -> OutboxEntry:
    """A row laid out as :data:`OUTBOX_COLUMNS`."""
    state, attempts, next_attempt_at, last_error = row[-4:]
    return OutboxEntry(
        seq=row[0],
        action=action_from_row(row[1:-4]),
        state=ActionState(state),
        attempts=attempts,
        next_attempt_at=float(next_attempt_at),
        last_error=last_error,
    )


def time_cut(
    first: int, last: int, probe: Callable[[int], tuple[int, float] | None], when: float
) -> int:
    """A seq that cuts a table where a time that grows with seq reaches ``when``: every row
    below it is older than ``when``, none at or above it is (retention, ``prune``).

    ``first``/``last`` are the table's least and greatest seq; ``probe(s)`` gives the
    (seq, time) of the first row at or after seq ``s``, or None. Bisects on the primary
    key: O(log n) lookups, whatever the table's size.
    """
    lo, hi = first, last + 1  # rows below lo are older; the cut is at most hi
    while lo < hi:
        mid = (lo + hi) // 2
        row = probe(mid)
        if row is None or row[1] >= when:
            hi = mid  # no row in [mid, row's seq): mid cuts as well as that seq
        else:
            lo = row[0] + 1
    return lo
