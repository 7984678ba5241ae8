"""Events written with a registered schema, end to end: ``event-connector run`` as a real
process, a real broker, the dev schema registry (Apicurio, Confluent API) and producers
that use confluent-kafka's registry serializers, as a user's services would.

What a user relies on: rules see an Avro, Protobuf or JSON Schema value as JSON (and a
registry-written key as the event key); a record that cannot be decoded is a dead letter
with the reason and the pipeline moves on; a registry outage delays good records but
never dead-letters them; ``tail`` shows the decoded value.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import struct
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from tests.integration.http_recorder import serving
from tests.support import run_in_repo, start_run, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the dev schema registry needs Java and Maven (make installs them)",
)

_PAYMENT_AVRO = """
{"type": "record", "name": "Payment", "namespace": "kec.test",
 "fields": [
   {"name": "id", "type": "string"},
   {"name": "amount", "type": "long"},
   {"name": "price", "type": {"type": "bytes", "logicalType": "decimal",
                              "precision": 10, "scale": 2}},
   {"name": "tag", "type": "bytes"}
 ]}
"""

_ORDER_JSON_SCHEMA = """
{"$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
 "properties": {"id": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}},
 "required": ["id", "amount"]}
"""


# -- the connector ------------------------------------------------------------------------


def _config(
    tmp_path: Path,
    bootstrap: str,
    group_id: str,
    registry_url: str,
    *,
    namespace: str,
    rules: str,
    targets: str = "",
    dead_letter_topic: str | None = None,
) -> Path:
    """A config with one namespace (given as YAML flow mapping), its rules (YAML list
    items, indented two spaces) and a log target ``log`` besides ``targets``."""
    path = tmp_path / "connector.yaml"
    dlq = f"dead_letter_topic: {dead_letter_topic}\n" if dead_letter_topic else ""
    body = textwrap.dedent(
        f"""\
        kafka:
          bootstrap_servers: "{bootstrap}"
          properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 500}}
        group_id: {group_id}
        schema_registry: {{url: "{registry_url}", timeout_seconds: 3}}
        namespaces:
          shop: {namespace}
        checkpoint: {{backend: sqlite, path: {tmp_path}/state/checkpoints.db}}
        pipeline: {{batch_size: 100, linger_ms: 10}}
        targets:
          log: {{type: log, path: {tmp_path}/actions.jsonl}}
        """
    )
    path.write_text(body + textwrap.indent(targets, "  ") + dlq + "rules:\n" + rules)
    return path


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    """Factory: ``event-connector run -c CONFIG`` (log in tmp_path/run.log), stopped with
    SIGTERM after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        started.append(start_run(config, tmp_path / "run.log"))
        return started[-1]

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for process in started:
        assert process.returncode == 0, (tmp_path / "run.log").read_text()


def _actions(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "actions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _wait_actions(
    tmp_path: Path, process: subprocess.Popen[bytes], count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]]:
        assert process.poll() is None, (tmp_path / "run.log").read_text()
        found = _actions(tmp_path)
        return found if len(found) >= count else []

    return wait_for(enough, timeout=timeout, what=f"{count} action(s)")


# -- Kafka and the registry ------------------------------------------------------------------


