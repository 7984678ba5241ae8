"""``make demo``: the quickstart (``examples/quickstart.yaml``) on embedded defaults.

1. a real Kafka (``KAFKA_BOOTSTRAP_SERVERS``, Docker, or the local broker: see
   docs/architecture.md, "Kafka and PostgreSQL for development and tests");
2. ``event-connector run -c quickstart.yaml`` as a child process: SQLite checkpoints, the
   ``log`` and ``command`` targets, state in a fresh temp dir;
3. the AIFlow seed's events, sent with :class:`~connector.notification.NotificationClient`:
   a workflow trigger, ``task1`` sending ``key`` from inside execution ``exec-1`` (which
   starts ``task2`` there), and the same key from outside any execution (which starts
   nothing); the actions that fired and the ``status`` table are shown;
4. a stream of order events, the connector killed with SIGKILL in the middle of it and
   restarted; then the checks: one action per event in the store, every action delivered,
   re-deliveries (if any) under the same idempotency key, so no action fired twice.

Every wait is bounded; a broken invariant raises :class:`~kec.errors.ConnectorError`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devkit.broker import KafkaCluster, provide_kafka
from kec.errors import ConnectorError
from kec.kafka.settings import Connection

if TYPE_CHECKING:
    from checkpoint.base import OperationsStore
    from connector.config import ConnectorConfig

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"
ORDERS = 3000  # events of the kill -9 stream
ORDER_RATE = 1500.0  # events/s: slow enough that the kill lands mid-stream
WAIT = 90.0  # seconds any single step may take

Say = Callable[[str], None]


def _wait(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ConnectorError(f"demo: timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a log target's file (a torn last line is skipped)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


class _Connector:
    """``event-connector run -c CONFIG`` as a child process, its log in the state dir."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        self._argv = [sys.executable, "-m", "connector", "run", "-c", str(config)]
        self._env = env
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with self._log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self._argv, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM and wait: the connector finishes its batch and exits 0."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(60)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait(30)
            raise ConnectorError("demo: the connector did not stop within 60s of SIGTERM") from exc

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ConnectorError(
                f"demo: the connector exited with {self.proc.returncode}; see {self._log_path}"
            )


@contextmanager
def _running(connector: _Connector) -> Iterator[_Connector]:
    try:
        yield connector
    finally:
        connector.stop()


def _show_status(config: ConnectorConfig, store: OperationsStore) -> None:
    """The table of ``event-connector status -c quickstart.yaml``."""
    from rich.console import Console

    from connector.ops.status import collect_status, render_status

    report = collect_status(
        config.kafka.connection(),
        config.group_id,
        list(config.topics()),
        store,
        [rule.name for rule in config.rules],
    )
    render_status(report, Console(width=100))


def run_demo(say: Say, config_path: Path = QUICKSTART) -> None:
    """The demo; its state lives in a ``kec-demo-*`` temp dir, removed unless it fails."""
    if not config_path.exists():
        raise ConnectorError(f"demo: {config_path} not found (the demo runs from a checkout)")
    with provide_kafka() as cluster:
        say(
            f"== Kafka: Apache Kafka {cluster.version} ({cluster.kind}) at "
            f"{cluster.bootstrap_servers}"
        )
        state = Path(tempfile.mkdtemp(prefix="kec-demo-"))
        try:
            _demo(say, config_path, cluster, state)
        except BaseException:
            say(f"== the demo's files are kept for a look in {state}")
            raise
        shutil.rmtree(state, ignore_errors=True)
        say(f"== removed the demo's files ({state})")


