"""Run the connector as a real process, kill it, and check the exactly-once invariants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from checkpoint import open_store
from checkpoint.base import ActionState
from devkit.broker import KafkaCluster
from kec.action import action_id
from kec.codec import record_headers, record_value
from kec.event import Event
from tests.support import wait_for

RULE = "notify-all"  # kec.evaluation.NotifyAll's rule name


@dataclass
class Workload:
    """Events produced to a fresh topic, with what the connector must make of them."""

    topic: str
    events: list[Event]
    partitions: int

    @property
    def expected_actions(self) -> set[str]:
        return {action_id(RULE, (e.event_id,)) for e in self.events}


def produce(
    bootstrap: str,
    topic: str,
    count: int,
    keys: int,
    partitions: int,
    client: Mapping[str, str] | None = None,
    seconds: float = 0.0,
) -> Workload:
    """``count`` events over ``keys`` keys; ``client``: more librdkafka properties (a
    secured cluster's SASL and TLS settings); ``seconds``: spread the sends evenly over
    that long (a stream that a fast reader cannot finish at once)."""
    producer = Producer(
        {**(client or {}), "bootstrap.servers": bootstrap, "enable.idempotence": True}
    )
    events = []
    pace = threading.Event()  # never set: its wait paces the stream
    started = time.monotonic()
    for i in range(count):
        key = f"key-{i % keys}"
        event = Event(key=key, value=f"{key}:{i}")
        producer.produce(topic, key=key, value=record_value(event), headers=record_headers(event))
        events.append(event)
        if i % 100 == 99:
            producer.poll(0)
            if seconds:
                pace.wait((i + 1) * seconds / count - (time.monotonic() - started))
    assert producer.flush(60) == 0
    return Workload(topic, events, partitions)


@dataclass
class Connector:
    """One ``event-connector run`` process over a workload, with its store and log file.

    Without ``client`` it runs in quick mode (``--bootstrap``, ``--topic``...); with
    ``client`` (a secured cluster's librdkafka properties) from a config file whose
    ``kafka:`` section is what ``dev-broker`` prints for them, with the same one rule
    (``notify-all``, every key) and the log target on the same file.
    """

    bootstrap: str
    topic: str
    store_url: str
    log_file: Path
    group: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:10]}")
    batch_size: int = 250
    proc: subprocess.Popen[bytes] | None = None
    client: dict[str, str] = field(default_factory=dict)

    def start(self, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "KEC_CRASH_AT"}
        if crash_at:
            env["KEC_CRASH_AT"] = crash_at
        cmd = self._command() if self.client else self._quick_command()
        stderr = open(self.log_file.with_suffix(".stderr"), "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        finally:
            stderr.close()
        return self.proc

    def _command(self) -> list[str]:
        if self.store_url.startswith("sqlite:///"):
            path = "/" + self.store_url.removeprefix("sqlite:///").lstrip("/")
            store = f"{{backend: sqlite, path: {path}}}"
        else:
            store = f'{{backend: postgres, dsn: "{self.store_url}"}}'
        kafka = KafkaCluster(
            self.bootstrap, "local-jvm", "unknown", client_properties=self.client
        ).kafka_yaml()
        config = self.log_file.with_suffix(".yaml")
        config.write_text(
            kafka
            + f"group_id: {self.group}\n"
            + f"namespaces: {{default: {{topics: [{self.topic}]}}}}\n"
            + f"checkpoint: {store}\n"
            + f"pipeline: {{batch_size: {self.batch_size}, linger_ms: 20}}\n"
            + f"targets: {{log: {{type: log, path: {self.log_file}}}}}\n"
            + f'rules: [{{name: {RULE}, namespace: default, key: "*", action: notify}}]\n'
        )
        return [sys.executable, "-m", "connector", "run", "-c", str(config),
                "--instance-id", f"{self.group}-member"]  # fmt: skip

    def _quick_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "connector",
            "run",
            "--bootstrap",
            self.bootstrap,
            "--group",
            self.group,
            "--topic",
            self.topic,
            "--store",
            self.store_url,
            "--log-file",
            str(self.log_file),
            "--batch-size",
            str(self.batch_size),
            "--linger-ms",
            "20",
            "--instance-id",
            f"{self.group}-member",
        ]

    def wait_exit(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def started(self) -> bool:
        """Whether the current process logged its pipeline start (signal handlers are set)."""
        assert self.proc is not None
        path = self.log_file.with_suffix(".stderr")
        marker = f"-{self.proc.pid}-"
        return any(
            "connector.pipeline.pipeline: pipeline " in line and marker in line
            for line in path.read_text(errors="replace").splitlines()
        )

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM once the process is up (before that, SIGTERM's default action applies)."""
        assert self.proc is not None
        proc = self.proc
        wait_for(lambda: self.started() or proc.poll() is not None, timeout=60, what="the start")
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stderr_tail(self, lines: int = 30) -> str:
        path = self.log_file.with_suffix(".stderr")
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def log_lines(path: Path) -> list[dict[str, object]]:
    """The complete lines of the log target's file (one being written is left out)."""
    if not path.exists():
        return []
    *complete, _in_progress = path.read_bytes().split(b"\n")
    return [json.loads(line) for line in complete]


def line_count(path: Path) -> int:
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def delivered_ids(path: Path) -> set[str]:
    return {str(line["action_id"]) for line in log_lines(path)}


def committed_offsets(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    client: Mapping[str, str] | None = None,
) -> dict[int, int]:
    consumer = Consumer({**(client or {}), "bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        consumer.close()


def assert_commit_not_ahead(conn: Connector, work: Workload) -> bool:
    """Invariant: no committed Kafka offset is ahead of the store's durable checkpoint.

    Returns whether some partition's commit is behind the store (the window between
    steps 2 and 3 was open when the process died).
    """
    committed = committed_offsets(
        conn.bootstrap, conn.group, work.topic, work.partitions, conn.client
    )
    with open_store(conn.store_url) as store:
        stored = {p: o for (t, p), o in store.next_offsets(work.topic).items() if t == work.topic}
    for partition, offset in committed.items():
        assert offset <= stored.get(partition, 0), (
            f"partition {partition}: committed {offset} ahead of checkpoint {stored}"
        )
    return any(committed.get(p, 0) < o for p, o in stored.items())


def wait_all_delivered(conn: Connector, work: Workload, timeout: float = 180) -> None:
    expected = work.expected_actions

    def done() -> bool:
        assert conn.proc is not None
        if conn.proc.poll() is not None:
            raise AssertionError(f"connector exited {conn.proc.returncode}:\n{conn.stderr_tail()}")
        return expected <= delivered_ids(conn.log_file)

    wait_for(done, timeout=timeout, interval=0.2, what="every action to be delivered")
    with open_store(conn.store_url) as store:
        wait_for(
            lambda: store.count_actions(ActionState.PENDING) == 0,
            timeout=60,
            what="the outbox to drain",
        )

        # A kill between steps 2 and 3 leaves Kafka's commit behind the store; the
        # restarted connector must bring it level even when no record is left to read.
        def level() -> bool:
            committed = committed_offsets(
                conn.bootstrap, conn.group, work.topic, work.partitions, conn.client
            )
            stored = store.next_offsets(work.topic)
            return all(committed.get(p) == o for (_, p), o in stored.items())

        wait_for(level, timeout=60, what="Kafka's committed offsets to reach the checkpoint")


def check_invariants(conn: Connector, work: Workload) -> dict[str, int]:
    """Every invariant of the protocol, after the connector has stopped."""
    ids = [e.event_id for e in work.events]
    with open_store(conn.store_url) as store:
        stored = list(store.iter_events())
        next_offsets = store.next_offsets(work.topic)
        dead = store.count_actions(ActionState.DEAD)
        pending = store.count_actions(ActionState.PENDING)
    # 1. every event checkpointed exactly once
    stored_ids = [e.event_id for e in stored]
    assert len(stored_ids) == len(set(stored_ids)), "an event was checkpointed twice"
    assert set(stored_ids) == set(ids), "events missing from (or foreign to) the store"
    # 2. per-key order kept in the checkpoint order
    position = {eid: i for i, eid in enumerate(ids)}
    by_key: dict[str, list[int]] = defaultdict(list)
    for event in stored:
        by_key[event.key].append(position[event.event_id])
    assert all(seq == sorted(seq) for seq in by_key.values()), "per-key order broken"
    # 3. every action delivered at least once, with a stable id and content
    lines = log_lines(conn.log_file)
    content: dict[str, str] = {}
    for line in lines:
        body = {k: v for k, v in line.items() if k != "delivered_at"}
        text = json.dumps(body, sort_keys=True)
        aid = str(line["action_id"])
        assert content.setdefault(aid, text) == text, f"action {aid} changed between deliveries"
    # 4. exactly once after dedup by id
    assert set(content) == work.expected_actions
    assert dead == 0 and pending == 0
    # 5. the first delivery of each key's actions follows the events' order
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    by_action = {action_id(RULE, (e.event_id,)): e for e in work.events}
    for line in lines:
        aid = str(line["action_id"])
        if aid not in seen:
            seen.add(aid)
            event = by_action[aid]
            first_seen[event.key].append(position[event.event_id])
    assert all(seq == sorted(seq) for seq in first_seen.values()), "delivery order per key"
    # 6. Kafka committed == store checkpoint == end of each partition
    committed = committed_offsets(
        conn.bootstrap, conn.group, work.topic, work.partitions, conn.client
    )
    per_partition: dict[int, int] = defaultdict(int)
    for event in stored:
        assert event.partition is not None
        per_partition[event.partition] += 1
    for (_, partition), offset in next_offsets.items():
        assert committed.get(partition) == offset == per_partition[partition]
    return {"deliveries": len(lines), "duplicates": len(lines) - len(content)}
