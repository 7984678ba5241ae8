"""The ``temporal`` target against a real Temporal dev server and the example worker."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client

from checkpoint.base import ActionState
from connector.common.template import Template
from connector.targets.temporal import TemporalTarget
from devkit.server import free_port
from kec.action import ActionKind
from kec.errors import TargetError, TargetRejected
from tests.engines.harness import (
    NAMESPACE,
    action_of,
    connector_run,
    crash_then_recover,
    direct_action,
)
from tests.engines.servers import TemporalServer
from tests.support import wait_for

T = TypeVar("T")


def call(server: TemporalServer, work: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
    async def run() -> T:
        return await work(await Client.connect(server.address, namespace=server.namespace))

    return asyncio.run(run())


def workflow_ids(server: TemporalServer, prefix: str) -> list[str]:
    async def ids(client: Client) -> list[str]:
        return [w.id async for w in client.list_workflows() if w.id.startswith(prefix)]

    return call(server, ids)


def state(server: TemporalServer, workflow_id: str) -> dict[str, Any]:
    async def query(client: Client) -> dict[str, Any]:
        result: dict[str, Any] = await client.get_workflow_handle(workflow_id).query("state")
        return result

    return call(server, query)


def rule(name: str, key: str, action: str, **extra: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "key": key, "action": action,
            "workflow": "order", "target": "engine", **extra}  # fmt: skip


def target_yaml(server: TemporalServer, queue: str, prefix: str) -> str:
    return (
        f'{{type: temporal, address: "{server.address}", task_queue: {queue},'
        f' workflows: {{order: OrderWorkflow}}, id_prefix: "{prefix}", concurrency: 4}}'
    )


def test_an_event_starts_one_workflow_across_a_kill_after_dispatch(
    temporal: TemporalServer,
    temporal_worker: str,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    prefix = f"kec-{uuid.uuid4().hex[:8]}-"
    rules = [rule("start-order", "order", "start")]
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(temporal, temporal_worker, prefix),
        rules,
    ) as run:  # fmt: skip
        event_id = run.send("order", "order-42")
        start = action_of("start-order", event_id)
        crash_then_recover(run, start, lambda: len(workflow_ids(temporal, prefix)) == 1)
        assert run.stop() == 0

    # The resend met the workflow id that exists: still one workflow, started with the event.
    (workflow_id,) = workflow_ids(temporal, prefix)
    assert workflow_id == f"{prefix}order-{start}"
    started_with = state(temporal, workflow_id)["input"]
    assert started_with["action_id"] == start and started_with["rule"] == "start-order"
    event = started_with["event"]
    assert (event["key"], event["value"], event["event_id"], event["namespace"]) == (
        "order",
        "order-42",
        event_id,
        NAMESPACE,
    )


def test_task_actions_reach_the_execution_named_by_the_context(
    temporal: TemporalServer,
    temporal_worker: str,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    prefix = f"kec-{uuid.uuid4().hex[:8]}-"
    rules = [
        rule("start-order", "order", "start"),
        rule("run-extract", "extract", "START", task="extract"),
        rule("stop-load", "load-stop", "STOP", task="load"),
        rule("redo-extract", "extract-again", "RESTART", task="extract"),
        rule("audit", "audit", "START", task="audit"),  # no such task: refused
        rule("cancel-order", "cancel", "stop"),
    ]
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(temporal, temporal_worker, prefix),
        rules,
    ) as run:  # fmt: skip
        run.start()
        first = action_of("start-order", run.send("order", "first"))
        second = action_of("start-order", run.send("order", "second"))
        run.wait_settled(first, second)
        one, two = f"{prefix}order-{first}", f"{prefix}order-{second}"

        extract = action_of("run-extract", run.send("extract", "go", context=one))
        stop_load = action_of("stop-load", run.send("load-stop", "halt", context=two))
        redo = action_of("redo-extract", run.send("extract-again", "again", context=one))
        audit = action_of("audit", run.send("audit", "check", context=one))
        cancel = action_of("cancel-order", run.send("cancel", "enough", context=two))
        run.wait_settled(extract, stop_load, redo, audit, cancel)
        assert run.stop() == 0

    applied_one = [
        (a["action"], a["task"], a["action_id"]) for a in state(temporal, one)["applied"]
    ]
    assert applied_one == [("START", "extract", extract), ("RESTART", "extract", redo)]
    applied_two = [(a["action"], a["task"]) for a in state(temporal, two)["applied"]]
    assert applied_two == [("STOP", "load")]
    assert state(temporal, one)["tasks"]["extract"] == "running"

    async def status(client: Client) -> str:
        description = await client.get_workflow_handle(two).describe()
        assert description.status is not None
        return description.status.name

    assert wait_for(lambda: call(temporal, status) == "CANCELED", timeout=30)
    # The refusal is the workflow validator's own message, in the dead-letter table.
    dead = run.dead_letters()
    assert set(dead) == {audit}
    assert "unknown task 'audit'" in dead[audit]["last_error"]
    assert dead[audit]["last_error"].startswith("TargetRejected")
    assert run.actions(ActionState.DEAD).keys() == {audit}


_action = partial(direct_action, "order")


def test_duplicates_and_racing_resends_are_delivered_once(
    temporal: TemporalServer, temporal_worker: str
) -> None:
    prefix = f"kec-{uuid.uuid4().hex[:8]}-"
    target = TemporalTarget(
        "engine", temporal.address, task_queue=temporal_worker,
        workflows={"order": "OrderWorkflow"}, id_prefix=prefix,
    )  # fmt: skip
    with target:
        start = _action(ActionKind.START_WORKFLOW, f"e-{uuid.uuid4()}")
        target.deliver(start)
        target.deliver(start)  # a duplicate: returns normally
        workflow_id = target.workflow_id(start)
        update = _action(ActionKind.RESTART_TASK, f"e-{uuid.uuid4()}", task="load",
                         context=workflow_id)  # fmt: skip
        errors: list[BaseException] = []

        def resend() -> None:
            try:
                target.deliver(update)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=resend) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert workflow_ids(temporal, prefix) == [workflow_id]
        applied = state(temporal, workflow_id)["applied"]
        assert [(a["action"], a["action_id"]) for a in applied] == [("RESTART", update.action_id)]
        # Once the workflow closed, a resend is still recognised (from its history).
        finish = _action(ActionKind.STOP_TASK, f"e-{uuid.uuid4()}", task="order",
                         context=workflow_id)  # fmt: skip
        target.deliver(finish)
        target.deliver(finish)
        target.deliver(update)
        with pytest.raises(TargetRejected, match="already completed"):
            target.deliver(_action(ActionKind.START_TASK, "new", task="load", context=workflow_id))


def test_an_unreachable_server_is_a_transient_failure() -> None:
    target = TemporalTarget("engine", f"127.0.0.1:{free_port()}", task_queue="q", rpc_timeout=2)
    with target, pytest.raises(TargetError, match="cannot connect") as failure:
        target.deliver(_action(ActionKind.START_WORKFLOW, "e"))
    assert failure.value.retriable


def test_an_action_without_an_execution_is_refused(
    temporal: TemporalServer, temporal_worker: str
) -> None:
    target = TemporalTarget("engine", temporal.address, task_queue=temporal_worker)
    with target, pytest.raises(TargetRejected, match="the event has no context"):
        target.deliver(_action(ActionKind.STOP_WORKFLOW, "e"))


def test_a_template_shapes_the_workflows_argument(
    temporal: TemporalServer, temporal_worker: str
) -> None:
    prefix = f"kec-{uuid.uuid4().hex[:8]}-"
    shape = {"order": "{{ event_key }}", "ids": "{{ event_ids }}", "note": "from {{ rule }}"}
    target = TemporalTarget(
        "engine", temporal.address, task_queue=temporal_worker,
        workflows={"order": "OrderWorkflow"}, id_prefix=prefix, template=Template(shape),
    )  # fmt: skip
    start = _action(ActionKind.START_WORKFLOW, f"e-{uuid.uuid4()}")
    with target:
        target.deliver(start)
        workflow_id = target.workflow_id(start)
    got = wait_for(lambda: state(temporal, workflow_id)["input"] or None, timeout=60)
    assert got == {"order": "k", "ids": list(start.event_ids), "note": "from direct"}


def test_a_batch_starts_one_workflow_with_its_events(
    temporal: TemporalServer,
    temporal_worker: str,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    """A time-driven rule's action reaches the engine like any other: three events, one
    batch, one workflow whose input carries the three."""
    prefix = f"kec-{uuid.uuid4().hex[:8]}-"
    rules = [{**rule("load-lines", "line-*", "start"), "batch": {"size": 3, "within": 3600}}]
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(temporal, temporal_worker, prefix),
        rules,
    ) as run:  # fmt: skip
        run.start()
        sent = [run.send(f"line-{i}", f"row {i}") for i in range(3)]
        wait_for(lambda: len(workflow_ids(temporal, prefix)) == 1, timeout=120, what="a workflow")
        assert run.stop() == 0
    (workflow_id,) = workflow_ids(temporal, prefix)
    started_with = wait_for(lambda: state(temporal, workflow_id)["input"] or None, timeout=60)
    assert started_with["rule"] == "load-lines" and started_with["event_ids"] == sent
    batch = started_with["event"]
    assert (batch["count"], batch["reason"]) == (3, "size")
    assert [(e["event_id"], e["value"]) for e in batch["events"]] == [
        (sent[i], f"row {i}") for i in range(3)
    ]
