"""Records in the Confluent wire format, decoded with their registered schema.

Producers that use a schema registry write a value (or key) as one magic byte ``0``, the
schema's id as four big-endian bytes, then (Protobuf only) the message's indexes in the
schema, then the encoded data. :class:`RegistryDecoder` fetches the writer's schema by
id (once: schemas under an id never change), decodes the data with it and gives the
value as text the rules can read: a record, map or array as JSON, a string as itself,
another scalar as its JSON text. Avro bytes and fixed values become base64 text.

What goes wrong is told apart, because the two must be treated oppositely:

* the record's fault (no magic byte, an id the registry does not know, data that does
  not match its schema): :class:`~kec.errors.DecodeError`, so the record becomes a dead
  letter with that reason and the pipeline moves on;
* the registry's (unreachable, answering 5xx, refusing the credentials):
  :class:`RegistryUnavailable`, so the batch is read again later: a registry outage must
  never turn good records into dead letters.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import orjson

from kec.errors import ConnectorError, DecodeError

__all__ = [
    "RecordFormats",
    "RegistryDecoder",
    "RegistryUnavailable",
    "registry_client",
]

MAGIC = 0
UNKNOWN_TTL = 30.0  # seconds an unknown schema id is not asked for again
_NOT_FOUND = (40401, 40403, 40402)  # subject, schema, version not found


class RegistryUnavailable(ConnectorError):
    """The schema registry could not answer (down, 5xx, credentials refused): the batch
    waiting for it is read again later; no record is dead-lettered for it."""

    retriable = True


def registry_client(conf: Mapping[str, Any]) -> Any:
    """A confluent-kafka ``SchemaRegistryClient`` for ``conf`` (its ``url``,
    ``basic.auth.user.info``, ``ssl.*`` keys). No request is made until a schema is asked for."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient(dict(conf))


@dataclass(frozen=True)
class _Schema:
    kind: str  # AVRO, PROTOBUF or JSON
    decode: Callable[[bytes], Any]  # the whole framed record -> Python value


