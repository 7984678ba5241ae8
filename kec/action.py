"""Actions: what a rule decided to do about events, and the unit the outbox delivers.

An action id is deterministic (docs/architecture.md): a hash of the rule name and the ids of the
events that triggered it. Re-evaluating the same events gives the same id, so a target
that honours idempotency keys applies each action once however often it is resent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from hashlib import blake2b as _blake2b
from typing import Any

import orjson

from kec.jsontext import dumps, dumps_bytes, owned


class ActionKind(StrEnum):
    """What to do. Lower case: a workflow; upper case: a task (AIFlow's ``TaskAction``)."""

    START_WORKFLOW = "start"
    STOP_WORKFLOW = "stop"
    START_TASK = "START"
    STOP_TASK = "STOP"
    RESTART_TASK = "RESTART"
    NOTIFY = "notify"  # hand the triggering event itself to the target


def action_id(rule: str, event_ids: tuple[str, ...]) -> str:
    """Deterministic: the same rule and events give the same id (the idempotency key).

    128 bits of BLAKE2b over the rule and the ids, NUL-separated (neither holds a NUL:
    the codec refuses them), as 32 hex digits. For one event (once per event on the hot
    path) the hash of ``rule`` and its NUL is kept per rule and copied, so only the id
    is hashed: the same digest, for two thirds of the cost."""
    if len(event_ids) == 1:
        prefix = _rule_prefixes.get(rule)
        if prefix is None:
            if len(_rule_prefixes) >= _RULE_PREFIXES:
                _rule_prefixes.clear()
            prefix = _rule_prefixes[rule] = _blake2b(f"{rule}\x00".encode(), digest_size=16)
        digest = prefix.copy()  # copy() holds the object's lock: shared by threads
        digest.update(event_ids[0].encode())
        return digest.hexdigest()
    return _blake2b("\x00".join((rule, *event_ids)).encode(), digest_size=16).hexdigest()


_rule_prefixes: dict[str, Any] = {}
_RULE_PREFIXES = 4096  # rule names a process hashes; any past that start a new cache


@dataclass(frozen=True, slots=True, init=False)
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
    # The payload as JSON once it was written (see payload_json): not a field of the
    # action's value, so neither compared nor given to a copy.
    _payload_json: bytes | None = field(default=None, init=False, repr=False, compare=False)
    # Whether whoever made the action vouched for the payload's floats (``finite``).
    _finite: bool = field(default=False, init=False, repr=False, compare=False)

    def __init__(
        self,
        rule: str,
        kind: ActionKind,
        target: str,
        namespace: str,
        event_ids: tuple[str, ...],
        event_key: str,
        workflow: str | None = None,
        task: str | None = None,
        context: str | None = None,
        payload: dict[str, Any] | None = None,
        action_id: str = "",
        *,
        finite: bool = False,
    ) -> None:
        """``finite``: the caller knows no float in ``payload`` is NaN or infinite (an
        :func:`~kec.evaluation.event_payload`, whose value is an
        :meth:`~kec.event.Event.document`, finite by construction), so
        :meth:`payload_json` need not look; a copy (``dataclasses.replace``) looks again."""
        # Through the slots' setters, as Event.__init__ (the generated frozen one is ~3x
        # slower, and one action per event is built on the hot path).
        _set_rule(self, rule)
        _set_kind(self, kind)
        _set_target(self, target)
        _set_namespace(self, namespace)
        _set_event_ids(self, event_ids)
        _set_event_key(self, event_key)
        _set_workflow(self, workflow)
        _set_task(self, task)
        _set_context(self, context)
        _set_payload(self, {} if payload is None else payload)
        _set_action_id(self, action_id or _action_id(rule, event_ids))
        _set_payload_json(self, None)
        _set_finite(self, finite)

    def to_dict(self, *, payload: bool = True) -> dict[str, Any]:
        """The fields as plain data (``payload=False``: without the payload)."""
        # Field by field: dataclasses.asdict deep-copies and was the dispatcher's top cost.
        data: dict[str, Any] = {
            "rule": self.rule,
            "kind": self.kind._value_,  # not .value: an Enum property, ~10x the cost
            "target": self.target,
            "namespace": self.namespace,
            "event_ids": list(self.event_ids),
            "event_key": self.event_key,
            "workflow": self.workflow,
            "task": self.task,
            "context": self.context,
        }
        if payload:
            data["payload"] = dict(self.payload)
        data["action_id"] = self.action_id
        return data

    def payload_json(self) -> bytes:
        """The payload as compact JSON, keys sorted (:func:`kec.jsontext.dumps`), written
        once per action: the batch record, the ``log`` line and a target's body each
        embed these bytes instead of walking the payload again. An action's payload is
        not changed once the action is made (the action is frozen; so is what it carries)."""
        cached = self._payload_json
        if cached is None:
            # A None in the payload writes null, as NaN would: the floats are looked at
            # unless the maker vouched for them.
            # Owned: cached for as long as the action waits in the outbox.
            cached = owned(
                dumps_bytes(self.payload, sort_keys=True, floats_in=() if self._finite else None)
            )
            _set_payload_json(self, cached)  # two threads may both write it: the same bytes
        return cached

    def to_json(self) -> str:
        """Compact JSON, keys sorted (what a ``webhook``, ``kafka`` or ``command`` target
        sends). Written by orjson (:func:`kec.jsontext.dumps`, 15x faster than
        :mod:`json`): non-ASCII characters as UTF-8, not ``\\u`` escapes."""
        return self.to_json_bytes().decode()

    def to_json_bytes(self) -> bytes:
        """:meth:`to_json` as UTF-8 bytes, the payload's part from :meth:`payload_json`."""
        # The keys written in sorted order (so orjson need not sort them), the payload's
        # sorted already: once per action a target sends.
        body = {
            "action_id": self.action_id,
            "context": self.context,
            "event_ids": self.event_ids,
            "event_key": self.event_key,
            "kind": self.kind._value_,
            "namespace": self.namespace,
            "payload": orjson.Fragment(self.payload_json()),
            "rule": self.rule,
            "target": self.target,
            "task": self.task,
            "workflow": self.workflow,
        }
        try:
            # Only the payload may hold floats (checked by payload_json): no NaN check.
            return orjson.dumps(body)
        except orjson.JSONEncodeError:  # a lone surrogate in a name, say: json writes it
            return dumps(self.to_dict(), floats_in=(self.payload,), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        data = dict(data)
        data["kind"] = ActionKind(data["kind"])
        data["event_ids"] = tuple(data["event_ids"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Action:
        return cls.from_dict(json.loads(text))


_action_id = action_id  # the field of the same name shadows it inside Action.__init__
# The slots' setters, for Action.__init__.
_set_rule = Action.__dict__["rule"].__set__
_set_kind = Action.__dict__["kind"].__set__
_set_target = Action.__dict__["target"].__set__
_set_namespace = Action.__dict__["namespace"].__set__
_set_event_ids = Action.__dict__["event_ids"].__set__
_set_event_key = Action.__dict__["event_key"].__set__
_set_workflow = Action.__dict__["workflow"].__set__
_set_task = Action.__dict__["task"].__set__
_set_context = Action.__dict__["context"].__set__
_set_payload = Action.__dict__["payload"].__set__
_set_action_id = Action.__dict__["action_id"].__set__
_set_payload_json = Action.__dict__["_payload_json"].__set__
_set_finite = Action.__dict__["_finite"].__set__


class _Building:
    """An :class:`Action` being built: its slots in the same order without the frozen
    dataclass's ``__setattr__`` (see :class:`kec.event._Building`, the same for events)."""

    __slots__ = Action.__slots__


_new = object.__new__


def rule_action(
    rule: str,
    kind: ActionKind,
    target: str,
    namespace: str,
    event_ids: tuple[str, ...],
    event_key: str,
    workflow: str | None,
    task: str | None,
    context: str | None,
    payload: dict[str, Any],
    finite: bool,
) -> Action:
    """``Action(rule, kind, ..., payload, finite=finite)`` for the rules' hot path (one
    action per event): every argument given, the id computed, the slots filled by plain
    stores before the object becomes an Action (about half the cost)."""
    action: Any = _new(_Building)  # Any: its slots are Action's (tests hold the two equal)
    action.rule = rule
    action.kind = kind
    action.target = target
    action.namespace = namespace
    action.event_ids = event_ids
    action.event_key = event_key
    action.workflow = workflow
    action.task = task
    action.context = context
    action.payload = payload
    action.action_id = _action_id(rule, event_ids)
    action._payload_json = None
    action._finite = finite
    action.__class__ = Action
    return action  # type: ignore[no-any-return]
