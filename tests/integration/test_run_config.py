"""``event-connector run -c FILE`` as a real process: rules, every target, the HTTP gateway,
the metrics endpoint and the dead-letter topic, all from one YAML file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from checkpoint.sqlite import SqliteStore
from connector.notification import NotificationClient
from devkit.server import free_port
from tests.integration.http_recorder import RecordingServer, serving
from tests.support import run_in_repo, wait_for


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]


class Records:
    """Every record of a topic so far, read from the beginning without a group."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.got: list[Message] = []

    def at_least(self, count: int) -> bool:
        for msg in self._consumer.consume(100, 0.2):
            assert msg.error() is None, msg.error()
            self.got.append(msg)
        return len(self.got) >= count

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def webhook() -> Iterator[RecordingServer]:
    with serving() as server:
        yield server


def write_config(tmp_path: Path, **values: Any) -> Path:
    text = textwrap.dedent(
        """\
        kafka:
          bootstrap_servers: {bootstrap}
        group_id: {group}
        namespaces:
          shop: {{topics: [{topic}]}}
        dead_letter_topic: {dlq}
        checkpoint: {{backend: sqlite, path: state/checkpoints.db}}
        pipeline: {{batch_size: 200, linger_ms: 5}}
        retry: {{max_attempts: 3, initial_backoff_seconds: 0.05, max_backoff_seconds: 0.2}}
        targets:
          log: {{type: log, path: {tmp}/actions.jsonl}}
          task-runner:
            type: command
            argv: [sh, -c, 'echo "$KEC_TASK $KEC_CONTEXT $KEC_ACTION_ID" >> {tmp}/tasks.txt']
          engine: {{type: webhook, url: "{webhook}", timeout: 5}}
          actions: {{type: kafka, topic: {actions}, bootstrap_servers: {bootstrap}}}
        rules:
          - {{name: start-wf, namespace: shop, key: schedule, action: start, workflow: wf}}
          - name: task2-on-key
            namespace: shop
            key: key
            action: START
            workflow: wf
            task: task2
            target: task-runner
          - name: join
            namespace: shop
            all_of: {{keys: [extract-done, load-done], policy: latest}}
            action: start
            workflow: report
            target: engine
          - name: ship-paid
            namespace: shop
            key: "order-*"
            value: {{json: [{{path: status, in: [paid]}}]}}
            action: start
            workflow: ship
            target: actions
          - name: approve                # a gateway event: its key is the body's
            namespace: http                # event_key, its context the URL's workflow id
            key: approve
            context: "wf-*"
            action: RESTART
            workflow: review
            task: approve
        http: {{host: 127.0.0.1, port: {http_port}, topic: {http_topic}}}
        metrics: {{host: 127.0.0.1, port: {metrics_port}}}
        """
    ).format(tmp=tmp_path, **values)
    path = tmp_path / "connector.yaml"
    path.write_text(text)
    return path


