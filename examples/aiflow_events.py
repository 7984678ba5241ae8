"""The AIFlow events seed, runnable against a real Kafka broker.

The seed's two examples, on this project's parts:

* *Sending events*: ``task1`` sends the event ``key`` with
  :class:`~connector.notification.NotificationClient`; ``task2`` declared
  ``task2.action_on_event_received(action=TaskAction.START, event_key="key")`` with the
  AIFlow-style :mod:`connector.workflow` API, and a scheduler (a listener feeding the
  pure :class:`~connector.rules.trigger.TriggerEngine`) turns the event into one ``START``
  action for ``task2`` in the *same workflow execution* (the event's ``context``).
  An event ``key`` sent from outside any execution (no context) starts nothing, as in
  AIFlow.
* *Listening to events*: the seed's ``Counter`` processor counts the ``expect_key``
  events ``task1`` sends.

``task1`` runs as AIFlow tasks do: it learns its namespace, name and execution from the
``KEC_NAMESPACE``/``KEC_SENDER``/``KEC_CONTEXT`` environment its runner gives it (here a
mapping handed to the client, so this process's environment is left alone).

Run it with a broker (``event-connector dev-broker`` prints one)::

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/aiflow_events.py --count 3

Its last line is a JSON summary, for scripts and tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from connector.notification import (
    ENV_CONTEXT,
    ENV_NAMESPACE,
    ENV_SENDER,
    Event,
    ListenerProcessor,
    NotificationClient,
)
from connector.rules.trigger import TriggerEngine
from connector.workflow import Task, TaskAction, Workflow
from kec.action import Action, ActionKind


class Counter(ListenerProcessor):
    """The seed's processor: counts the events it is given."""

    def __init__(self) -> None:
        self.counter = 0

    def process(self, events: list[Event]) -> None:
        self.counter += len(events)


class Scheduler(ListenerProcessor):
    """Feeds every event to the trigger engine and keeps the actions it decides.

    The rule state lives in a dict here; the connector service keeps it in its checkpoint
    store, in the same transaction as the event (docs/architecture.md, "The exactly-once protocol").
    """

    def __init__(self, engine: TriggerEngine) -> None:
        self.engine = engine
        self.actions: list[Action] = []
        self.seen: set[str] = set()
        self._state: dict[str, str | None] = {}
        self._changed = threading.Condition()

    def process(self, events: list[Event]) -> None:
        for event in events:
            keys = self.engine.state_keys(event)
            result = self.engine.evaluate(event, {k: self._state.get(k) for k in keys})
            self._state.update(result.state_updates)
            with self._changed:
                self.actions.extend(result.actions)
                self.seen.add(event.event_id)
                self._changed.notify_all()

    def wait_seen(self, event_id: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: event_id in self.seen, timeout)


def build_workflow(namespace: str) -> Workflow:
    """The seed's workflow: task2 starts when event ``key`` arrives in its execution."""
    with Workflow(name="workflow", namespace=namespace) as workflow:
        Task("task1")
        task2 = Task("task2")
        task2.action_on_event_received(action=TaskAction.START, event_key="key")
    return workflow


def task1(bootstrap: str, namespace: str, execution: str, count: int) -> list[Event]:
    """The seed's ``func``: what task1 runs inside its workflow execution."""
    environ = {ENV_NAMESPACE: namespace, ENV_SENDER: "task1", ENV_CONTEXT: execution}
    with NotificationClient(bootstrap, environ=environ) as notification_client:
        sent = [notification_client.send_event(key="key", value="This is a custom message.")]
        sent += [
            notification_client.send_event(key="expect_key", value=f"message {i}")
            for i in range(count)
        ]
    return sent


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _where(event: Event) -> str:
    return f"{event.topic}[{event.partition}]@{event.offset}"


def run(bootstrap: str, namespace: str, count: int, timeout: float) -> dict[str, object]:
    """Run the example; return its summary (also printed, one line per step)."""
    execution = f"exec-{uuid.uuid4().hex[:8]}"
    workflow = build_workflow(namespace)
    engine = TriggerEngine(workflow.rules())
    print(f"namespace {namespace!r}, workflow execution {execution}")
    for rule in workflow.rules():
        print(f"rule {rule.name}: {rule.action} {rule.task} on {rule.key!r}")

    scheduler, counter = Scheduler(engine), Counter()
    run_id = uuid.uuid4().hex[:8]  # fresh groups: start at the end, not at an old run's commit
    with NotificationClient(bootstrap, namespace, sender="example") as client:
        client.register_listener(scheduler, ["*"], group_id=f"aiflow-example-scheduler-{run_id}")
        client.register_listener(
            counter, ["expect_key"], group_id=f"aiflow-example-counter-{run_id}"
        )
        outsider = client.send_event("key", "sent outside any workflow execution")
        print(f"outsider sent 'key' without a context -> {_where(outsider)}")

        sent = task1(bootstrap, namespace, execution, count)
        print(f"task1 sent 'key' in execution {execution} -> {_where(sent[0])}")
        print(f"task1 sent {count} 'expect_key' events")

        if not scheduler.wait_seen(sent[0].event_id, timeout):
            raise TimeoutError(f"the scheduler did not see task1's event within {timeout}s")
        if not _wait(lambda: counter.counter >= count, timeout):
            raise TimeoutError(f"the counter saw {counter.counter} of {count} events")
        # client.close() unregisters both listeners (join, commit, release consumers).

    starts = [
        a
        for a in scheduler.actions
        if a.kind is ActionKind.START_TASK and a.task == "task2" and a.context == execution
    ]
    for action in scheduler.actions:
        print(
            f"scheduler: {action.kind} {action.task} in execution {action.context} "
            f"(rule {action.rule}, action id {action.action_id})"
        )
    if starts:
        print("task2: I am the 2nd task.")
    print(f"counter counted {counter.counter} events")
    return {
        "namespace": namespace,
        "execution": execution,
        "actions": len(scheduler.actions),
        "task2_starts": len(starts),
        "counter": counter.counter,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="AIFlow events seed: task1 sends 'key', task2 starts on it, "
        "a Counter listener counts 'expect_key' events."
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument("--namespace", default="aiflow-example", help="event namespace")
    parser.add_argument("--count", type=int, default=3, help="'expect_key' events to send")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each")
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("no broker: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS")
    if args.count < 0:
        parser.error("--count must not be negative")
    summary = run(args.bootstrap, args.namespace, args.count, args.timeout)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
