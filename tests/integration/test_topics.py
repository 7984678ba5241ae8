"""Topics on a broker with auto-create off: created where used, or refused with advice.

Every topic name here is fresh (uuid), so "missing" really is missing on the session
broker; the ones a test creates are deleted after it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.cli import cli
from connector.topics import TopicPolicy, describe_topics, ensure_topics
from devkit.server import free_port
from kec.errors import BrokerUnavailable, KafkaClientError
from kec.kafka import Connection
from tests.support import ROOT, run_in_repo, wait_for


@pytest.fixture
def fresh(admin: AdminClient) -> Iterator[list[str]]:
    """Names for topics that do not exist yet; whatever got created is deleted after."""
    names: list[str] = []
    yield names
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [name for name in names if name in existing]
    if doomed:
        for future in admin.delete_topics(doomed).values():
            future.result(timeout=30)


def fresh_name(names: list[str], prefix: str = "tc") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    names.append(name)
    return name


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write_config(path: Path, bootstrap: str, namespaces: dict[str, str], **extra: str) -> Path:
    """A config whose namespaces read the given topics; ``extra`` adds top-level sections."""
    lines = [f"kafka: {{bootstrap_servers: '{bootstrap}'}}", "namespaces:"]
    lines += [f"  {ns}: {{topics: [{topic}]}}" for ns, topic in namespaces.items()]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ensure_topics_creates_the_missing_ones_once(
    bootstrap: str, admin: AdminClient, fresh: list[str]
) -> None:
    a, b = fresh_name(fresh), fresh_name(fresh)
    client = Connection(bootstrap)
    created = ensure_topics(client, [a, b, a], TopicPolicy(partitions=2, replication_factor=1))
    assert created == sorted([a, b])
    found = describe_topics(admin, [a, b])
    assert {name: (i.partitions, i.replication_factor) for name, i in found.items() if i} == {
        a: (2, 1),
        b: (2, 1),
    }
    assert ensure_topics(client, [a, b]) == []  # both exist now: nothing to do


def test_with_creation_off_a_missing_topic_is_named_with_advice(
    bootstrap: str, admin: AdminClient, fresh: list[str]
) -> None:
    name = fresh_name(fresh)
    with pytest.raises(KafkaClientError) as caught:
        ensure_topics(Connection(bootstrap), [name], TopicPolicy(create=False))
    message = str(caught.value)
    assert f"topic {name!r} does not exist and topic creation is off" in message
    assert f"event-connector topics create {name} --bootstrap {bootstrap}" in message
    assert describe_topics(admin, [name]) == {name: None}  # and nothing was created


def test_an_unreachable_cluster_is_named_within_the_bound() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"cannot reach Kafka at 127.0.0.1:{port}"):
        ensure_topics(Connection(f"127.0.0.1:{port}"), ["x"], TopicPolicy(request_timeout=2))
    assert time.monotonic() - started < 30


def test_topics_create_and_list_from_a_config_file(
    bootstrap: str, fresh: list[str], tmp_path: Path
) -> None:
    orders, dlq, http = fresh_name(fresh), fresh_name(fresh), fresh_name(fresh)
    config = write_config(
        tmp_path / "c.yaml",
        bootstrap,
        {"orders": orders},
        dead_letter_topic=dlq,
        http=f"{{topic: {http}}}",
        topic_creation="{enabled: false, partitions: 2, replication_factor: 1}",
    )
    before = invoke("topics", "list", "-c", str(config), "--json")
    assert before.exit_code == 0, before.output
    rows = {row["topic"]: row for row in json.loads(before.stdout)}
    assert {name: (row["for"], row["exists"]) for name, row in rows.items()} == {
        orders: ("namespace orders", False),
        dlq: ("dead letters", False),
        http: ("HTTP gateway (namespace http)", False),
    }

    # enabled: false is for the connector; the operator's command creates anyway.
    created = invoke("topics", "create", "-c", str(config))
    assert created.exit_code == 0, created.output
    assert sorted(created.stdout.splitlines()) == sorted(
        f"created {name} (2 partitions, replication factor 1)" for name in (orders, dlq, http)
    )
    again = invoke("topics", "create", "-c", str(config), "--partitions", "5")
    assert again.exit_code == 0, again.output
    assert f"exists  {orders} (2 partitions, replication factor 1)" in again.stdout

    listed = invoke("topics", "list", "-c", str(config))
    assert listed.exit_code == 0, listed.output
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(orders))
    assert line.split() == [orders, "namespace", "orders", "2", "partitions,", "replication",
                            "factor", "1"]  # fmt: skip
    everything = invoke("topics", "list", "--bootstrap", bootstrap, "--json")
    assert {orders, dlq, http} <= {row["topic"] for row in json.loads(everything.stdout)}


def test_topics_create_by_name_without_a_config(bootstrap: str, fresh: list[str]) -> None:
    name = fresh_name(fresh)
    done = invoke("topics", "create", name, "--bootstrap", bootstrap, "--partitions", "1")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"created {name} (1 partitions, replication factor 1)")
    usage = invoke("topics", "create", "--bootstrap", bootstrap)
    assert usage.exit_code == 2


def test_send_creates_its_topic_or_refuses_with_the_way_to_create_it(
    bootstrap: str, admin: AdminClient, fresh: list[str], tmp_path: Path
) -> None:
    name = fresh_name(fresh)
    config = write_config(tmp_path / "c.yaml", bootstrap, {"orders": name})
    sent = invoke("send", "order-created", "{}", "-c", str(config))  # the only namespace
    assert sent.exit_code == 0, sent.output
    where, summary = sent.stdout.splitlines()
    assert re.fullmatch(rf"{name}\[[0-2]\]@0", where)
    assert summary.startswith(f"sent 1 event to {name} in ")
    info = describe_topics(admin, [name])[name]
    assert info is not None and info.partitions == 3  # topic_creation's default

    other = fresh_name(fresh)
    off = write_config(
        tmp_path / "off.yaml", bootstrap, {"orders": other}, topic_creation="{enabled: false}"
    )
    refused = CliRunner().invoke(cli, ["send", "k", "v", "-c", str(off)])
    assert refused.exit_code != 0
    assert isinstance(refused.exception, KafkaClientError)
    message = str(refused.exception)
    assert f"topic {other!r} does not exist" in message
    assert f"event-connector topics create {other} -c {off}" in message
    assert describe_topics(admin, [other]) == {other: None}


def test_send_without_a_topic_says_how_to_name_one(tmp_path: Path, bootstrap: str) -> None:
    done = CliRunner().invoke(cli, ["send", "schedule", "go", "--bootstrap", bootstrap])
    assert "no topic to send to: give -c FILE" in str(done.exception)
    assert "--topic TOPIC" in str(done.exception)
    several = write_config(tmp_path / "two.yaml", bootstrap, {"a": "ta", "b": "tb"})
    done = CliRunner().invoke(cli, ["send", "k", "v", "-c", str(several)])
    assert "several namespaces (a, b): give --namespace NAME or --topic TOPIC" in str(
        done.exception
    )


def test_run_with_creation_off_and_a_missing_topic_exits_1_naming_it(
    bootstrap: str, fresh: list[str], tmp_path: Path
) -> None:
    name = fresh_name(fresh)
    config = write_config(
        tmp_path / "c.yaml",
        bootstrap,
        {"orders": name},
        checkpoint="{path: s.db}",
        topic_creation="{enabled: false}",
    )
    done = subprocess.run(
        [sys.executable, "-m", "connector", "run", "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"topic {name!r} does not exist and topic creation is off" in done.stderr
    assert f"event-connector topics create {name} -c {config}" in done.stderr


def test_ctrl_c_in_send_reports_how_many_of_count_were_sent(
    bootstrap: str, fresh: list[str]
) -> None:
    name = fresh_name(fresh)
    argv = [sys.executable, "-m", "connector", "send", "k", "v", "--count", "100000"]
    argv += ["--rate", "200", "--topic", name, "--bootstrap", bootstrap]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:

        def written() -> int:
            topic = probe.list_topics(name, timeout=5).topics.get(name)
            if topic is None or topic.error is not None:
                return 0  # send has not created it yet
            total = 0
            for partition in topic.partitions:
                try:
                    low, high = probe.get_watermark_offsets(
                        TopicPartition(name, partition), timeout=5
                    )
                except KafkaException:  # leadership still settling on the new topic
                    return 0
                total += int(high) - int(low)
            return total

        wait_for(lambda: written() >= 5, timeout=60, what="the first events on the topic")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, stderr
    (line,) = stdout.splitlines()
    assert line.startswith("interrupted: sent ") and " of 100000 events to " in line
    sent = int(line.split()[2])
    assert 5 <= sent < 100000


def test_gateway_without_its_topic_and_creation_off_refuses_to_start(
    bootstrap: str, fresh: list[str]
) -> None:
    name = fresh_name(fresh)
    argv = ["-m", "connector", "gateway", "--bootstrap", bootstrap, "--topic", name]
    argv += ["--no-create-topic", "--listen", f"127.0.0.1:{free_port()}", "--store", "memory://"]
    done = run_in_repo(*argv, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"topic {name!r} does not exist and topic creation is off" in done.stderr
    assert f"event-connector topics create {name} --bootstrap {bootstrap}" in done.stderr
