"""testcontainers starts Kafka and PostgreSQL from the project's images (the second source of
the test fixtures, used for real), and the connector image works against them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from testcontainers.core.network import Network

from checkpoint import ActionState, open_store
from connector.config import load_config
from connector.notification import NotificationClient
from devkit.broker import provide_kafka
from devkit.containers import (
    OWNER_LABEL,
    KafkaContainer,
    PostgresContainer,
    owner,
    process_start_ticks,
    reap_orphans,
)
from devkit.containers import docker_host as engine_address
from devkit.postgres import provide_postgres, scratch_database
from devkit.project import kafka_version, manifest_dir
from tests.containers.conftest import Images
from tests.containers.support import connector_container, logs, read_file
from tests.support import ROOT, wait_for


def _our_containers() -> list[str]:
    client = docker.DockerClient(base_url=engine_address())
    try:
        found = client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner()}"})
        return [c.name for c in found]
    finally:
        client.close()


def test_the_fixtures_start_kafka_and_postgres_from_the_images_when_told_to(
    images: Images, monkeypatch: pytest.MonkeyPatch, report: Callable[[str], None]
) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "PG_DSN", "KEC_NO_DOCKER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEC_BROKER", "docker")
    monkeypatch.setenv("KEC_POSTGRES", "docker")
    before = set(_our_containers())
    started = time.monotonic()
    with provide_kafka() as cluster:
        kafka_ready = time.monotonic() - started
        assert cluster.kind == "testcontainers"
        assert cluster.version == kafka_version(manifest_dir() / "pom.xml")
        assert cluster.bootstrap_servers.startswith("127.0.0.1:")  # loopback only
        topic = f"tc-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
        admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
        producer = Producer({"bootstrap.servers": cluster.bootstrap_servers})
        for i in range(100):
            producer.produce(topic, key=str(i), value=f"v{i}")
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": cluster.bootstrap_servers,
                "group.id": topic,
                "auto.offset.reset": "earliest",
            }
        )
        seen: set[bytes] = set()
        consumer.subscribe([topic])
        try:

            def all_read() -> bool:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    seen.add(bytes(message.value()))
                return len(seen) == 100

            wait_for(all_read, timeout=60, interval=0, what="100 records back")
        finally:
            consumer.close()
        assert len(_our_containers()) == len(before) + 1
    started = time.monotonic()
    with provide_postgres() as server:
        pg_ready = time.monotonic() - started
        assert server.kind == "testcontainers"
        assert server.dsn.split("@", 1)[1].startswith("127.0.0.1:")
        with scratch_database(server.dsn) as url, open_store(url) as store:
            assert store.count_actions(ActionState.PENDING) == 0
    assert set(_our_containers()) == before  # removed, volumes and all
    report(
        f"testcontainers: Kafka ready for clients {kafka_ready:.1f}s after the fixture "
        f"started, PostgreSQL {pg_ready:.1f}s"
    )


def test_the_connector_image_runs_the_quickstart_against_the_kafka_container(
    images: Images, network: Network, kafka: KafkaContainer
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.internal_address(),
        "KEC_GROUP": f"qs-{run}",
        "KEC_TOPIC_PREFIX": f"qs-{run}.",
    }
    # The host writes through the published port, with the quickstart's own settings.
    config = load_config(
        ROOT / "examples" / "quickstart.yaml",
        env={**env, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers},
    )
    command = ["run", "-c", "/usr/share/kec/examples/quickstart.yaml"]
    with (
        NotificationClient.from_config(config, "default") as client,
        connector_container(images.connector, network, command, env=env) as container,
    ):
        client.ensure_topic()
        client.send_event("schedule", "go")
        client.send_event("key", "This is a custom message.", sender="task1", context="exec-1")
        client.send_event("key", "sent from outside any execution")

        def actions() -> list[dict[str, object]]:
            text = read_file(container, "/var/lib/kec/actions.jsonl")
            return [json.loads(line) for line in text.splitlines() if line]

        # start-workflow goes to the log target; task2-on-key runs the command target.
        try:
            wait_for(
                lambda: actions() and read_file(container, "/var/lib/kec/tasks.log"),
                timeout=120,
                interval=1.0,  # each look is a `docker exec`: not a busy loop
                what="the quickstart's two actions",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; connector logs:\n{logs(container)}") from None
        tasks = read_file(container, "/var/lib/kec/tasks.log").splitlines()
        fired = [str(a["rule"]) for a in actions()]
    assert fired == ["start-workflow"]
    assert len(tasks) == 1  # `key` from outside any execution started nothing
    assert tasks[0].startswith("I am the 2nd task. (START task2 in exec-1, ")


def test_the_connector_image_checkpoints_in_the_postgres_container(
    images: Images,
    network: Network,
    kafka: KafkaContainer,
    postgres: PostgresContainer,
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"pg-{run}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    with scratch_database(postgres.dsn) as host_url:
        dbname = host_url.rsplit("/", 1)[1]
        config = tmp_path / "connector.yaml"
        config.write_text(
            textwrap.dedent(
                f"""\
                kafka: {{bootstrap_servers: "{kafka.internal_address()}"}}
                group_id: g-{run}
                namespaces: {{default: {{topics: [{topic}]}}}}
                checkpoint: {{backend: postgres, dsn: "{postgres.internal_dsn(dbname)}"}}
                targets: {{log: {{type: log, path: /var/lib/kec/actions.jsonl}}}}
                rules: [{{name: orders, key: "order-*", action: start, workflow: orders}}]
                """
            )
        )
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
        for i in range(200):
            producer.produce(topic, key=f"order-{i}", value=json.dumps({"n": i}))
        assert producer.flush(30) == 0
        command = ["run", "-c", "/etc/kec/connector.yaml"]
        with (
            connector_container(images.connector, network, command, config=config) as container,
            open_store(host_url) as store,
        ):
            try:
                wait_for(
                    lambda: store.count_actions(ActionState.DONE) == 200,
                    timeout=120,
                    interval=0.5,
                    what="200 delivered actions in PostgreSQL",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}; connector logs:\n{logs(container)}") from None
            assert store.count_actions(ActionState.PENDING) == 0
            delivered = read_file(container, "/var/lib/kec/actions.jsonl").splitlines()
    assert len({json.loads(line)["idempotency_key"] for line in delivered}) == 200


def test_containers_of_a_process_that_died_are_removed_by_the_next_start(
    images: Images,
) -> None:
    # A process that started, was seen, and is gone: what a test run killed by -9 leaves.
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    ticks = process_start_ticks(child.pid)
    assert child.stdin is not None
    child.stdin.close()
    child.wait(30)
    client = docker.DockerClient(base_url=engine_address())
    try:
        orphan = client.containers.create(
            images.postgres, labels={OWNER_LABEL: f"{socket.gethostname()}:{child.pid}:{ticks}"}
        )
        mine = client.containers.create(images.postgres, labels={OWNER_LABEL: owner()})
        try:
            assert reap_orphans() >= 1
            names = {c.id for c in client.containers.list(all=True)}
            assert orphan.id not in names
            assert mine.id in names  # a live owner's container stays
        finally:
            mine.remove(force=True, v=True)
            if orphan.id in {c.id for c in client.containers.list(all=True)}:
                orphan.remove(force=True, v=True)
    finally:
        client.close()
