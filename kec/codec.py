"""Kafka record <-> Event (docs/architecture.md, "Events, namespaces and topics").

A record key is the event key (so one key stays ordered on one partition); the event's
metadata travels in headers. Anything that cannot become an Event raises
:class:`~kec.errors.DecodeError`, which the pipeline sends to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kec import jsontext
from kec.errors import DecodeError
from kec.event import (
    CONTENT_BINARY,
    CONTENT_JSON,
    CONTENT_TEXT,
    DEFAULT_NAMESPACE,
    H_CONTENT_TYPE,
    H_CONTEXT,
    H_EVENT_ID,
    H_EVENT_TYPE,
    H_NAMESPACE,
    H_SENDER,
    Event,
    parse_coordinates,
    read_event,
)

_MAPPED = {H_EVENT_ID, H_NAMESPACE, H_SENDER, H_CONTEXT, H_EVENT_TYPE, H_CONTENT_TYPE}


MAX_KEY_BYTES = 1024  # event keys, event ids and the mapped header fields: index-friendly
# pipeline.max_event_bytes's default: a larger value is a dead letter.
MAX_EVENT_BYTES = 1_048_576


def key_problem(text: str) -> str | None:
    """Why ``text`` cannot be an event key, an event id or a mapped header's value (None:
    it can): what the codec refuses in a record."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    if "\x00" in text:
        return "contains a NUL character"
    return None


def explicit_id_problem(event_id: str) -> str | None:
    """Why ``event_id`` cannot be an explicit event id (None: it can)."""
    problem = key_problem(event_id)
    if problem is not None:
        return problem
    if parse_coordinates(event_id) is not None:
        return "has the shape topic/partition/offset, which names Kafka records"
    if _names_a_record(event_id):
        return "has the shape topic/partition/offset@generation, which names Kafka records"
    return None


def _names_a_record(event_id: str) -> bool:
    """``topic/partition/offset``, or ``topic/partition/offset@generation``: the id the
    pipeline gives a record read after an operator reset its partition."""
    if parse_coordinates(event_id) is not None:
        return True
    record, at, generation = event_id.rpartition("@")
    return bool(at) and generation.isdigit() and parse_coordinates(record) is not None


def _text(raw: bytes, header: str | None = None) -> str:
    """A key (``header`` None) or a mapped header's value as text, checked."""
    if len(raw) > MAX_KEY_BYTES:
        raise DecodeError(f"{_what(header)} is {len(raw)} bytes; the limit is {MAX_KEY_BYTES}")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{_what(header)} is not UTF-8") from exc
    if "\x00" in text:
        raise DecodeError(f"{_what(header)} contains a NUL character")
    return text


def _what(header: str | None) -> str:
    return "record key" if header is None else f"header {header!r}"


