"""The AIFlow-style Python API compiles to the same rules as the YAML shape."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from connector.rules import AllOf, JsonPredicate, Rule, ValueMatch
from connector.rules.trigger import TriggerEngine
from connector.workflow import Task, TaskAction, Workflow, WorkflowAction
from kec.action import ActionKind
from kec.errors import ConfigError
from tests.unit.trigger_helpers import make_event, run

# The seed's example (AIFlow "Events"), as a YAML rule list would hold it.
SEED_YAML: list[dict[str, Any]] = [
    {
        "name": "workflow:task2:START:key",
        "namespace": "default",
        "key": "key",
        "action": "START",
        "workflow": "workflow",
        "task": "task2",
        "target": "log",
    }
]


def seed_workflow() -> Workflow:
    with Workflow(name="workflow") as workflow:
        Task(name="task1")  # python_callable: sends the "key" event
        task2 = Task(name="task2")
        task2.action_on_event_received(action=TaskAction.START, event_key="key")
    return workflow


def test_seed_example_equals_its_yaml_form() -> None:
    assert seed_workflow().rules() == [Rule.model_validate(r) for r in SEED_YAML]


def test_seed_example_behaves_as_aiflow_says() -> None:
    engine = TriggerEngine(seed_workflow().rules())
    events = [
        make_event("key", "This is a custom message.", ctx="exec-1", sender="task1"),
        make_event("key", ctx=None),  # not from a task: no execution to act on
        make_event("key", ns="other", ctx="exec-1"),  # another namespace
    ]
    actions, _ = run(engine, events)
    assert [(a.kind, a.workflow, a.task, a.context) for a in actions] == [
        (ActionKind.START_TASK, "workflow", "task2", "exec-1")
    ]


def test_every_option_equals_its_yaml_form() -> None:
    value = ValueMatch(json_=(JsonPredicate(path="status", in_=("ok", "done")),))
    wf = Workflow("etl", namespace="shop", target="hooks")
    load = wf.task("load")
    load.action_on_event_received(TaskAction.RESTART, all_of=AllOf(keys=("a", "b"), policy="first"))
    load.action_on_event_received(TaskAction.STOP, "halt", value=value, name="halt", target="log")
    wf.trigger_on_event("order-*")
    wf.trigger_on_event(
        all_of=AllOf(keys=("x", "y"), window=30, policy="latest"), action=WorkflowAction.STOP
    )
    yaml = [
        {
            "name": "etl:load:RESTART:a+b",
            "namespace": "shop",
            "all_of": {"keys": ["a", "b"], "policy": "first"},
            "action": "RESTART",
            "workflow": "etl",
            "task": "load",
            "target": "hooks",
        },
        {
            "name": "halt",
            "namespace": "shop",
            "key": "halt",
            "value": {"json": [{"path": "status", "in": ["ok", "done"]}]},
            "action": "STOP",
            "workflow": "etl",
            "task": "load",
        },
        {
            "name": "etl:start:order-*",
            "namespace": "shop",
            "key": "order-*",
            "action": "start",
            "workflow": "etl",
            "target": "hooks",
        },
        {
            "name": "etl:stop:x+y",
            "namespace": "shop",
            "all_of": {"keys": ["x", "y"], "window": 30, "policy": "latest"},
            "action": "stop",
            "workflow": "etl",
            "target": "hooks",
        },
    ]
    assert wf.rules() == [Rule.model_validate(r) for r in yaml]
    assert list(wf.tasks) == ["load"]


def test_task_outside_a_workflow_block_is_refused() -> None:
    with pytest.raises(ConfigError, match="has no workflow"):
        Task("orphan")


def test_workflow_block_is_restored_after_nesting_and_exit() -> None:
    with Workflow("outer") as outer:
        with Workflow("inner") as inner:
            Task("t1")
        Task("t2")
    assert list(inner.tasks) == ["t1"]
    assert list(outer.tasks) == ["t2"]
    with pytest.raises(ConfigError):
        Task("t3")


def test_workflow_block_does_not_leak_into_other_threads() -> None:
    errors: list[BaseException] = []

    def make_task() -> None:
        try:
            Task("elsewhere")
        except ConfigError as exc:
            errors.append(exc)

    with Workflow("wf") as wf:
        thread = threading.Thread(target=make_task)
        thread.start()
        thread.join(timeout=10)
    assert len(errors) == 1
    assert wf.tasks == {}


def test_explicit_workflow_needs_no_block() -> None:
    wf = Workflow("wf")
    task = Task("t", workflow=wf)
    assert task.workflow is wf
    assert wf.tasks == {"t": task}


@pytest.mark.parametrize(
    "declare",
    [
        lambda wf: (wf.task("t"), wf.task("t")),
        lambda wf: (wf.trigger_on_event("k"), wf.trigger_on_event("k")),
        lambda wf: wf.task("t").action_on_event_received(TaskAction.START),
        lambda wf: wf.trigger_on_event("k", all_of=AllOf(keys=("a", "b"), policy="first")),
        lambda wf: wf.task(""),
    ],
    ids=["duplicate-task", "duplicate-rule", "no-key", "key-and-all-of", "empty-task-name"],
)
def test_invalid_declarations_are_refused(declare: Any) -> None:
    with pytest.raises(ConfigError):
        declare(Workflow("wf"))


def test_rules_returns_a_copy() -> None:
    wf = seed_workflow()
    wf.rules().clear()
    assert len(wf.rules()) == 1
