"""Putting a checkpoint store in a given state the way the pipeline and dispatcher would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from checkpoint import CheckpointStore, Parked, Parking, Settlement
from kec.action import Action
from kec.event import Event

TP = tuple[str, int]


def seed(
    store: CheckpointStore,
    tp: TP,
    actions: Sequence[Action],
    *,
    events: Sequence[Event] = (),
    next_offset: int | None = None,
    done: Sequence[str] = (),
    retry: Mapping[str, str] | None = None,
    dead: Mapping[str, str] | None = None,
) -> int:
    """Append one batch of ``actions`` (and ``events``) to ``tp``, then settle it: the
    ``done`` ids delivered, ``retry`` and ``dead`` ids parked with the given errors, the
    rest pending. Returns the owner epoch used."""
    epoch = store.claim("seed", [tp])[tp].epoch
    offsets = [e.offset for e in events if e.offset is not None]
    first_offset = min(offsets, default=0)
    end = next_offset if next_offset is not None else max(offsets, default=-1) + 1
    with store.batch() as tx:
        tx.claim_event_ids([e for e in events if e.explicit_id])
        first = tx.append(tp, epoch, first_offset, end, events, actions)
    retry, dead = retry or {}, dead or {}
    parked = [
        Parked(tp, first + i, a, Parking.RETRY, 1, 0.0, retry[a.action_id])
        if a.action_id in retry
        else Parked(tp, first + i, a, Parking.DEAD, 1, 0.0, dead[a.action_id])
        for i, a in enumerate(actions)
        if a.action_id in retry or a.action_id in dead
    ]
    settled = {p.action.action_id for p in parked} | set(done)
    watermark = first
    while watermark - first < len(actions) and actions[watermark - first].action_id in settled:
        watermark += 1
    store.settle({tp: Settlement(epoch, watermark, parked)})
    return epoch
