"""The dev schema registry (Apicurio) serves confluent_kafka's schema registry client and
serializers: Avro and Protobuf values round-trip with their schema id in the frame."""

from __future__ import annotations

import shutil
import struct
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the dev schema registry needs Java and Maven (make installs them)",
)

_ORDER_AVRO = """
{"type": "record", "name": "Order", "namespace": "kec.test",
 "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}]}
"""


@pytest.fixture
def client_of(schema_registry: str) -> Iterator[Callable[[], SchemaRegistryClient]]:
    """Factory of clients of the dev registry, each closed after the test."""
    made: list[SchemaRegistryClient] = []

    def make() -> SchemaRegistryClient:
        made.append(SchemaRegistryClient({"url": schema_registry}))
        return made[-1]

    yield make
    for client in made:
        client.close()


def _frame_id(payload: bytes) -> int:
    """The schema id in Confluent's wire format: magic byte 0, then a big-endian int."""
    magic, schema_id = struct.unpack(">bI", payload[:5])
    assert magic == 0
    return int(schema_id)


def _order_message_class() -> Any:
    """A Protobuf message class made at run time from a descriptor (no generated code)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"order_{uuid.uuid4().hex[:8]}.proto", package="kec.test", syntax="proto3"
    )
    message = proto.message_type.add(name="Order")
    message.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)  # fmt: skip
    message.field.add(name="amount", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("kec.test.Order"))


def test_avro_round_trip(client_of: Callable[[], SchemaRegistryClient]) -> None:
    client = client_of()
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, _ORDER_AVRO)
    payload = serializer({"id": "o-1", "amount": 42}, ctx)
    assert payload is not None

    registered = client.get_latest_version(f"{topic}-value")
    assert _frame_id(payload) == registered.schema_id
    assert client.get_schema(registered.schema_id).schema_type == "AVRO"
    # A fresh client, as a consumer in another process: the id is all it has.
    reader = AvroDeserializer(client_of())
    assert reader(payload, ctx) == {"id": "o-1", "amount": 42}


def test_protobuf_round_trip(client_of: Callable[[], SchemaRegistryClient]) -> None:
    client = client_of()
    order = _order_message_class()
    topic = f"orders-pb-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    serializer = ProtobufSerializer(order, client, {"use.deprecated.format": False})
    payload = serializer(order(id="o-2", amount=7), ctx)
    assert payload is not None

    registered = client.get_latest_version(f"{topic}-value")
    assert registered.schema.schema_type == "PROTOBUF"
    assert _frame_id(payload) == registered.schema_id
    decoded = ProtobufDeserializer(order, {"use.deprecated.format": False})(payload, ctx)
    assert (decoded.id, decoded.amount) == ("o-2", 7)


def test_unknown_schema_id_fails_to_deserialize(
    client_of: Callable[[], SchemaRegistryClient],
) -> None:
    client = client_of()
    known = client.register_schema(f"known-{uuid.uuid4().hex[:8]}", Schema(_ORDER_AVRO, "AVRO"))
    unknown = known + 100_000
    payload = struct.pack(">bI", 0, unknown) + b"\x02x\x02"
    reader = AvroDeserializer(client)
    with pytest.raises(SchemaRegistryError) as caught:
        reader(payload, SerializationContext("any", MessageField.VALUE))
    assert caught.value.http_status_code == 404