@pytest.fixture
def registry(schema_registry: str) -> Iterator[SchemaRegistryClient]:
    client = SchemaRegistryClient({"url": schema_registry})
    yield client
    client.close()


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | str, bytes | str]]) -> None:
    """Records (key, value) in order, to partition 0 so their order is the log's."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(topic, key=key, value=value, partition=0)
    assert producer.flush(30) == 0


def _value_ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def _dead_letters(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of the dead-letter topic (waited for, bounded)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"dlq-{uuid.uuid4().hex[:8]}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[Any] = []
    try:

        def read() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                found.append(msg)
            return len(found) >= count

        wait_for(read, timeout=60, interval=0, what=f"{count} dead letter(s) in {topic}")
    finally:
        consumer.close()
    return found


def _high_watermark(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def _headers(msg: Any) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in msg.headers() or ()}


def _schema_id(framed: bytes) -> int:
    magic, schema_id = struct.unpack(">bI", framed[:5])
    assert magic == 0
    return int(schema_id)


# -- 1. Avro ----------------------------------------------------------------------------------


def test_a_rule_on_an_avro_field_fires_for_the_matching_record_only(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    schema_registry: str,
    registry: SchemaRegistryClient,
    running: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    topic = new_topic(1)
    config = _config(
        tmp_path, bootstrap, group_id, schema_registry,
        namespace=f"{{topics: [{topic}], value_format: registry}}",
        rules='  - {name: big, namespace: shop, key: "*", action: notify, target: log,\n'
              "     value: {json: [{path: amount, gt: 100}]}}\n",
    )  # fmt: skip
    serialize = AvroSerializer(registry, _PAYMENT_AVRO)
    small = {"id": "p-1", "amount": 40, "price": Decimal("0.40"), "tag": b"\x00\x01"}
    big = {"id": "p-2", "amount": 250, "price": Decimal("12.50"), "tag": b"\xff\xfe\x00"}
    values = [serialize(v, _value_ctx(topic)) for v in (small, big)]
    assert all(isinstance(v, bytes) for v in values)
    _produce(bootstrap, topic, [("small", values[0]), ("big", values[1])])
    process = running(config)

    (action,) = _wait_actions(tmp_path, process, 1)
    assert (action["rule"], action["event_key"]) == ("big", "big")
    # The decoded record as a JSON object: a decimal as its exact text, bytes as base64.
    assert action["payload"]["value"] == {
        "id": "p-2",
        "amount": 250,
        "price": "12.50",
        "tag": base64.b64encode(b"\xff\xfe\x00").decode(),
    }
    # The small one was read too (the run is past it), and fired nothing.
    wait_for(lambda: _committed(bootstrap, group_id, topic) == 2, what="both records read")
    assert len(_actions(tmp_path)) == 1


def _committed(bootstrap: str, group_id: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


# -- 2. Protobuf ------------------------------------------------------------------------------


def _shipment_classes() -> tuple[Any, Any]:
    """Protobuf message classes made at run time from a descriptor: ``Shipment`` is the
    second message of its file and ``Shipment.Parcel`` is nested in it, so the records
    carry message indexes other than the first message's; ``sent`` is a well-known type
    (an import)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"shipping_{uuid.uuid4().hex[:8]}.proto", package="kec.test", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )  # fmt: skip
    F = descriptor_pb2.FieldDescriptorProto
    first = proto.message_type.add(name="Ping")
    first.field.add(name="at", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    shipment = proto.message_type.add(name="Shipment")
    shipment.field.add(name="order_id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    shipment.field.add(name="weight_grams", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    shipment.field.add(name="sent", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                       type_name=".google.protobuf.Timestamp")  # fmt: skip
    shipment.field.add(name="parcels", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                       type_name=".kec.test.Shipment.Parcel")  # fmt: skip
    parcel = shipment.nested_type.add(name="Parcel")
    parcel.field.add(name="sku", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    parcel.field.add(name="count", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    timestamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    pool.Add(timestamp)
    pool.Add(proto)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("kec.test.Shipment")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("kec.test.Shipment.Parcel")),
    )


def test_protobuf_events_reach_a_webhook_decoded(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    schema_registry: str,
    registry: SchemaRegistryClient,
    running: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    topic = new_topic(1)
    shipment_of, parcel_of = _shipment_classes()
    no_deprecated = {"use.deprecated.format": False}
    shipments = ProtobufSerializer(shipment_of, registry, no_deprecated)
    shipment = shipment_of(order_id="o-7", weight_grams=1200)
    shipment.sent.FromJsonString("2026-01-02T03:04:05Z")
    shipment.parcels.add(sku="A-1", count=2)
    framed_shipment = shipments(shipment, _value_ctx(topic))
    # The nested message under the same subject: its own indexes ([1, 0]) in the frame.
    parcels = ProtobufSerializer(parcel_of, registry, no_deprecated)
    framed_parcel = parcels(parcel_of(sku="B-2", count=5), _value_ctx(topic))
    assert framed_shipment is not None and framed_parcel is not None
    assert framed_shipment[5:7] == b"\x02\x02"  # one index, 1: the file's second message
    assert framed_parcel[5:8] == b"\x04\x02\x00"  # two indexes, 1 then 0
    with serving() as hook:
        config = _config(
            tmp_path, bootstrap, group_id, schema_registry,
            namespace=f"{{topics: [{topic}], value_format: registry}}",
            targets=f"hook: {{type: webhook, url: {hook.url}}}\n",
            rules='  - {name: shipped, namespace: shop, key: "*", action: notify, target: hook}\n',
        )  # fmt: skip
        _produce(bootstrap, topic, [("o-7", framed_shipment), ("o-7-p", framed_parcel)])
        process = running(config)

        def delivered() -> bool:
            assert process.poll() is None, (tmp_path / "run.log").read_text()
            return len(hook.requests) >= 2

        wait_for(delivered, timeout=60, what="two webhook calls")
        bodies = {}
        for request in hook.requests:
            body = json.loads(request.body)
            bodies[body["event_key"]] = body["payload"]["value"]
    assert bodies == {
        "o-7": {
            "order_id": "o-7",
            "weight_grams": 1200,
            "sent": "2026-01-02T03:04:05Z",
            "parcels": [{"sku": "A-1", "count": 2}],
        },
        "o-7-p": {"sku": "B-2", "count": 5},
    }


# -- 3. JSON Schema ---------------------------------------------------------------------------


def test_a_json_schema_value_fires_and_one_violating_its_schema_is_a_dead_letter(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    schema_registry: str,
    registry: SchemaRegistryClient,
    running: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    topic, dlq = new_topic(1), new_topic(1, prefix="dlq")
    config = _config(
        tmp_path, bootstrap, group_id, schema_registry,
        namespace=f"{{topics: [{topic}], value_format: registry}}",
        rules='  - {name: orders, namespace: shop, key: "*", action: notify, target: log}\n',
        dead_letter_topic=dlq,
    )  # fmt: skip
    serialize = JSONSerializer(_ORDER_JSON_SCHEMA, registry)
    good = serialize({"id": "o-1", "amount": 3}, _value_ctx(topic))
    assert good is not None
    # A producer that skipped validation: the frame names the schema, the data breaks it.
    bad = good[:5] + json.dumps({"id": "o-2", "amount": -1}).encode()
    _produce(bootstrap, topic, [("bad", bad), ("good", good)])
    process = running(config)

    (action,) = _wait_actions(tmp_path, process, 1)
    assert (action["event_key"], action["payload"]["value"]) == ("good", {"id": "o-1", "amount": 3})
    (dead,) = _dead_letters(bootstrap, dlq, 1)
    assert dead.value() == bad
    headers = _headers(dead)
    assert headers["error-class"] == "DecodeError"
    assert f"does not match its JSON schema (id {_schema_id(good)})" in headers["error"]
    assert "minimum" in headers["error"]


# -- 4. bad records ---------------------------------------------------------------------------


def test_bad_records_are_dead_letters_with_their_reason_and_the_next_is_processed(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    schema_registry: str,
    registry: SchemaRegistryClient,
    running: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    topic, dlq = new_topic(1), new_topic(1, prefix="dlq")
    config = _config(
        tmp_path, bootstrap, group_id, schema_registry,
        namespace=f"{{topics: [{topic}], value_format: registry}}",
        rules='  - {name: all, namespace: shop, key: "*", action: notify, target: log}\n',
        dead_letter_topic=dlq,
    )  # fmt: skip
    serialize = AvroSerializer(registry, _PAYMENT_AVRO)
    record = {"id": "p-9", "amount": 9, "price": Decimal("9.99"), "tag": b"t"}
    good = serialize(record, _value_ctx(topic))
    assert good is not None
    unknown_id = _schema_id(good) + 100_000
    bad = [
        ("plain-json", b'{"id": "p-8", "amount": 8}'),
        ("unknown-id", struct.pack(">bI", 0, unknown_id) + good[5:]),
        ("truncated", good[:-4]),
    ]
    _produce(bootstrap, topic, [*bad, ("good", good)])
    process = running(config)

    (action,) = _wait_actions(tmp_path, process, 1)
    assert action["event_key"] == "good"
    assert action["payload"]["value"]["id"] == "p-9"
    dead = _dead_letters(bootstrap, dlq, 3)
    assert [(d.key(), d.value()) for d in dead] == [(k.encode(), v) for k, v in bad]
    reasons = [_headers(d) for d in dead]
    assert [(h["source-topic"], h["source-offset"], h["error-class"]) for h in reasons] == [
        (topic, "0", "DecodeError"), (topic, "1", "DecodeError"), (topic, "2", "DecodeError")
    ]  # fmt: skip
    assert "not in the schema registry's wire format (starts with 0x7b" in reasons[0]["error"]
    assert f"names schema id {unknown_id}: the registry does not know it" in reasons[1]["error"]
    assert f"does not match its AVRO schema (id {_schema_id(good)})" in reasons[2]["error"]
    assert len(_actions(tmp_path)) == 1


# -- 5. a registry outage ---------------------------------------------------------------------


class _Forwarder:
    """A TCP forwarder to ``upstream`` on a fixed loopback port that can be shut (its port
    then refuses connections, as a stopped registry's would) and opened again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._spawn(self._accept, listener)

    def shut(self) -> None:
        """Refuse new connections and cut the open ones; the threads are joined."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, []
        for sock in [listener, *conns] if listener else conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(10)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # shut
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open += [client, upstream]
                self._spawn(self._pipe, client, upstream)
                self._spawn(self._pipe, upstream, client)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_a_registry_outage_delays_good_records_and_dead_letters_none(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    schema_registry: str,
    registry: SchemaRegistryClient,
    running: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    # The connector reaches the registry through a forwarder that is shut for the outage;
    # the producer registers its schema directly, so its records name an id the running
    # connector has never fetched.
    host_port = schema_registry.split("//", 1)[1].split("/", 1)
    host, port = host_port[0].rsplit(":", 1)
    forwarder = _Forwarder((host, int(port)))
    through = f"http://127.0.0.1:{forwarder.port}/{host_port[1]}"
    topic, dlq = new_topic(1), new_topic(1, prefix="dlq")
    config = _config(
        tmp_path, bootstrap, group_id, through,
        namespace=f"{{topics: [{topic}], value_format: registry}}",
        rules='  - {name: all, namespace: shop, key: "*", action: notify, target: log}\n',
        dead_letter_topic=dlq,
    )  # fmt: skip
    serialize = AvroSerializer(registry, _PAYMENT_AVRO)
    records: list[tuple[bytes | str, bytes | str]] = []
    for i in range(5):
        value = serialize(
            {"id": f"p-{i}", "amount": i, "price": Decimal(i), "tag": b""}, _value_ctx(topic)
        )
        assert value is not None
        records.append((f"p-{i}", value))
    _produce(bootstrap, topic, records)
    log = tmp_path / "run.log"
    process = running(config)
    try:

        def retried() -> bool:
            assert process.poll() is None, log.read_text()
            return "RegistryUnavailable" in log.read_text() if log.exists() else False

        wait_for(retried, timeout=60, what="the run to log the registry outage")
        retry_lines = [ln for ln in log.read_text().splitlines() if "RegistryUnavailable" in ln]
        assert "batch failed and was rolled back" in retry_lines[0]
        assert "schema registry unreachable" in retry_lines[0]
        assert "Traceback" not in log.read_text()  # one line, not a stack
        assert _actions(tmp_path) == []
        forwarder.open()
        actions = _wait_actions(tmp_path, process, 5)
    finally:
        forwarder.shut()
    assert sorted(a["event_key"] for a in actions) == [f"p-{i}" for i in range(5)]
    assert len({a["idempotency_key"] for a in actions}) == 5
    # Dead letters are sent before their batch is checkpointed: none is coming.
    assert _high_watermark(bootstrap, dlq) == 0


# -- 6. registry keys -------------------------------------------------------------------------


def test_an_avro_string_key_is_the_event_key(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    schema_registry: str,
    registry: SchemaRegistryClient,
    running: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    topic = new_topic(1)
    config = _config(
        tmp_path, bootstrap, group_id, schema_registry,
        namespace=f"{{topics: [{topic}], key_format: registry}}",
        rules="  - {name: seven, namespace: shop, key: order-7, action: notify, target: log}\n",
    )  # fmt: skip
    keys = AvroSerializer(registry, '"string"')
    key_ctx = SerializationContext(topic, MessageField.KEY)
    framed = [keys(k, key_ctx) for k in ("order-6", "order-7")]
    assert all(isinstance(k, bytes) and k[0] == 0 for k in framed)
    _produce(bootstrap, topic, [(framed[0], "six"), (framed[1], "seven")])
    process = running(config)

    (action,) = _wait_actions(tmp_path, process, 1)
    assert (action["rule"], action["event_key"], action["payload"]["value"]) == (
        "seven", "order-7", "seven"
    )  # fmt: skip


# -- 7. tail ----------------------------------------------------------------------------------


def test_tail_shows_a_registry_record_decoded(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    schema_registry: str,
    registry: SchemaRegistryClient,
) -> None:
    topic = new_topic(1)
    config = _config(
        tmp_path, bootstrap, group_id, schema_registry,
        namespace=f"{{topics: [{topic}], value_format: registry}}",
        rules="  []\n",
    )  # fmt: skip
    value = AvroSerializer(registry, _PAYMENT_AVRO)(
        {"id": "p-3", "amount": 3, "price": Decimal("3.30"), "tag": b"\x01"}, _value_ctx(topic)
    )
    assert value is not None
    _produce(bootstrap, topic, [("p-3", value)])
    done = run_in_repo(
        "-m", "connector", "tail", "-c", str(config), "--from-beginning", "--max", "1", "--json",
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    event = json.loads(line)
    assert (event["namespace"], event["key"]) == ("shop", "p-3")
    assert json.loads(event["value"]) == {"id": "p-3", "amount": 3, "price": "3.30", "tag": "AQ=="}