class RegistryDecoder:
    """Decodes wire-format bytes with the registered writer schema (see the module)."""

    def __init__(self, client: Any, descriptors: Any = None) -> None:
        """``client``: a confluent-kafka ``SchemaRegistryClient`` (:func:`registry_client`);
        ``descriptors``: another one, used only to ask for Protobuf schemas as serialized
        descriptors (``format=serialized``: Confluent's registry hands out ``.proto`` text
        otherwise, and the client caches a schema whatever its format, hence its own)."""
        self._client = client
        self._descriptors = descriptors
        self._schemas: dict[int, _Schema] = {}
        self._unknown: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()  # the pipeline and the tools may share one decoder

    def decode(self, data: bytes, what: str = "value") -> str:
        """``data`` as text (see the module); ``what`` names the part in errors."""
        if len(data) < 5 or data[0] != MAGIC:
            first = f"0x{data[0]:02x}" if data else "nothing"
            raise DecodeError(
                f"{what} is not in the schema registry's wire format (starts with {first}, "
                "not the magic byte 0x00 and a schema id)"
            )
        schema_id = int.from_bytes(data[1:5], "big")
        schema = self._schema(schema_id, what)
        try:
            decoded = schema.decode(data)
        except (RegistryUnavailable, DecodeError):
            raise
        except Exception as exc:
            raise DecodeError(
                f"{what} does not match its {schema.kind} schema (id {schema_id}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return as_text(decoded)

    def close(self) -> None:
        for client in (self._client, self._descriptors):
            close = getattr(client, "close", None)
            if close is not None:
                close()

    # -- schemas ------------------------------------------------------------------------

    def _schema(self, schema_id: int, what: str) -> _Schema:
        found = self._schemas.get(schema_id)
        if found is not None:
            return found
        with self._lock:
            found = self._schemas.get(schema_id)
            if found is not None:
                return found
            unknown = self._unknown.get(schema_id)
            if unknown is not None and time.monotonic() < unknown[0]:
                raise DecodeError(f"{what} names schema id {schema_id}: {unknown[1]}")
            registered = self._fetch(lambda: self._client.get_schema(schema_id), schema_id, what)
            schema = self._compile(registered, schema_id, what)
            self._schemas[schema_id] = schema
            return schema

    def _fetch(self, ask: Callable[[], Any], schema_id: int, what: str) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return ask()
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404 or exc.error_code in _NOT_FOUND:
                reason = f"the registry does not know it ({exc.error_message})"
                self._unknown[schema_id] = (time.monotonic() + UNKNOWN_TTL, reason)
                raise DecodeError(f"{what} names schema id {schema_id}: {reason}") from exc
            hint = (
                " (check schema_registry.basic_auth_user_info)"
                if exc.http_status_code in (401, 403)
                else ""
            )
            raise RegistryUnavailable(
                f"schema registry answered {exc.http_status_code} for schema id "
                f"{schema_id}: {exc.error_message}{hint}"
            ) from exc
        except Exception as exc:
            raise RegistryUnavailable(
                f"schema registry unreachable for schema id {schema_id}: "
                f"{type(exc).__name__}: {exc} (check schema_registry.url)"
            ) from exc

    def _compile(self, registered: Any, schema_id: int, what: str) -> _Schema:
        kind = (registered.schema_type or "AVRO").upper()
        if kind == "AVRO":
            from confluent_kafka.schema_registry.avro import AvroDeserializer

            avro = AvroDeserializer(self._client)
            return _Schema(kind, lambda data: avro(data, None))
        if kind == "JSON":
            from confluent_kafka.schema_registry.json_schema import JSONDeserializer

            # The default subject strategy needs the topic, which this decoder is not
            # given; no subject is wanted anyway: the record is read with the writer's schema.
            json_schema = JSONDeserializer(
                None,
                schema_registry_client=self._client,
                conf={"subject.name.strategy": _no_subject},
            )
            return _Schema(kind, lambda data: json_schema(data, None))
        if kind == "PROTOBUF":
            message_of = self._protobuf(registered, schema_id, what)
            return _Schema(kind, message_of)
        raise DecodeError(f"{what} names schema id {schema_id} of unknown type {kind!r}")

    def _protobuf(self, registered: Any, schema_id: int, what: str) -> Callable[[bytes], Any]:
        """A decoder for Protobuf records of ``registered``: the message the record's
        indexes point at, built from the schema's descriptor (no generated code needed)."""
        from google.protobuf import descriptor_pool, json_format, message_factory

        if self._descriptors is not None:
            registered = self._fetch(
                partial(self._descriptors.get_schema, schema_id, fmt="serialized"), schema_id, what
            )
        pool = descriptor_pool.DescriptorPool()
        main = self._add_file(pool, registered, f"schema-{schema_id}.proto", schema_id, set())
        top = [
            pool.FindMessageTypeByName(_qualified(main.package, m.name)) for m in main.message_type
        ]

        def decode(data: bytes) -> Any:
            indexes, start = _message_indexes(data, 5)
            descriptor = _message_at(top, indexes)
            message = message_factory.GetMessageClass(descriptor)()
            message.ParseFromString(data[start:])
            return json_format.MessageToDict(message, preserving_proto_field_name=True)

        return decode

    def _add_file(
        self, pool: Any, registered: Any, name: str, schema_id: int, seen: set[str]
    ) -> Any:
        """Add ``registered`` (and what it imports) to ``pool``; its file descriptor."""
        from google.protobuf import descriptor_pb2, descriptor_pool

        proto = _file_proto(registered.schema_str, name)
        seen.add(proto.name)
        given = {ref.name: ref for ref in registered.references or ()}
        for dependency in proto.dependency:
            if dependency in seen:
                continue
            ref = given.get(dependency)
            if ref is not None:
                imported = self._fetch(
                    partial(self._referenced, ref.subject, ref.version), schema_id, name
                )
                self._add_file(pool, imported, dependency, schema_id, seen)
                continue
            _import_well_known()
            try:
                known = descriptor_pool.Default().FindFileByName(dependency)
            except KeyError as exc:
                raise DecodeError(
                    f"Protobuf schema id {schema_id} imports {dependency!r}, which it does "
                    "not reference"
                ) from exc
            file_proto = descriptor_pb2.FileDescriptorProto()
            known.CopyToProto(file_proto)
            seen.add(dependency)
            pool.Add(file_proto)
        pool.Add(proto)
        return proto

    def _referenced(self, subject: str, version: int) -> Any:
        if self._descriptors is not None:
            return self._descriptors.get_version(subject, version, fmt="serialized").schema
        return self._client.get_version(subject, version).schema


def _no_subject(ctx: Any, record_name: Any) -> None:
    return None


def _file_proto(schema_str: str, name: str) -> Any:
    """The schema as a ``FileDescriptorProto``: registries hand Protobuf schemas out as the
    base64 of the serialized descriptor (how confluent-kafka registers them), or as
    ``.proto`` text."""
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    try:
        raw = base64.b64decode(schema_str, validate=True)
        proto.MergeFromString(raw)
    except Exception as exc:
        raise DecodeError(
            f"Protobuf schema {name} is not a serialized descriptor; .proto text is not read yet"
        ) from exc
    if not proto.name:
        proto.name = name
    return proto


def _import_well_known() -> None:
    # Importing the generated modules registers the well-known types in the default pool.
    from google.protobuf import (  # noqa: F401
        any_pb2,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )


def _message_indexes(data: bytes, at: int) -> tuple[list[int], int]:
    """The message indexes after the schema id (zigzag varints: a count, then the path);
    a count of 0 means the first message, ``[0]``."""
    count, at = _zigzag(data, at)
    if count == 0:
        return [0], at
    if count < 0 or count > 64:
        raise DecodeError(f"Protobuf message index count {count} is out of range")
    indexes = []
    for _ in range(count):
        index, at = _zigzag(data, at)
        indexes.append(index)
    return indexes, at


def _zigzag(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise DecodeError("Protobuf message indexes are cut short")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), at


def _qualified(package: str, name: str) -> str:
    return f"{package}.{name}" if package else name


def _message_at(top: list[Any], indexes: list[int]) -> Any:
    """The message descriptor at ``indexes`` (declaration order, then nested types)."""
    messages = top
    descriptor = None
    for index in indexes:
        if not 0 <= index < len(messages):
            raise DecodeError(f"Protobuf message index {index} is not in the schema")
        descriptor = messages[index]
        messages = list(descriptor.nested_types)
    return descriptor


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no JSON form")


def as_text(value: Any) -> str:
    """A decoded value as event text: str as itself, anything else as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=_plain, option=orjson.OPT_NON_STR_KEYS).decode()


@dataclass(frozen=True)
class RecordFormats:
    """Which topics' keys and values are in the wire format, and the decoder for them."""

    decoder: RegistryDecoder
    keys: frozenset[str] = frozenset()
    values: frozenset[str] = frozenset()

    def key_decoder(self, topic: str) -> Callable[[bytes], str] | None:
        if topic not in self.keys:
            return None
        return lambda raw: self.decoder.decode(raw, "record key")

    def value_decoder(self, topic: str) -> Callable[[bytes], str] | None:
        if topic not in self.values:
            return None
        return self.decoder.decode
