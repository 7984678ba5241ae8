"""An AIFlow-style Python API for trigger rules (docs/architecture.md, "Rules").

It compiles to the same :class:`~connector.rules.Rule` objects a YAML rule list gives, so
the engine cannot tell them apart. The seed's example::

    with Workflow(name="workflow") as workflow:
        task1 = Task("task1")
        task2 = Task("task2")
        task2.action_on_event_received(action=TaskAction.START, event_key="key")
    workflow.trigger_on_event(event_key="nightly")   # start the workflow on "nightly"
    rules = workflow.rules()

Ambient state, and why: inside ``with Workflow(...)`` a :class:`Task` created without
``workflow=`` joins that workflow, as AIFlow's operators do. That is held in one
:class:`contextvars.ContextVar`, set by ``__enter__`` and reset by ``__exit__``, so it is
per thread and per asyncio task, and nested blocks restore the outer workflow. Nothing
else is global: outside a ``with`` block pass ``workflow=`` or call
:meth:`Workflow.task`, and every rule lives on its workflow object.

A rule may be time-driven (``debounce=Debounce(quiet=30)``, ``throttle=``, ``batch=``,
``absence=``: :mod:`connector.rules.timing`), as in YAML.

Rules are built (and validated) when declared. Default rule names:
``{workflow}:{task}:{ACTION}:{keys}`` for task rules, ``{workflow}:{action}:{keys}`` for
workflow triggers, where ``keys`` is the event key, the ``all_of`` keys joined by ``+`` or the
``sequence`` keys joined by ``>``;
pass ``name=`` to choose another. Names must be unique within the workflow (and, in a
config, across all rules).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from enum import StrEnum
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from connector.rules import AllOf, Correlate, KeySequence, Rule, ValueMatch
from connector.rules.timing import Absence, Batch, Debounce, Throttle
from kec.action import ActionKind
from kec.errors import ConfigError
from kec.event import DEFAULT_NAMESPACE

__all__ = ["Task", "TaskAction", "Workflow", "WorkflowAction"]


class TaskAction(StrEnum):
    """What a task rule does to a task of the event's workflow execution (AIFlow's)."""

    START = ActionKind.START_TASK.value
    STOP = ActionKind.STOP_TASK.value
    RESTART = ActionKind.RESTART_TASK.value


class WorkflowAction(StrEnum):
    """What a workflow trigger does: start a new execution, or stop the workflow."""

    START = ActionKind.START_WORKFLOW.value
    STOP = ActionKind.STOP_WORKFLOW.value


_current: ContextVar[Workflow | None] = ContextVar("connector_workflow", default=None)


def _build_rule(**fields: Any) -> Rule:
    try:
        return Rule.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(f"invalid rule {fields.get('name')!r}: {exc}") from exc


def _keys_label(
    event_key: str | None, all_of: AllOf | None, sequence: KeySequence | None = None
) -> str:
    if all_of is not None:
        return "+".join(all_of.keys)
    if sequence is not None:
        return ">".join(sequence.keys)
    return event_key or ""


class Workflow:
    """A named workflow of one namespace: its tasks and the rules that act on it."""

    def __init__(
        self, name: str, namespace: str = DEFAULT_NAMESPACE, *, target: str = "log"
    ) -> None:
        if not name or not namespace:
            raise ConfigError("a workflow needs a non-empty name and namespace")
        self.name = name
        self.namespace = namespace
        self.target = target  # where this workflow's rules send actions unless told otherwise
        self._tasks: dict[str, Task] = {}
        self._rules: dict[str, Rule] = {}
        self._tokens: list[Token[Workflow | None]] = []

    def __repr__(self) -> str:
        return f"Workflow(name={self.name!r}, namespace={self.namespace!r})"

    def __enter__(self) -> Workflow:
        self._tokens.append(_current.set(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    @property
    def tasks(self) -> dict[str, Task]:
        """The tasks by name, in declaration order (a copy)."""
        return dict(self._tasks)

    def task(self, name: str) -> Task:
        """Declare a task of this workflow (no ``with`` block needed)."""
        return Task(name, workflow=self)

    def _add_task(self, task: Task) -> None:
        if task.name in self._tasks:
            raise ConfigError(f"workflow {self.name!r} already has a task {task.name!r}")
        self._tasks[task.name] = task

    def _add_rule(self, rule: Rule) -> Rule:
        if rule.name in self._rules:
            raise ConfigError(f"workflow {self.name!r} already has a rule {rule.name!r}")
        self._rules[rule.name] = rule
        return rule

    def trigger_on_event(
        self,
        event_key: str | None = None,
        *,
        all_of: AllOf | None = None,
        sequence: KeySequence | None = None,
        correlate: Correlate | None = None,
        value: ValueMatch | None = None,
        action: WorkflowAction = WorkflowAction.START,
        name: str | None = None,
        target: str | None = None,
        debounce: Debounce | None = None,
        throttle: Throttle | None = None,
        batch: Batch | None = None,
        absence: Absence | None = None,
    ) -> Rule:
        """Start (or stop) this workflow when ``event_key`` (or all of ``all_of``, or the
        keys of ``sequence`` in order) arrives; ``correlate`` joins them per business key.

        A workflow trigger sees every event of the namespace, whatever its execution.
        ``debounce``, ``throttle``, ``batch`` or ``absence`` (one, with ``event_key``)
        makes it time-driven (docs/architecture.md, "Time-driven rules").
        """
        action = WorkflowAction(action)
        rule = _build_rule(
            name=name or f"{self.name}:{action.value}:{_keys_label(event_key, all_of, sequence)}",
            namespace=self.namespace,
            key=event_key,
            all_of=all_of,
            sequence=sequence,
            correlate=correlate,
            value=value,
            action=ActionKind(action.value),
            workflow=self.name,
            target=target or self.target,
            debounce=debounce,
            throttle=throttle,
            batch=batch,
            absence=absence,
        )
        return self._add_rule(rule)

    def rules(self) -> list[Rule]:
        """Every rule declared on this workflow and its tasks, in declaration order."""
        return list(self._rules.values())


class Task:
    """A task of a workflow; created inside ``with Workflow(...)`` it joins that workflow."""

    def __init__(self, name: str, workflow: Workflow | None = None) -> None:
        owner = workflow if workflow is not None else _current.get()
        if owner is None:
            raise ConfigError(
                f"task {name!r} has no workflow: create it inside `with Workflow(...)` "
                "or pass workflow="
            )
        if not name:
            raise ConfigError("a task needs a non-empty name")
        self.name = name
        self.workflow = owner
        owner._add_task(self)

    def __repr__(self) -> str:
        return f"Task(name={self.name!r}, workflow={self.workflow.name!r})"

    def action_on_event_received(
        self,
        action: TaskAction,
        event_key: str | None = None,
        *,
        all_of: AllOf | None = None,
        sequence: KeySequence | None = None,
        correlate: Correlate | None = None,
        value: ValueMatch | None = None,
        name: str | None = None,
        target: str | None = None,
        debounce: Debounce | None = None,
        throttle: Throttle | None = None,
        batch: Batch | None = None,
        absence: Absence | None = None,
    ) -> Rule:
        """Apply ``action`` to this task when ``event_key`` (or all of ``all_of``, or the
        keys of ``sequence`` in order) arrives; ``correlate`` joins them per business key.

        As in AIFlow, only events sent from the same workflow execution (their ``context``)
        act on the task; events without a context never do.
        """
        action = TaskAction(action)
        wf = self.workflow
        label = _keys_label(event_key, all_of, sequence)
        rule = _build_rule(
            name=name or f"{wf.name}:{self.name}:{action.value}:{label}",
            namespace=wf.namespace,
            key=event_key,
            all_of=all_of,
            sequence=sequence,
            correlate=correlate,
            value=value,
            action=ActionKind(action.value),
            workflow=wf.name,
            task=self.name,
            target=target or wf.target,
            debounce=debounce,
            throttle=throttle,
            batch=batch,
            absence=absence,
        )
        return wf._add_rule(rule)
