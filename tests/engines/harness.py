"""``event-connector run -c FILE`` as a real process against an engine target.

One YAML file per test (a fresh topic, group and SQLite store); the connector is started,
optionally armed with a crash point (``KEC_CRASH_AT``), SIGKILLed by it, restarted, and
stopped with SIGTERM. A static member id lets the restart have the partition back at once
rather than after the killed member's session times out. Events are sent with the
product's own NotificationClient.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkpoint import open_store
from checkpoint.base import ActionState
from connector.notification import NotificationClient
from kec.action import Action, ActionKind, action_id
from tests.support import ROOT, run_in_repo, wait_for

NAMESPACE = "orders"


@dataclass
class ConnectorRun:
    """A config file and the connector processes run from it, one at a time."""

    tmp: Path
    bootstrap: str
    topic: str
    group: str
    target_yaml: str  # the engine target's mapping, YAML flow style
    rules: list[dict[str, Any]]
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    sent: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.tmp / "connector.yaml"

    @property
    def store_url(self) -> str:
        return f"sqlite://{self.tmp / 'checkpoints.db'}"

    def write(self) -> Path:
        rules = "\n".join(f"  - {json.dumps(rule)}" for rule in self.rules)
        text = textwrap.dedent(
            f"""\
            kafka: {{bootstrap_servers: "{self.bootstrap}"}}
            group_id: {self.group}
            namespaces:
              {NAMESPACE}: {{topics: [{self.topic}]}}
            checkpoint: {{backend: sqlite, path: checkpoints.db}}
            pipeline: {{batch_size: 50, linger_ms: 5, instance_id: engine-test}}
            retry: {{max_attempts: 40, initial_backoff_seconds: 0.2, max_backoff_seconds: 2}}
            targets:
              engine: {self.target_yaml}
            rules:
            """
        )
        self.config.write_text(text + rules + "\n")
        return self.config

    def start(self, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        assert self.proc is None or self.proc.poll() is not None, "one connector at a time"
        env = {k: v for k, v in os.environ.items() if k != "KEC_CRASH_AT"}
        env["PYTHONPATH"] = str(ROOT)
        if crash_at:
            env["KEC_CRASH_AT"] = crash_at
        self.runs += 1
        log = open(self.tmp / f"connector-{self.runs}.log", "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "connector", "run", "-c", str(self.config)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        return self.proc

    def log(self) -> str:
        return (self.tmp / f"connector-{self.runs}.log").read_text(errors="replace")

    def wait_exit(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int:
        """SIGTERM once its pipeline runs; the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else 0
        wait_for(
            lambda: (
                "connector.pipeline.pipeline: pipeline " in self.log() or proc.poll() is not None
            ),
            timeout=60,
            what="the connector's start",
        )
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise

    def send(self, key: str, value: str, context: str | None = None) -> str:
        """Send one event of ``NAMESPACE``; its event id."""
        with NotificationClient(self.bootstrap, NAMESPACE, topics={NAMESPACE: self.topic}) as c:
            event = c.send_event(key, value, context=context)
        self.sent.append(event.event_id)
        return event.event_id

    def actions(self, state: ActionState) -> dict[str, Any]:
        """The store's actions in ``state`` by id (``OutboxEntry``)."""
        with open_store(self.store_url) as store:
            return {e.action.action_id: e for e in store.list_actions(state)}

    def settled(self, *ids: str) -> bool:
        """Whether each action is done or dead (the connector must still be running)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"connector exited {self.proc.returncode}:\n{self.log()}")
        finished = self.actions(ActionState.DONE).keys() | self.actions(ActionState.DEAD).keys()
        return set(ids) <= finished

    def wait_settled(self, *ids: str, timeout: float = 120) -> None:
        wait_for(lambda: self.settled(*ids), timeout=timeout, interval=0.2, what=f"actions {ids}")

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        """``event-connector dlq list --json``: the dead actions by id."""
        done = run_in_repo("-m", "connector", "dlq", "list", "-c", str(self.config), "--json")
        assert done.returncode == 0, done.stderr
        return {a["action_id"]: a for a in json.loads(done.stdout)["actions"]}


def action_of(rule: str, event_id: str) -> str:
    return action_id(rule, (event_id,))


def direct_action(workflow: str, kind: ActionKind, event: str, **fields: Any) -> Action:
    """An action made by hand (rule ``direct``), for calling a target without a connector."""
    return Action(
        rule="direct",
        kind=kind,
        target="engine",
        namespace=NAMESPACE,
        event_ids=(event,),
        event_key="k",
        workflow=workflow,
        payload={"key": "k", "value": event, "event_id": event, "namespace": NAMESPACE},
        **fields,
    )


@contextmanager
def connector_run(
    tmp: Path, bootstrap: str, topic: str, group: str, target_yaml: str, rules: list[dict[str, Any]]
) -> Iterator[ConnectorRun]:
    run = ConnectorRun(tmp, bootstrap, topic, group, target_yaml, rules)
    run.write()
    try:
        yield run
    finally:
        if run.proc is not None and run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=30)


def crash_then_recover(run: ConnectorRun, action: str, engine_has_run: Any) -> None:
    """The row "after dispatch, before it is marked done": deliver ``action``, die by SIGKILL
    before marking it done, restart, and let the restarted connector deliver it again."""
    run.start(crash_at="after_dispatch")
    code = run.wait_exit(timeout=120)
    assert code == -signal.SIGKILL, f"exit {code}, expected the crash point:\n{run.log()}"
    assert engine_has_run(), "the engine did not get the action before the crash"
    assert action in run.actions(ActionState.PENDING), "the action must still be pending"
    run.start()
    run.wait_settled(action)
    assert action in run.actions(ActionState.DONE)
