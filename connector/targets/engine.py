"""What the workflow-engine targets (Temporal, Airflow, Prefect) have in common.

* :func:`workflow_input`: the one document a started workflow receives, whatever the
  engine (Temporal's workflow argument, Airflow's ``conf``, a Prefect flow parameter)::

      {"action_id": "…", "rule": "…", "namespace": "…", "event_key": "…",
       "event_ids": ["…"], "event": {"event_id", "key", "value", "namespace", "sender",
                                     "context", "event_type", "create_time"}}

  For an ``all_of`` rule, ``event`` is ``{"namespace", "context", "events": {key: event}}``.
  A target's ``template`` (:mod:`connector.common.template`) replaces that document
  with one shaped from the action (:func:`start_input`).
* :func:`execution_of`: the workflow execution an action is about. A task action carries
  it as its ``context`` (the rule only fires for events that have one); a ``stop`` takes
  the triggering event's ``context`` (Temporal workflow id, Airflow ``dag_run_id``, Prefect
  flow run id).
* :func:`idempotency_key`: the action id under a prefix, so keys made by two rules, two
  connectors or two deployments never meet.
"""

from __future__ import annotations

from typing import Any

from connector.common.template import Template
from kec.action import Action
from kec.errors import TargetRejected


def workflow_input(action: Action) -> dict[str, Any]:
    """The input of a workflow started by ``action`` (JSON-serialisable)."""
    return {
        "action_id": action.action_id,
        "rule": action.rule,
        "namespace": action.namespace,
        "event_key": action.event_key,
        "event_ids": list(action.event_ids),
        "event": dict(action.payload),
    }


def start_input(action: Action, template: Template | None) -> Any:
    """What a workflow started by ``action`` gets: ``template`` filled from the action
    (the target's ``template:`` setting), else :func:`workflow_input`."""
    return template.render(action) if template is not None else workflow_input(action)


def task_input(action: Action) -> dict[str, Any]:
    """What a task action hands to the execution (Temporal's update argument)."""
    return {
        "action": action.kind.value,
        "task": action.task,
        "action_id": action.action_id,
        "rule": action.rule,
        "event": dict(action.payload),
    }


def execution_of(action: Action, what: str) -> str:
    """The execution ``action`` names, or :class:`TargetRejected` when it names none."""
    context = action.context
    if context is None and isinstance(action.payload.get("context"), str):
        context = action.payload["context"]
    if not context:
        raise TargetRejected(
            f"{what}: action {action.action_id} ({action.kind.value} by rule {action.rule!r})"
            " names no execution: the event has no context"
        )
    return context


def idempotency_key(prefix: str, action: Action) -> str:
    """``prefix`` + the action id (32 hex digits, a hash of rule and event ids)."""
    return prefix + action.action_id


def temporal_workflow_id(id_prefix: str, action: Action) -> str:
    """The id of the Temporal workflow ``action`` starts (stable across resends)."""
    return idempotency_key(f"{id_prefix}{action.workflow}-", action)