def _demo(say: Say, config_path: Path, cluster: KafkaCluster, state: Path) -> None:
    from checkpoint import ActionState, open_store
    from connector.config import load_config
    from connector.notification import NotificationClient
    from connector.ops.send import send_events
    from kec.event import Event

    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "KEC_STATE_DIR": str(state),
        "KEC_GROUP": f"demo-{run}",
        "KEC_TOPIC_PREFIX": f"demo-{run}.",  # fresh topics, even on a shared cluster
    }
    config = load_config(config_path, env=env)
    actions_log, tasks_log = state / "actions.jsonl", state / "tasks.log"
    connector = _Connector(config_path, env, state / "connector.log")
    client = NotificationClient.from_config(config, "default")
    # A reader beside the connector: WAL lets it see each committed batch.
    with client, open_store(config.checkpoint.url()) as store, _running(connector):
        topic = client.ensure_topic()
        pid = connector.start()
        say(f"== connector: event-connector run -c {config_path.name} (pid {pid})")
        say(f"   state in {state}: checkpoints.db, actions.jsonl, tasks.log, connector.log")
        say(f"   reading {topic}, rules: {', '.join(r.name for r in config.rules)}")

        say("== the AIFlow seed's events")
        sent = client.send_event("schedule", "go")
        say(f"   sent schedule             -> {sent.topic}[{sent.partition}]@{sent.offset}")
        sent = client.send_event(
            "key", "This is a custom message.", sender="task1", context="exec-1"
        )
        say(f"   task1 in exec-1 sent key  -> {sent.topic}[{sent.partition}]@{sent.offset}")
        sent = client.send_event("key", "sent from outside any execution")
        say(f"   key without an execution  -> {sent.topic}[{sent.partition}]@{sent.offset}")

        def seed_done() -> bool:
            connector.check_alive()
            return store.count_actions(ActionState.DONE) >= 2 and tasks_log.exists()

        _wait(seed_done, "the seed's two actions")
        say("   actions fired (from the store's outbox):")
        for entry in store.list_actions(ActionState.DONE):
            a = entry.action
            task = f".{a.task}" if a.task else ""
            say(
                f"     {a.rule:<15} {a.kind.value:<6} {a.workflow}{task:<7} "
                f"context={a.context} target={a.target} id={a.action_id[:12]}…"
            )
        for text in tasks_log.read_text(encoding="utf-8").splitlines():
            say(f"     tasks.log: {text}")
        say("   (the `key` sent outside any execution started no task: AIFlow's rule)")
        _show_status(config, store)

        say(f"== exactly-once under kill -9: {ORDERS} order events at {ORDER_RATE:g}/s")
        events = (
            Event(key=f"order-{i % 100}", value=json.dumps({"n": i}), namespace="default")
            for i in range(ORDERS)
        )
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                send_events(
                    Connection(cluster.bootstrap_servers),
                    topic,
                    events,
                    rate=ORDER_RATE,
                )
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        sender = threading.Thread(target=produce, name="demo-sender")
        sender.start()

        def order_lines() -> list[dict[str, Any]]:
            return [x for x in _lines(actions_log) if x["rule"] == "order-pipeline"]

        def some_orders() -> bool:
            connector.check_alive()
            return len(order_lines()) >= ORDERS // 3

        _wait(some_orders, f"{ORDERS // 3} order actions")
        before = len(order_lines())
        connector.kill()
        say(f"   SIGKILL after {before} of {ORDERS} order actions were delivered")
        pid = connector.start()
        say(f"   restarted the connector (pid {pid})")
        sender.join(WAIT)
        if errors:
            raise ConnectorError(f"demo: sending the order events failed: {errors[0]}")

        def all_orders() -> bool:
            connector.check_alive()
            return len({x["idempotency_key"] for x in order_lines()}) >= ORDERS

        _wait(all_orders, f"all {ORDERS} order actions")
        _wait(lambda: store.count_actions(ActionState.PENDING) == 0, "the outbox to drain")
        lines = order_lines()
        ids = Counter(x["idempotency_key"] for x in lines)
        values = {x["payload"]["value"]["n"] for x in lines}  # a JSON value travels as JSON
        queued = store.count_actions_by_rule().get("order-pipeline", 0)
        say(
            f"   events sent {ORDERS}; actions in the outbox {queued}; distinct action ids "
            f"delivered {len(ids)}; events covered {len(values)}"
        )
        again = sum(n - 1 for n in ids.values())
        if again:
            say(
                f"   {again} of the deliveries were repeats. The SIGKILL came after the "
                "log target had\n"
                "   written those actions but before the connector recorded them as "
                "delivered, so after\n"
                "   the restart it sent them again, with the same idempotency key (the "
                "action id).\n"
                "   A target that honours that key applies each action once; the log "
                "target shows every try."
            )
        else:
            say("   no delivery had to be repeated (the kill came between two deliveries)")
        if not (queued == len(ids) == len(values) == ORDERS):
            raise ConnectorError("demo: an order event was lost or its action fired twice")
        say("   no event lost, no action fired twice")
        _show_status(config, store)
        code = connector.stop()
        say(f"== connector stopped with SIGTERM (exit {code})")
        if code != 0:
            raise ConnectorError(f"demo: the connector exited {code}; see {state}")
