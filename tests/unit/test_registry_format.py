"""The schema-registry wire format: what is the record's fault and what is the registry's.

The decoding itself (Avro, Protobuf, JSON Schema) is tested against a real registry in
tests/integration/test_schema_registry.py; here, the framing and the classification that
decides between a dead letter and a retried batch.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connector.config import ConfigFileError, load_config
from kec.errors import DecodeError
from kec.kafka.registry import (
    RegistryDecoder,
    RegistryUnavailable,
    _message_indexes,
    as_text,
)

pytestmark = pytest.mark.unit


class _Answers:
    """A registry client whose every schema request fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.asked = 0

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        raise self.error


def _framed(schema_id: int, body: bytes = b"\x02") -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def test_bytes_without_the_magic_byte_are_the_records_fault() -> None:
    decoder = RegistryDecoder(_Answers(AssertionError("must not be asked")))
    with pytest.raises(DecodeError, match=r"starts with 0x7b, not the magic byte"):
        decoder.decode(b'{"plain": "json"}')
    with pytest.raises(DecodeError, match="starts with nothing"):
        decoder.decode(b"", "record key")
    with pytest.raises(DecodeError, match="record key is not in"):
        decoder.decode(b"\x00\x00\x01", "record key")


def test_an_unknown_schema_id_is_a_dead_letter_and_not_asked_again_at_once() -> None:
    client = _Answers(SchemaRegistryError(404, 40403, "Schema 77 not found"))
    decoder = RegistryDecoder(client)
    for _ in range(3):
        with pytest.raises(DecodeError, match="schema id 77: the registry does not know it"):
            decoder.decode(_framed(77))
    assert client.asked == 1


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (SchemaRegistryError(500, 50001, "storage down"), "answered 500"),
        (SchemaRegistryError(401, 40101, "Unauthorized"), "basic_auth_user_info"),
        (ConnectionRefusedError(111, "Connection refused"), "unreachable"),
    ],
)
def test_a_registry_that_cannot_answer_is_retried_not_dead_lettered(
    error: Exception, hint: str
) -> None:
    client = _Answers(error)
    decoder = RegistryDecoder(client)
    for _ in range(2):
        with pytest.raises(RegistryUnavailable, match=hint):
            decoder.decode(_framed(5))
    assert client.asked == 2  # an outage is not remembered: the next batch asks again
    assert not issubclass(RegistryUnavailable, DecodeError)


def test_protobuf_message_indexes() -> None:
    assert _message_indexes(b"\x00", 0) == ([0], 1)  # the common case: the first message
    # count 2 (zigzag 4), then 1 (zigzag 2) and 0: the first nested type of message 1
    assert _message_indexes(b"\x04\x02\x00rest", 0) == ([1, 0], 3)
    with pytest.raises(DecodeError, match="cut short"):
        _message_indexes(b"\x04\x02", 0)
    with pytest.raises(DecodeError, match="out of range"):
        _message_indexes(b"\x03", 0)  # zigzag -2


def test_decoded_values_become_text_the_rules_read() -> None:
    assert as_text("ord-1") == "ord-1"
    assert as_text(42) == "42"
    assert as_text(None) == "null"
    assert as_text({"amount": Decimal("12.50"), "raw": b"\x00\xff"}) == (
        '{"amount":"12.50","raw":"AP8="}'
    )
    assert as_text([1, {"a": True}]) == '[1,{"a":true}]'


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(text)
    return path


def test_a_registry_format_without_a_registry_is_refused_with_its_line(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "kafka:\n"
        "  bootstrap_servers: localhost:9092\n"
        "namespaces:\n"
        "  orders:\n"
        "    topics: [orders]\n"
        "    value_format: registry\n",
    )
    with pytest.raises(ConfigFileError) as err:
        load_config(path)
    assert f"{path}:6 namespaces.orders.value_format: registry needs a schema_registry:" in str(
        err.value
    )


def test_registry_settings_reach_the_client_and_the_topics_are_known(tmp_path: Path) -> None:
    (tmp_path / "registry-auth").write_text("reader:s3cret\n")
    path = _config(
        tmp_path,
        "kafka:\n"
        "  bootstrap_servers: localhost:9092\n"
        "schema_registry:\n"
        "  url: https://registry.example:8081/apis/ccompat/v7\n"
        "  basic_auth_user_info: ${file:registry-auth}\n"
        "  ssl_ca_location: /etc/ca.pem\n"
        "namespaces:\n"
        "  orders:\n"
        "    topics: [orders, orders-eu]\n"
        "    value_format: registry\n"
        "  users:\n"
        "    key_format: registry\n",
    )
    cfg = load_config(path)
    assert cfg.schema_registry is not None
    assert cfg.schema_registry.client_conf() == {
        "url": "https://registry.example:8081/apis/ccompat/v7",
        "timeout": 10.0,
        "basic.auth.user.info": "reader:s3cret",
        "ssl.ca.location": "/etc/ca.pem",
    }
    assert "s3cret" not in repr(cfg.schema_registry)
    assert "reader:s3cret" in cfg.secrets()
    assert cfg.registry_topics() == (
        frozenset({"events.users"}),
        frozenset({"orders", "orders-eu"}),
    )


def test_a_registry_url_must_be_http(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "kafka:\n"
        "  bootstrap_servers: localhost:9092\n"
        "schema_registry:\n"
        "  url: registry:8081\n"
        "namespaces:\n"
        "  orders: {}\n",
    )
    with pytest.raises(ConfigFileError, match=r":4 schema_registry.url"):
        load_config(path)


class _Registered:
    """What a registry answers for one Protobuf schema, by the format asked for."""

    def __init__(self, text: str, serialized: str) -> None:
        self.by_format = {None: text, "serialized": serialized}
        self.asked: list[str | None] = []

    def get_schema(self, schema_id: int, *args: Any, fmt: str | None = None, **kw: Any) -> Any:
        from confluent_kafka.schema_registry import Schema

        self.asked.append(fmt)
        return Schema(self.by_format[fmt], "PROTOBUF")


def test_protobuf_schemas_are_asked_for_as_serialized_descriptors() -> None:
    """Confluent's registry answers .proto text unless asked for format=serialized: the
    decoder asks its descriptors client so, and reads the message the indexes name."""
    import base64

    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name="shop.proto", package="shop", syntax="proto3")
    first = file.message_type.add(name="Order")
    first.field.add(name="id", number=1, type=9, label=1)
    second = file.message_type.add(name="Refund")
    second.field.add(name="amount", number=1, type=3, label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    refund = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Refund"))(amount=7)
    serialized = base64.b64encode(file.SerializeToString()).decode()
    text = 'syntax = "proto3"; package shop; message Order {...}'  # text: not readable here
    main, descriptors = _Registered(text, serialized), _Registered(text, serialized)
    decoder = RegistryDecoder(main, descriptors)
    # indexes: count 1 (zigzag 2), index 1 (zigzag 2): the second top-level message
    framed = b"\x00" + (9).to_bytes(4, "big") + b"\x02\x02" + refund.SerializeToString()
    assert decoder.decode(framed) == '{"amount":"7"}'  # int64 as text: Protobuf's JSON form
    assert descriptors.asked == ["serialized"] and main.asked == [None]
    with pytest.raises(DecodeError, match="not a serialized descriptor"):
        RegistryDecoder(_Registered(text, serialized)).decode(framed)
