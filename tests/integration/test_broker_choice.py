"""Where the test broker and database come from (connector.containers.choose): a Docker engine
that answers but has no image and no registry is a fallback to the local broker and
database with one log line, never a traceback; KEC_BROKER / KEC_POSTGRES force a source.

The engine here is tests.integration.docker_stub: a real unix socket answering as an
air-gapped dockerd does (every image missing, every pull failing on the registry).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devkit import containers, project
from devkit.broker import provide_kafka
from devkit.errors import DevBrokerError, DevPostgresError
from devkit.postgres import provide_postgres
from tests.integration.docker_stub import PULL_ERROR, EngineWithoutRegistry

_CHOICE_VARIABLES = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "PG_DSN",
    "KEC_BROKER",
    "KEC_POSTGRES",
    "KEC_NO_DOCKER",
    "KEC_KAFKA_IMAGE",
    "KEC_POSTGRES_IMAGE",
)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineWithoutRegistry]:
    """DOCKER_HOST points at an engine without images or registry; no source is preset."""
    for name in _CHOICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    folder = Path(tempfile.mkdtemp(prefix="kec-engine-"))  # unix socket paths are short
    try:
        with EngineWithoutRegistry(folder / "docker.sock") as stub:
            monkeypatch.setenv("DOCKER_HOST", stub.url)
            yield stub
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _round_trip(bootstrap: str) -> bytes:
    topic = f"choice-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([topic])
        for _ in range(120):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return bytes(message.value())
    finally:
        consumer.close()
    raise AssertionError(f"nothing came back from {topic}")


def test_an_engine_without_the_images_falls_back_to_the_local_broker_and_database(
    engine: EngineWithoutRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="devkit")
    kafka_image, postgres_image = project.kafka_image(), project.postgres_image()
    with provide_kafka(start_timeout=120) as cluster:
        assert cluster.kind == "local-jvm"
        assert (
            cluster.why == f"the Docker engine has no image {kafka_image} ('make images' builds it)"
        )
        assert _round_trip(cluster.bootstrap_servers) == b"hello"
    with provide_postgres(start_timeout=120) as server:
        assert server.kind == "local"
        assert postgres_image in server.why
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    # Asked for the images, never pulled them; said so in one line each, no traceback.
    assert not [call for call in engine.calls if call.startswith("POST")], engine.calls
    assert any(f"/images/{kafka_image}/json" in call for call in engine.calls)
    choices = [r for r in caplog.records if "has no image" in r.getMessage()]
    assert [r.name for r in choices] == ["devkit.broker", "devkit.postgres"]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in choices)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_forcing_docker_where_the_image_cannot_be_pulled_is_a_one_line_error(
    engine: EngineWithoutRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEC_BROKER", "docker")
    monkeypatch.setenv("KEC_POSTGRES", "docker")
    with pytest.raises(DevBrokerError) as kafka_error, provide_kafka():
        pass
    assert str(kafka_error.value) == f"cannot pull {project.kafka_image()}: {PULL_ERROR}"
    with pytest.raises(DevPostgresError) as pg_error, provide_postgres():
        pass
    assert str(pg_error.value) == f"cannot pull {project.postgres_image()}: {PULL_ERROR}"
    assert len([call for call in engine.calls if "/images/create" in call]) == 2


def test_a_setting_forces_the_source_and_a_bad_one_is_refused(
    engine: EngineWithoutRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEC_BROKER", "jvm")
    forced = containers.choose("kafka", project.kafka_image)
    assert (forced.source, forced.forced, forced.reason) == (
        "local",
        True,
        "forced by KEC_BROKER=jvm",
    )
    assert engine.calls == []  # a forced local source does not even ask the engine

    monkeypatch.setenv("KEC_POSTGRES", "external")
    with pytest.raises(DevPostgresError, match="KEC_POSTGRES=external but PG_DSN is not set"):
        provide_postgres().__enter__()

    monkeypatch.setenv("KEC_BROKER", "podman")
    with pytest.raises(DevBrokerError, match="expected one of auto, external, docker, jvm"):
        provide_kafka().__enter__()

    monkeypatch.setenv("KEC_BROKER", "auto")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker.example:9092")
    with provide_kafka() as cluster:  # an external cluster is taken as given, unstarted
        assert (cluster.kind, cluster.bootstrap_servers) == ("external", "broker.example:9092")

    monkeypatch.setenv("KEC_BROKER", "docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine.socket_path}.absent")
    with pytest.raises(DevBrokerError, match="KEC_BROKER=docker but no Docker engine answers"):
        provide_kafka().__enter__()

    monkeypatch.setenv("KEC_BROKER", "auto")
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    assert containers.choose("kafka", project.kafka_image).reason.startswith(
        "no Docker engine answers at unix://"
    )