def test_run_from_a_config_file_fires_every_rule_on_its_target(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    webhook: RecordingServer,
) -> None:
    topic, dlq, actions_topic, http_topic = (
        new_topic(3),
        new_topic(1),
        new_topic(1),
        new_topic(1),
    )
    http_port, metrics_port = free_port(), free_port()
    config = write_config(
        tmp_path,
        bootstrap=bootstrap,
        group=group_id,
        topic=topic,
        dlq=dlq,
        webhook=webhook.url,
        actions=actions_topic,
        http_port=http_port,
        http_topic=http_topic,
        metrics_port=metrics_port,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    dead_letters = Records(bootstrap, dlq, 1)
    shipped = Records(bootstrap, actions_topic, 1)
    try:
        with httpx.Client(timeout=30) as http:

            def up(url: str) -> bool:
                assert process.poll() is None, "the connector exited"
                try:
                    return http.get(url).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(lambda: up(f"http://127.0.0.1:{http_port}/healthz"), timeout=60)
            wait_for(lambda: up(f"http://127.0.0.1:{metrics_port}/metrics"), timeout=10)

            with NotificationClient(bootstrap, "shop", topics={"shop": topic}) as client:
                client.send_event("schedule", "go")
                client.send_event("key", "custom message", context="exec-1")
                client.send_event("key", "no execution: starts no task")
                client.send_event("extract-done", "1")
                client.send_event("load-done", "1")
                client.send_event("order-1", json.dumps({"status": "paid"}))
                client.send_event("order-2", json.dumps({"status": "new"}))
            producer = Producer({"bootstrap.servers": bootstrap})
            producer.produce(
                topic,
                value=b"a record without a key",
                partition=0,
                headers=[("origin", b"legacy-producer")],
            )
            assert producer.flush(30) == 0
            reply = http.post(
                f"http://127.0.0.1:{http_port}/event/send_event/wf-7",
                json={"event_key": "approve", "event_payload": {"by": "ana"}},
            )
            assert reply.status_code == 200, reply.text
            other = http.post(  # the same key from another workflow: `context` skips it
                f"http://127.0.0.1:{http_port}/event/send_event/other-1",
                json={"event_key": "approve", "event_payload": {"by": "bo"}},
            )
            assert other.status_code == 200, other.text

            log_path, tasks_path = tmp_path / "actions.jsonl", tmp_path / "tasks.txt"
            wait_for(lambda: len(jsonl(log_path)) >= 2, what="two actions on the log target")
            wait_for(lambda: tasks_path.exists(), what="the command target's process")
            wait_for(lambda: len(webhook.requests) >= 1, what="the webhook's POST")
            wait_for(lambda: shipped.at_least(1), what="the kafka target's record")
            wait_for(lambda: dead_letters.at_least(1), what="the dead-letter record")

            def metric(name: str) -> float:
                text = http.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                values = [ln.split()[-1] for ln in text.splitlines() if ln.startswith(name + " ")]
                return float(values[0]) if values else -1.0

            wait_for(lambda: metric("kec_actions_delivered_total") >= 5, what="the metrics")
            # The alert rules' gauges (docker/prometheus/alerts.yml): one pipeline reads
            # all three partitions of its topic; the store answers.
            owned = f'kec_partitions_owned{{topic="{topic}"}}'
            wait_for(lambda: metric(owned) == 3, what="the partitions read, in the metrics")
            assert metric(f'kec_topic_partitions{{topic="{topic}"}}') == 3
            assert metric("kec_store_up") == 1
            events_seen = metric("kec_events_total")
            dead_seen = metric("kec_dead_records_total")
    finally:
        dead_letters.close()
        shipped.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr

    logged = {line["rule"]: line for line in jsonl(tmp_path / "actions.jsonl")}
    assert set(logged) == {"start-wf", "approve"}
    assert logged["start-wf"]["kind"] == "start" and logged["start-wf"]["workflow"] == "wf"
    # The HTTP event's rule acts on the execution the request named.
    assert logged["approve"]["kind"] == "RESTART" and logged["approve"]["context"] == "wf-7"
    task, context, _ = (tmp_path / "tasks.txt").read_text().split()
    assert (task, context) == ("task2", "exec-1")  # only the `key` sent inside exec-1
    (posted,) = webhook.requests
    body = json.loads(posted.body)
    assert body["rule"] == "join" and posted.headers["idempotency-key"] == body["action_id"]
    (record,) = shipped.got
    assert json.loads(record.value())["rule"] == "ship-paid"  # order-2 is not paid
    (dead,) = dead_letters.got
    # The record as it came, its own headers first, then the reason.
    assert (dead.headers() or [])[0] == ("origin", b"legacy-producer")
    headers = {k: v.decode() for k, v in dead.headers() or []}
    assert dead.value() == b"a record without a key"
    assert headers["error-class"] == "DecodeError" and "no key" in headers["error"]
    assert headers["source-topic"] == topic and headers["source-partition"] == "0"
    # 7 shop events (the keyless record is not one) + the 2 HTTP events, one pipeline.
    assert events_seen == 9 and dead_seen == 1

    with SqliteStore(tmp_path / "state" / "checkpoints.db") as store:
        assert store.count_actions_by_rule() == {
            "start-wf": 1,
            "task2-on-key": 1,
            "join": 1,
            "ship-paid": 1,
            "approve": 1,
        }
        (dead_record,) = store.list_dead_records()
        assert (dead_record.topic, dead_record.partition) == (topic, 0)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_in_repo("-m", "connector", *args, timeout=60)


def test_run_refuses_quick_options_next_to_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka: {bootstrap_servers: 127.0.0.1:1}\nnamespaces: {default: {}}\n")
    done = run_cli("run", "-c", str(config), "--topic", "x", "--batch-size", "5")
    assert done.returncode == 2
    assert "--topic, --batch-size: not used with -c" in done.stderr


def test_run_refuses_a_broken_config_before_connecting(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 127.0.0.1:1}\n"
        "namespaces: {default: {}}\n"
        "rules:\n"
        "  - {name: r, key: k, action: START, workflow: wf}\n"
    )
    done = run_cli("run", "-c", str(config))
    assert done.returncode == 2
    assert f"{config}:4 rules[0].task: task action `START` needs a task" in done.stderr
