"""``dlq list`` and ``dlq replay``: what failed for good, and sending actions again.

Two kinds of dead letters live in the store:

* **dead actions** — actions a target refused or that ran out of attempts. ``replay``
  puts them back to pending with a fresh attempt count; the dispatcher of a running
  connector picks them up. Action ids are deterministic, so a target that honours
  idempotency keys still applies each action at most once.
* **dead records** — Kafka records that could not become events (no key, not UTF-8...).
  They are listed, never replayed: decoding is deterministic, so the same bytes would be
  dead-lettered again. Fix the producer and send the event anew (``send``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from checkpoint.base import ActionState, DeadRecord, OperationsStore, OutboxEntry

_ALL = 2**62  # "no limit" for list_actions: dead actions are few, and all are wanted here


@dataclass(frozen=True)
class DlqListing:
    actions: list[OutboxEntry]
    records: list[DeadRecord]

    def lines(self) -> list[str]:
        """The human listing: one line per dead action, then one per dead record."""
        out = [f"dead actions: {len(self.actions)}"]
        for entry in self.actions:
            a = entry.action
            out.append(
                f"  {a.action_id} rule={a.rule} {a.kind.value} -> {a.target} key={a.event_key} "
                f"attempts={entry.attempts} error={entry.last_error}"
            )
        out.append(f"dead records: {len(self.records)}")
        out.extend(
            f"  {r.topic}[{r.partition}]@{r.offset} {r.error_class}: {r.error}"
            for r in self.records
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "actions": [action_dict(e) for e in self.actions],
            "records": [record_dict(r) for r in self.records],
        }


def _bytes(raw: bytes | None) -> str | dict[str, str] | None:
    """Text when it is UTF-8, else ``{"b64": ...}`` (the Event JSON convention)."""
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode()}


def action_dict(entry: OutboxEntry) -> dict[str, Any]:
    return {
        **entry.action.to_dict(),
        "state": entry.state.value,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
    }


def record_dict(record: DeadRecord) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "error": record.error,
        "error_class": record.error_class,
        "key": _bytes(record.key),
        "value": _bytes(record.value),
    }


def list_dlq(store: OperationsStore, limit: int = 1000) -> DlqListing:
    return DlqListing(
        actions=store.list_actions(ActionState.DEAD, limit=limit),
        records=store.list_dead_records(limit=limit),
    )


def not_dead(store: OperationsStore, action_ids: Sequence[str]) -> list[str]:
    """The ids among ``action_ids`` that are not dead actions in the store, in order."""
    dead = {entry.action.action_id for entry in store.list_actions(ActionState.DEAD, limit=_ALL)}
    return [aid for aid in dict.fromkeys(action_ids) if aid not in dead]


def replay_actions(store: OperationsStore, action_ids: Sequence[str] | None) -> int:
    """Dead actions (the named ones, or all with ``None``) back to pending; how many moved."""
    return store.replay_dead(None if action_ids is None else list(action_ids))