def event_from_message(
    msg: Any,
    default_namespace: str = DEFAULT_NAMESPACE,
    *,
    max_bytes: int | None = None,
    strict_namespace: bool = False,
    key_decoder: Callable[[bytes], str] | None = None,
    value_decoder: Callable[[bytes], str] | None = None,
) -> Event:
    """Build an Event from a confluent-kafka ``Message``; raise DecodeError if it is not one.

    ``default_namespace`` is the namespace of a record without a ``namespace`` header.
    With ``strict_namespace`` it is the namespace of the record's topic, which a record
    cannot leave: a header naming another namespace is refused (write access to one
    topic must not fire another namespace's rules). Also refused: no key, a null value,
    text that is not UTF-8, a key, event id or metadata header over
    :data:`MAX_KEY_BYTES` or holding NUL, an explicit event id shaped like
    ``topic/partition/offset`` (those name Kafka records: a producer must not pre-claim
    a future record's id), a value that declares ``content-type: application/json`` and
    is not JSON (or nests too deep to parse), and (with ``max_bytes``) a value larger
    than that.

    ``key_decoder`` and ``value_decoder`` (:class:`~kec.kafka.registry.RecordFormats`) turn a
    key or value written with a registered schema into text first; a decoded value is
    JSON (or text), whatever its content-type header says.
    """
    raw_key = msg.key()
    if raw_key is None:
        raise DecodeError("record has no key (an event key is required)")
    if key_decoder is not None and isinstance(raw_key, bytes):
        raw_key = key_decoder(raw_key).encode()
    key = _text(raw_key) if isinstance(raw_key, bytes) else str(raw_key)
    raw_value = msg.value()
    if raw_value is None:
        raise DecodeError("record has a null value (tombstone)")
    if max_bytes is not None and len(raw_value) > max_bytes:
        raise DecodeError(f"value of {len(raw_value)} bytes is over the limit of {max_bytes}")
    meta: dict[str, str] = {}
    extra: list[tuple[str, bytes]] = []
    for name, hval in msg.headers() or ():
        if name in _MAPPED:
            meta[name] = _text(hval, name) if hval is not None else ""
        else:
            extra.append((name, hval if hval is not None else b""))
    namespace = meta.get(H_NAMESPACE) or default_namespace
    if strict_namespace and namespace != default_namespace:
        raise DecodeError(
            f"header namespace={namespace!r} on a topic of namespace {default_namespace!r}; "
            "a record's namespace is its topic's"
        )
    event_id = meta.get(H_EVENT_ID, "")
    if event_id and _names_a_record(event_id):
        raise DecodeError(
            f"event-id header {event_id!r} has the shape topic/partition/offset"
            f"{'@generation' if '@' in event_id else ''}, which names Kafka records; give "
            "another id or none"
        )
    value: str | bytes = raw_value
    parsed: tuple[Any] | None = None
    content_type = meta.get(H_CONTENT_TYPE, "")
    if value_decoder is not None:
        value = value_decoder(raw_value)
    elif content_type != CONTENT_BINARY:
        try:
            text = raw_value.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"value is not UTF-8 text and content-type is not {CONTENT_BINARY}"
            ) from exc
        value = text
        if content_type.startswith(CONTENT_JSON):
            try:
                parsed = (jsontext.checked_document(text),)
            except ValueError as exc:
                raise DecodeError(f"value declared {CONTENT_JSON} is not JSON: {exc}") from exc
            except RecursionError as exc:
                raise DecodeError(f"value declared {CONTENT_JSON} nests too deep") from exc
    _, timestamp = msg.timestamp()
    return read_event(
        key,
        value,
        namespace,
        meta.get(H_SENDER) or None,
        meta.get(H_CONTEXT) or None,
        meta.get(H_EVENT_TYPE) or None,
        timestamp or 0,
        tuple(extra),
        msg.topic(),
        msg.partition(),
        msg.offset(),
        event_id,
        parsed,
    )


def decode_record(msg: Any, namespace: str, max_bytes: int | None = None) -> Event:
    """``event_from_message(msg, namespace, max_bytes=max_bytes, strict_namespace=True)``
    in one call, for the pipeline's hot path (a topic without registered formats).

    The common record (a key, a value, no header or only ``content-type``) is read here
    without the general path's per-record calls, lists and dicts; any other record, and
    any record the general path would refuse, goes to :func:`event_from_message`, so the
    same records are refused with the same errors (``tests/unit/test_codec_fast.py``).
    """
    raw_key = msg.key()
    raw_value = msg.value()
    headers = msg.headers()
    if (
        raw_key.__class__ is not bytes
        or raw_value.__class__ is not bytes
        or len(raw_key) > MAX_KEY_BYTES
        or (max_bytes is not None and len(raw_value) > max_bytes)
    ):
        return _general(msg, namespace, max_bytes)
    declared_json = False
    if headers is not None:
        if len(headers) != 1:
            return _general(msg, namespace, max_bytes)
        name, raw_type = headers[0]
        if name != H_CONTENT_TYPE:
            return _general(msg, namespace, max_bytes)
        known = _content_types.get(raw_type)
        if known is None:
            known = _content_type(raw_type)
        if known is _GENERAL:
            return _general(msg, namespace, max_bytes)
        declared_json = known is _JSON
    try:
        key = raw_key.decode()
        text = raw_value.decode()
    except UnicodeDecodeError:
        return _general(msg, namespace, max_bytes)
    if "\x00" in key:
        return _general(msg, namespace, max_bytes)
    parsed: tuple[Any] | None = None
    if declared_json:
        try:
            parsed = (jsontext.checked_document(text),)
        except (ValueError, RecursionError):
            return _general(msg, namespace, max_bytes)
    _, timestamp = msg.timestamp()
    return read_event(
        key, text, namespace, None, None, None, timestamp or 0, (), msg.topic(),
        msg.partition(), msg.offset(), "", parsed,
    )  # fmt: skip


