"""The rule evaluator protocol the pipeline drives (pure: no I/O), and the minimal one.

The pipeline feeds each *new* event of a batch, in order, to an :class:`Evaluator`:
it reads the rule state the event needs (:meth:`Evaluator.state_keys`) inside the batch's
store transaction, calls :meth:`Evaluator.evaluate`, queues the actions and writes the
state updates. :class:`connector.rules.trigger.TriggerEngine` is the real one; :class:`NotifyAll`
turns every event into one ``notify`` action (``run --topic`` without rules, tests, bench).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, runtime_checkable

from kec.action import Action, ActionKind, rule_action
from kec.event import TP, Event

__all__ = [
    "Evaluation", "Evaluator", "NotifyAll", "Result", "Timers", "actions_only", "event_payload",
    "event_value", "has_timers", "reads_state",
]  # fmt: skip


def event_value(event: Event) -> Any:
    """The event's value as an action carries it: a JSON object or array as itself (so a
    receiver reads ``{"order": 1}``, not the string ``"{\\"order\\": 1}"``), anything
    else (text, scalars, binary) as text (:meth:`Event.document` says which)."""
    doc = event.document()
    return event.text if doc is None else doc


def event_payload(event: Event) -> dict[str, Any]:
    """The event as an action carries it: its identity, metadata and :func:`event_value`.
    Its floats (in the value's document, if any) are finite: see ``Action(finite=...)``."""
    return {
        "event_id": event.event_id,
        "key": event.key,
        "value": event_value(event),
        "namespace": event.namespace,
        "sender": event.sender,
        "context": event.context,
        "event_type": event.event_type,
        "create_time": event.create_time,
    }


class Evaluation(Protocol):
    """What one event caused: actions to queue, rule-state updates (``None`` deletes) and,
    for updated states that expire (an ``all_of`` set with a window), the *event time*
    (epoch seconds, the events' create times, never the wall clock) after which no event
    can complete them: retention deletes such a state once every partition has moved
    past it."""

    @property
    def actions(self) -> Sequence[Action]: ...

    @property
    def state_updates(self) -> Mapping[str, str | None]: ...

    @property
    def state_expiry(self) -> Mapping[str, float]: ...


class Evaluator(Protocol):
    """Pure rule evaluation: ``(rules, state, event) -> (actions, state updates)``."""

    def state_keys(self, event: Event) -> Sequence[str]: ...

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation: ...


@runtime_checkable
class Timers(Protocol):
    """An evaluator whose rules also fire because time passed (``debounce``, ``batch``,
    ``absence``): the pipeline runs its *due pass* per partition inside the store
    transaction that moves the partition's event time (a batch, or an idle tick), reading
    :meth:`timer_keys`, then :meth:`due_keys`, then calling :meth:`due`. Times are event
    time in ms; ``watermark`` is the store's least partition event time (read only when
    :meth:`due_keys` named rows, else None)."""

    def has_timers(self) -> bool:
        """Whether any rule may fire because time passed (else the due pass is skipped)."""
        ...

    def timer_keys(self, tp: TP) -> Sequence[str]: ...

    def due_keys(self, tp: TP, state: Mapping[str, str | None], now: int) -> Sequence[str]: ...

    def due(
        self, tp: TP, now: int, watermark: int | None, state: Mapping[str, str | None]
    ) -> Evaluation: ...


def has_timers(evaluator: object) -> bool:
    """Whether ``evaluator`` has rules that fire because time passed (:class:`Timers`).
    Asked by name: ``isinstance`` against a runtime Protocol walks its every member on
    each call (about 9 µs), and this is asked once a batch, through the evaluator's
    wrappers."""
    check = getattr(evaluator, "has_timers", None)
    return bool(check()) if check is not None else False


def reads_state(evaluator: object) -> bool:
    """Whether :meth:`Evaluator.state_keys` may name any row. An evaluator that says
    otherwise (a ``reads_state()`` method answering False: every rule a single-key one)
    is evaluated without it, one call and one dict less per event; one without the
    method is asked for each event's keys, as the protocol says. Asked once a batch."""
    check = getattr(evaluator, "reads_state", None)
    return bool(check()) if check is not None else True


class Result(NamedTuple):
    """A plain :class:`Evaluation` (a tuple: one is made per event, and a tuple is the
    cheapest immutable record to make)."""

    actions: Sequence[Action]
    state_updates: Mapping[str, str | None]
    state_expiry: Mapping[str, float] = MappingProxyType({})


class NotifyAll:
    """The minimal rule set: every event becomes one ``notify`` action to ``target``."""

    def __init__(self, target: str = "log", rule: str = "notify-all") -> None:
        self._target = target
        self._rule = rule

    @property
    def rule(self) -> str:
        """The name its actions carry."""
        return self._rule

    def state_keys(self, event: Event) -> Sequence[str]:
        return ()

    def reads_state(self) -> bool:
        return False

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        action = rule_action(
            self._rule,
            _NOTIFY,
            self._target,
            event.namespace,
            (event.event_id,),
            event.key,
            None,
            None,
            event.context,
            {"value": event_value(event), "offset": event.offset, "partition": event.partition},
            True,  # finite: a document's floats are finite; the rest are ints and text
        )
        # Result(...) through tuple.__new__: a NamedTuple's own __new__ is a Python
        # function, and this runs once per event.
        return _new_result(Result, ((action,), _NO_UPDATES, _NO_EXPIRY))


_NOTIFY = ActionKind.NOTIFY  # a module name: an Enum class attribute costs ~10x
_new_result = tuple.__new__
_NO_UPDATES: Mapping[str, str | None] = MappingProxyType({})
_NO_EXPIRY: Mapping[str, float] = MappingProxyType({})


def actions_only(actions: Sequence[Action]) -> Result:
    """``Result(actions, {})`` without the NamedTuple's Python ``__new__`` (once per event
    on the hot path); its mappings are read-only."""
    return _new_result(Result, (actions, _NO_UPDATES, _NO_EXPIRY))
