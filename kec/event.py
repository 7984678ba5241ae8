"""The Event: what a producer sent, plus where Kafka put it (docs/architecture.md).

Immutable, picklable and JSON-serializable, so a Ray-style listener can hand it from the
polling instance to the committing one, even in another process.

Identity (``event_id``): the ``event-id`` header when the producer set one (our clients
always do; the HTTP gateway takes it from ``Idempotency-Key``), else
``topic/partition/offset``. Dedup everywhere is by ``event_id``, so an application-level
resend of the same event is caught as well as a Kafka redelivery. Which ids are
``topic/partition/offset`` is decided in one place, :func:`parse_coordinates`: the codec
refuses those as explicit ids, and the store looks those up by where they are.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kec.jsontext import document

DEFAULT_NAMESPACE = "default"
# Namespace N lives in topic f"{DEFAULT_TOPIC_PREFIX}{N}" unless configured otherwise (§3).
DEFAULT_TOPIC_PREFIX = "events."

# Header names (docs/architecture.md, "Events, namespaces and topics"). Values are UTF-8.
H_EVENT_ID = "event-id"
H_NAMESPACE = "namespace"
H_SENDER = "sender"
H_CONTEXT = "context"
H_EVENT_TYPE = "event-type"
H_CONTENT_TYPE = "content-type"

CONTENT_TEXT = "text/plain; charset=utf-8"
CONTENT_JSON = "application/json"
CONTENT_BINARY = "application/octet-stream"

Headers = tuple[tuple[str, bytes], ...]

# Kafka's rules: a topic name is 1-249 of these characters, but not "." or ".."; a
# partition is a non-negative int32 and an offset a non-negative int64.
_COORDINATES = re.compile(r"([a-zA-Z0-9._-]{1,249})/([0-9]+)/([0-9]+)", re.ASCII)
MAX_PARTITION = 2**31 - 1
MAX_OFFSET = 2**63 - 1

TP = tuple[str, int]
"""A partition of a topic, ``(topic, partition)``: the one meaning of ``TP`` (and of the
store's) in the project. The Kafka client's own class is
``kec.kafka.KafkaTopicPartition``, built only where a client call needs one."""


def parse_coordinates(event_id: str) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` when ``event_id`` names a Kafka record, that is when
    it is ``topic/partition/offset`` with a valid topic name and a partition and offset
    Kafka could give; None for every other id, which is an explicit one.

    The one definition both sides use: the codec refuses such an id as explicit (it would
    name another record), the store finds such an id by where it is, and finds any other
    id among the explicit ones, so an id accepted by one is never misread by the other.
    """
    found = _COORDINATES.fullmatch(event_id)
    if found is None or found[1] in (".", ".."):
        return None
    partition, offset = int(found[2]), int(found[3])
    if partition > MAX_PARTITION or offset > MAX_OFFSET:
        return None
    return found[1], partition, offset


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """One event. ``value`` is ``str`` for text and JSON, ``bytes`` for binary payloads."""

    key: str
    value: str | bytes
    namespace: str = DEFAULT_NAMESPACE
    sender: str | None = None
    context: str | None = None
    event_type: str | None = None
    create_time: int = 0  # milliseconds since the epoch; 0 means "now" at construction
    headers: Headers = ()  # headers other than the ones mapped to fields above
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    event_id: str = ""
    # Worked out once here: the hot path asks several times per event.
    _explicit: bool = field(default=True, init=False, repr=False, compare=False)
    # The value as a JSON document, ``(doc,)`` once parsed (see document()).
    _document: tuple[Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __init__(
        self,
        key: str,
        value: str | bytes,
        namespace: str = DEFAULT_NAMESPACE,
        sender: str | None = None,
        context: str | None = None,
        event_type: str | None = None,
        create_time: int = 0,
        headers: Headers = (),
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        event_id: str = "",
    ) -> None:
        # Frozen, yet built through the slots' own setters: the generated frozen __init__
        # (object.__setattr__ per field) cost ~6 us an event, a quarter of the hot path.
        if not create_time:
            create_time = int(time.time() * 1000)
        placed = topic is not None and partition is not None and offset is not None
        if not event_id:
            # A new event outside Kafka gets a fresh id, sent with it in its header.
            event_id = f"{topic}/{partition}/{offset}" if placed else uuid.uuid4().hex
            explicit = not placed
        elif placed:
            explicit = event_id != f"{topic}/{partition}/{offset}"
        else:
            explicit = True
        _fill(self, key, value, namespace, sender, context, event_type, create_time, headers,
              topic, partition, offset, event_id, explicit)  # fmt: skip

    @property
    def coordinates(self) -> tuple[str, int, int] | None:
        """``(topic, partition, offset)`` when the event came from Kafka."""
        if self.topic is None or self.partition is None or self.offset is None:
            return None
        return (self.topic, self.partition, self.offset)

    @property
    def explicit_id(self) -> bool:
        """Whether the id was given (``event-id`` header, ``Idempotency-Key``, a client)
        rather than taken from the Kafka coordinates."""
        return self._explicit

    @property
    def text(self) -> str:
        """The value as text (binary values decoded as UTF-8, invalid bytes replaced)."""
        return self.value if isinstance(self.value, str) else self.value.decode(errors="replace")

    def document(self) -> dict[str, Any] | list[Any] | None:
        """The value parsed when it is a JSON object or array, None for any other value
        (:func:`kec.jsontext.document`). Parsed once per event (the codec's JSON check
        gives it), however many rules and actions ask; callers do not change it."""
        known = self._document
        if known is None:
            known = (document(self.value) if isinstance(self.value, str) else None,)
            _set_document(self, known)  # two threads may both parse it: the same document
        return known[0]

    def json_value(self) -> Any:
        """The value parsed as JSON; raises ``ValueError`` when it is not JSON."""
        return json.loads(self.value)

    def with_coordinates(self, topic: str, partition: int, offset: int) -> Event:
        return replace(self, topic=topic, partition=partition, offset=offset)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["_explicit"], data["_document"]
        if isinstance(self.value, bytes):
            data["value"] = {"b64": base64.b64encode(self.value).decode()}
        data["headers"] = [[k, base64.b64encode(v).decode()] for k, v in self.headers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        data = dict(data)
        value = data["value"]
        if isinstance(value, dict):
            data["value"] = base64.b64decode(value["b64"])
        data["headers"] = tuple((k, base64.b64decode(v)) for k, v in data.get("headers", ()))
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        return cls.from_dict(json.loads(text))


# The slots' setters, for Event.__init__ (see there).
_set_key = Event.__dict__["key"].__set__
_set_value = Event.__dict__["value"].__set__
_set_namespace = Event.__dict__["namespace"].__set__
_set_sender = Event.__dict__["sender"].__set__
_set_context = Event.__dict__["context"].__set__
_set_event_type = Event.__dict__["event_type"].__set__
_set_create_time = Event.__dict__["create_time"].__set__
_set_headers = Event.__dict__["headers"].__set__
_set_topic = Event.__dict__["topic"].__set__
_set_partition = Event.__dict__["partition"].__set__
_set_offset = Event.__dict__["offset"].__set__
_set_event_id = Event.__dict__["event_id"].__set__
_set_explicit = Event.__dict__["_explicit"].__set__
_set_document = Event.__dict__["_document"].__set__


class _Building:
    """An :class:`Event` being built: the same slots, in the same order, without the
    frozen dataclass's ``__setattr__``, so they are filled by plain attribute stores
    (about half the cost of calling each slot's setter), and the object then becomes an
    Event by ``__class__`` assignment, which Python allows between classes of the same
    layout (and refuses with TypeError if they ever differ). For the codec's hot path."""

    __slots__ = Event.__slots__


def read_event(
    key: str,
    value: str | bytes,
    namespace: str,
    sender: str | None,
    context: str | None,
    event_type: str | None,
    create_time: int,
    headers: Headers,
    topic: str,
    partition: int,
    offset: int,
    event_id: str,
    parsed: tuple[Any] | None = None,
) -> Event:
    """The Event of a Kafka record, as ``Event(...)`` builds it, for the codec: once per
    record, so without the type call and its keywords (about 40% of the cost). An
    ``event_id`` given is explicit: the codec refuses ids that name a record.
    ``parsed``: ``(doc,)``, the value's :meth:`Event.document` if the codec parsed it."""
    event: Any = _new(_Building)  # Any: its slots are Event's (tests hold the two equal)
    if event_id:
        event.event_id = event_id
        event._explicit = True
    else:
        event.event_id = f"{topic}/{partition}/{offset}"
        event._explicit = False
    event.key = key
    event.value = value
    event.namespace = namespace
    event.sender = sender
    event.context = context
    event.event_type = event_type
    event.create_time = create_time if create_time > 0 else int(time.time() * 1000)
    event.headers = headers
    event.topic = topic
    event.partition = partition
    event.offset = offset
    event._document = parsed
    event.__class__ = Event
    return event  # type: ignore[no-any-return]


_new = object.__new__


def _fill(
    event: Event,
    key: str,
    value: str | bytes,
    namespace: str,
    sender: str | None,
    context: str | None,
    event_type: str | None,
    create_time: int,
    headers: Headers,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    event_id: str,
    explicit: bool,
) -> None:
    """Every slot of a new ``event``, for ``Event(...)`` (:func:`read_event` fills the
    codec's events by plain stores instead)."""
    _set_key(event, key)
    _set_value(event, value)
    _set_namespace(event, namespace)
    _set_sender(event, sender)
    _set_context(event, context)
    _set_event_type(event, event_type)
    _set_create_time(event, create_time)
    _set_headers(event, headers)
    _set_topic(event, topic)
    _set_partition(event, partition)
    _set_offset(event, offset)
    _set_event_id(event, event_id)
    _set_explicit(event, explicit)
    _set_document(event, None)