_BINARY = CONTENT_BINARY.encode()
# What decode_record makes of a content-type header's bytes: a JSON value, other text, or
# a record for the general path (binary, not text, too long, a NUL). Kept for the first
# few values seen (one or two in practice), so the common header costs one lookup.
_JSON, _TEXT, _GENERAL = object(), object(), object()
_content_types: dict[bytes | None, object] = {}
_CONTENT_TYPES_KEPT = 64


def _content_type(raw: bytes | None) -> object:
    """:data:`_JSON`, :data:`_TEXT` or :data:`_GENERAL` for a content-type header's bytes."""
    known = _GENERAL
    if raw is not None and raw != _BINARY and len(raw) <= MAX_KEY_BYTES:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            text = "\x00"  # not UTF-8: the general path says so
        if "\x00" not in text:
            known = _JSON if text.startswith(CONTENT_JSON) else _TEXT
    if len(_content_types) < _CONTENT_TYPES_KEPT:  # hostile records cannot grow it
        _content_types[raw] = known
    return known


def _general(msg: Any, namespace: str, max_bytes: int | None) -> Event:
    return event_from_message(msg, namespace, max_bytes=max_bytes, strict_namespace=True)


class _Outgoing:
    """A record about to be produced, shaped as the consumer's message for the codec."""

    __slots__ = ("_headers", "_key", "_value")

    def __init__(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self._key, self._value, self._headers = key, value, headers

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def topic(self) -> str:
        return ""

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def check_outgoing(
    event: Event, max_bytes: int | None = None
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """``event``'s record (key, value, headers) as a producer of events writes it, once
    the pipeline is known to accept it: decoded here the way the pipeline decodes the
    topic of its namespace (with ``max_bytes``, its ``max_event_bytes``). Raises
    :class:`~kec.errors.DecodeError` for an event that would only reach the dead letters
    (a key or header over :data:`MAX_KEY_BYTES`, a NUL, a value over the limit, text
    that is not Unicode), so a sender can refuse it instead of waiting for it."""
    try:
        record = (event.key.encode(), record_value(event), record_headers(event))
    except UnicodeEncodeError as exc:  # a lone surrogate, from JSON's \ud800 say
        raise DecodeError(f"the event holds text that is not Unicode: {exc.reason}") from exc
    event_from_message(
        _Outgoing(*record), event.namespace, max_bytes=max_bytes, strict_namespace=True
    )
    return record


def record_headers(event: Event) -> list[tuple[str, bytes]]:
    """The headers to produce ``event`` with, its identity first."""
    headers = [
        (H_EVENT_ID, event.event_id.encode()),
        (H_NAMESPACE, event.namespace.encode()),
        (
            H_CONTENT_TYPE,
            (CONTENT_BINARY if isinstance(event.value, bytes) else CONTENT_TEXT).encode(),
        ),
    ]
    for name, field in (
        (H_SENDER, event.sender),
        (H_CONTEXT, event.context),
        (H_EVENT_TYPE, event.event_type),
    ):
        if field:
            headers.append((name, field.encode()))
    headers.extend(event.headers)
    return headers


def record_value(event: Event) -> bytes:
    return event.value if isinstance(event.value, bytes) else event.value.encode()
