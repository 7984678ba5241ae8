"""Actions: what a rule decided to do about events, and the unit the outbox delivers.

An action id is deterministic (docs/architecture.md): a hash of the rule name and the ids of the
events that triggered it. Re-evaluating the same events gives the same id, so a target
that honours idempotency keys applies each action once however often it is resent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ActionKind(StrEnum):
    """What to do. Lower case: a workflow; upper case: a task (AIFlow's ``TaskAction``)."""

    START_WORKFLOW = "start"
    STOP_WORKFLOW = "stop"
    START_TASK = "START"
    STOP_TASK = "STOP"
    RESTART_TASK = "RESTART"
    NOTIFY = "notify"  # hand the triggering event itself to the target


def action_id(rule: str, event_ids: tuple[str, ...]) -> str:
    digest = hashlib.sha256(rule.encode())
    for eid in event_ids:
        digest.update(b"\x00")
        digest.update(eid.encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Action:
    """One action for one target. ``context`` is the workflow execution a task action is
    scoped to (``None`` for workflow actions and notifications)."""

    rule: str
    kind: ActionKind
    target: str
    namespace: str
    event_ids: tuple[str, ...]
    event_key: str
    workflow: str | None = None
    task: str | None = None
    context: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    action_id: str = ""

    def __post_init__(self) -> None:
        if not self.action_id:
            object.__setattr__(self, "action_id", action_id(self.rule, self.event_ids))

    def to_dict(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies and was the dispatcher's top cost.
        return {
            "rule": self.rule,
            "kind": self.kind.value,
            "target": self.target,
            "namespace": self.namespace,
            "event_ids": list(self.event_ids),
            "event_key": self.event_key,
            "workflow": self.workflow,
            "task": self.task,
            "context": self.context,
            "payload": dict(self.payload),
            "action_id": self.action_id,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        data = dict(data)
        data["kind"] = ActionKind(data["kind"])
        data["event_ids"] = tuple(data["event_ids"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Action:
        return cls.from_dict(json.loads(text))
