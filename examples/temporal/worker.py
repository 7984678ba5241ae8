"""A tiny Temporal workflow and its worker, for the connector's ``temporal`` target.

Run it next to a Temporal server (``temporal server start-dev``), with the ``temporal``
extra installed (``pip install 'kafka-event-connector[temporal]'``)::

    python examples/temporal/worker.py --address 127.0.0.1:7233 --task-queue orders

``OrderWorkflow`` is started by a ``start`` action with the connector's input (the event:
key, value, event id, namespace, …). It has tasks (``extract``, ``load``) that task actions
drive through the Workflow Update ``task_action``: START and RESTART run a task, STOP stops
it; an unknown task is refused by the update's validator, so that action is dead-lettered
with the workflow's message. It runs until a ``stop`` action cancels it, or until STOP of
the task ``order`` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

TASKS = ("extract", "load", "order")


@workflow.defn(name="OrderWorkflow")
class OrderWorkflow:
    def __init__(self) -> None:
        self.input: dict[str, Any] = {}
        self.applied: list[dict[str, Any]] = []
        self.tasks: dict[str, str] = dict.fromkeys(TASKS, "waiting")
        self.runs: dict[str, int] = dict.fromkeys(TASKS, 0)

    @workflow.run
    async def run(self, trigger: dict[str, Any]) -> dict[str, Any]:
        self.input = trigger
        await workflow.wait_condition(lambda: self.tasks["order"] == "stopped")
        return {"input": self.input, "applied": self.applied}

    @workflow.update
    async def task_action(self, action: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(action)
        task, kind = action["task"], action["action"]
        if kind in ("START", "RESTART"):
            self.tasks[task] = "running"
            self.runs[task] += 1
        else:
            self.tasks[task] = "stopped"
        return {"task": task, "state": self.tasks[task], "runs": self.runs[task]}

    @task_action.validator
    def check_task_action(self, action: dict[str, Any]) -> None:
        if action.get("task") not in TASKS:
            raise ValueError(f"unknown task {action.get('task')!r}; tasks: {', '.join(TASKS)}")

    @workflow.query
    def state(self) -> dict[str, Any]:
        return {"input": self.input, "applied": self.applied, "tasks": self.tasks}


async def serve(address: str, namespace: str, task_queue: str) -> None:
    client = await Client.connect(address, namespace=namespace)
    async with Worker(client, task_queue=task_queue, workflows=[OrderWorkflow]):
        print(f"worker ready: task queue {task_queue} on {address}", flush=True)
        await asyncio.Event().wait()  # until the process is stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:7233")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", default="orders")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.address, args.namespace, args.task_queue))


if __name__ == "__main__":
    main()
