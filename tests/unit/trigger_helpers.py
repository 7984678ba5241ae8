"""Helpers for the trigger tests: build rules and events tersely, and feed an engine the
way the pipeline does (state keys first, updates applied before the next event)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from kec.action import Action
from kec.event import Event

_ids = itertools.count()


def make_rule(**fields: Any) -> Rule:
    """A workflow-start rule on key ``k`` unless told otherwise."""
    data: dict[str, Any] = {"name": "r", "action": "start", "workflow": "wf"}
    if "all_of" not in fields:
        data["key"] = "k"
    data.update(fields)
    return Rule.model_validate(data)


def make_event(
    key: str = "k",
    value: str | bytes = "",
    *,
    ns: str = "default",
    ctx: str | None = None,
    t: int = 1_000_000,
    eid: str | None = None,
    sender: str | None = None,
) -> Event:
    return Event(
        key=key,
        value=value,
        namespace=ns,
        context=ctx,
        create_time=t,
        sender=sender,
        event_id=eid or f"e{next(_ids)}",
    )


def run(
    engine: TriggerEngine, events: Iterable[Event], state: dict[str, str] | None = None
) -> tuple[list[Action], dict[str, str]]:
    """Evaluate ``events`` in order as the pipeline does; return the actions and state."""
    state = dict(state or {})
    actions: list[Action] = []
    for event in events:
        keys = engine.state_keys(event)
        result = engine.evaluate(event, {k: state.get(k) for k in keys})
        assert set(result.state_updates) <= set(keys), "updated a key it did not ask for"
        actions.extend(result.actions)
        for key, value in result.state_updates.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return actions, state
