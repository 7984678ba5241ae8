"""Event and codec: serialization, identity and decoding, without a broker.

The codec reads a confluent-kafka ``Message`` through six methods; the small stand-in
below has just those, which is enough for this pure logic (integration tests use Kafka).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import time
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kec.codec import event_from_message, record_headers, record_value
from kec.errors import DecodeError
from kec.evaluation import event_value
from kec.event import (
    CONTENT_BINARY,
    CONTENT_JSON,
    H_CONTENT_TYPE,
    H_CONTEXT,
    H_EVENT_ID,
    H_EVENT_TYPE,
    H_NAMESPACE,
    H_SENDER,
    Event,
    read_event,
)
from kec.jsontext import document

RawHeaders = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Record:
    """The part of ``confluent_kafka.Message`` the codec reads."""

    raw_key: bytes | None
    raw_value: bytes | None
    raw_headers: RawHeaders | None = None
    where: tuple[str, int, int] = ("orders", 2, 41)
    timestamp_ms: int = 1_700_000_000_123

    def key(self) -> bytes | None:
        return self.raw_key

    def value(self) -> bytes | None:
        return self.raw_value

    def headers(self) -> RawHeaders | None:
        return self.raw_headers

    def topic(self) -> str:
        return self.where[0]

    def partition(self) -> int:
        return self.where[1]

    def offset(self) -> int:
        return self.where[2]

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)  # TIMESTAMP_CREATE_TIME


def full_event(value: str | bytes) -> Event:
    return Event(
        key="order-7",
        value=value,
        namespace="shop",
        sender="billing",
        context="wf-run-3",
        event_type="order.paid",
        create_time=1_700_000_000_000,
        headers=(("trace", b"\x00\xffid"), ("empty", b"")),
        topic="shop-events",
        partition=1,
        offset=99,
        event_id="e-123",
    )


# -- serialization -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["caf\u00e9 \u2615", b"\x00\xff\xfe binary", b""])
def test_json_round_trip_keeps_every_field(value: str | bytes) -> None:
    event = full_event(value)
    text = event.to_json()
    assert isinstance(json.loads(text), dict)  # plain JSON, bytes carried as base64
    back = Event.from_json(text)
    assert back == event
    assert type(back.value) is type(value)
    assert back.headers == event.headers


@pytest.mark.parametrize("value", ["text", b"\x00\xff"])
def test_pickle_round_trip_keeps_every_field(value: str | bytes) -> None:
    event = full_event(value)
    assert pickle.loads(pickle.dumps(event)) == event


def test_event_is_immutable() -> None:
    event = full_event("x")
    with pytest.raises(AttributeError):
        event.key = "other"  # type: ignore[misc]


# -- identity ------------------------------------------------------------------------


def test_event_id_given_wins_over_coordinates() -> None:
    event = Event(key="k", value="v", topic="t", partition=0, offset=5, event_id="mine")
    assert event.event_id == "mine"


def test_event_id_defaults_to_coordinates() -> None:
    event = Event(key="k", value="v", topic="t", partition=3, offset=5)
    assert event.event_id == "t/3/5"
    assert event.coordinates == ("t", 3, 5)


def test_new_event_without_coordinates_gets_a_unique_id() -> None:
    first, second = Event(key="k", value="v"), Event(key="k", value="v")
    assert first.coordinates is None
    assert first.event_id and second.event_id and first.event_id != second.event_id


def test_codec_uses_event_id_header() -> None:
    record = Record(b"k", b"v", [(H_EVENT_ID, b"producer-id")])
    assert event_from_message(record).event_id == "producer-id"


def test_codec_without_event_id_header_uses_coordinates() -> None:
    event = event_from_message(Record(b"k", b"v", None, where=("orders", 2, 41)))
    assert event.event_id == "orders/2/41"
    assert event.coordinates == ("orders", 2, 41)


# -- decoding ------------------------------------------------------------------------


def test_codec_maps_headers_to_fields_and_keeps_the_rest() -> None:
    record = Record(
        b"order-7",
        b'{"total": 3}',
        [
            (H_NAMESPACE, b"shop"),
            (H_SENDER, b"billing"),
            (H_CONTEXT, b"wf-run-3"),
            (H_EVENT_TYPE, b"order.paid"),
            (H_CONTENT_TYPE, CONTENT_JSON.encode()),
            ("trace", b"\xff"),
            ("none", None),
        ],
    )
    event = event_from_message(record)
    assert (event.key, event.value, event.namespace) == ("order-7", '{"total": 3}', "shop")
    assert (event.sender, event.context, event.event_type) == ("billing", "wf-run-3", "order.paid")
    assert event.headers == (("trace", b"\xff"), ("none", b""))
    assert event.create_time == 1_700_000_000_123
    assert event.json_value() == {"total": 3}


def test_codec_namespace_defaults_to_the_topics() -> None:
    assert event_from_message(Record(b"k", b"v"), "payments").namespace == "payments"
    assert event_from_message(Record(b"k", b"v")).namespace == "default"


def test_binary_content_type_keeps_bytes() -> None:
    utf8_but_binary = Record(b"k", b"plain ascii", [(H_CONTENT_TYPE, CONTENT_BINARY.encode())])
    assert event_from_message(utf8_but_binary).value == b"plain ascii"
    raw = Record(b"k", b"\x89PNG\xff", [(H_CONTENT_TYPE, CONTENT_BINARY.encode())])
    assert event_from_message(raw).value == b"\x89PNG\xff"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (Record(None, b"v"), "no key"),
        (Record(b"\xff\xfe", b"v"), "key is not UTF-8"),
        (Record(b"k", None), "null value"),
        (Record(b"k", b"\xff\xfe"), "not UTF-8 text"),
        (Record(b"k", b"v", [(H_SENDER, b"\xff")]), "header 'sender' is not UTF-8"),
        (Record(b"k" * 1025, b"v"), "record key is 1025 bytes; the limit is 1024"),
        (Record(b"k\x00", b"v"), "record key contains a NUL"),
        (Record(b"k", b"v", [(H_CONTEXT, b"a\x00b")]), "header 'context' contains a NUL"),
        (Record(b"k", b"v", [(H_EVENT_ID, b"orders/2/42")]), "shape topic/partition/offset"),
        (Record(b"k", b"v", [(H_EVENT_ID, b"orders/2/42@1")]), "offset@generation"),
        (Record(b"k", b"v", [(H_EVENT_ID, b"x" * 2000)]), "header 'event-id' is 2000 bytes"),
    ],
    ids=[
        "no-key",
        "key-not-utf8",
        "null-value",
        "text-value-not-utf8",
        "header-not-utf8",
        "key-too-long",
        "key-with-nul",
        "context-with-nul",
        "id-like-coordinates",
        "id-like-coordinates-after-a-reset",
        "id-too-long",
    ],
)
def test_codec_rejects_what_cannot_be_an_event(record: Record, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        event_from_message(record)


def test_codec_rejects_declared_json_that_is_not_json() -> None:
    bad = Record(b"k", b"{not json", [(H_CONTENT_TYPE, CONTENT_JSON.encode())])
    with pytest.raises(DecodeError, match="declared application/json is not JSON"):
        event_from_message(bad)
    good = Record(b"k", b'{"a": 1}', [(H_CONTENT_TYPE, CONTENT_JSON.encode())])
    assert event_from_message(good).json_value() == {"a": 1}
    # Without the declaration, text is text: no JSON check.
    assert event_from_message(Record(b"k", b"{not json")).value == "{not json"


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b'{"a": [1, 2.5], "big": 123456789012345678901}', CONTENT_JSON), (b"[1, {}]", None),
     (b'"just text"', CONTENT_JSON), (b"[NaN]", CONTENT_JSON), (b"{not json", None),
     (b"\xff{}", CONTENT_BINARY)],
)  # fmt: skip
def test_the_value_is_parsed_once_and_read_as_documents_are(
    raw: bytes, content_type: str | None
) -> None:
    """The codec's JSON check parses the value; every later reader gets that parse, and
    an event copied, pickled or sent as JSON reads the same document."""
    headers = None if content_type is None else [(H_CONTENT_TYPE, content_type.encode())]
    event = event_from_message(Record(b"k", raw, headers))
    expected = None if content_type == CONTENT_BINARY else document(raw.decode())
    assert json.dumps(event.document()) == json.dumps(expected)
    assert event.document() is event.document()  # one parse, however often asked
    if expected is not None:
        assert event_value(event) is event.document()
    for other in (replace(event, event_id="e-1"), pickle.loads(pickle.dumps(event)),
                  Event.from_json(event.to_json())):  # fmt: skip
        assert other == event or other.event_id == "e-1"
        assert json.dumps(other.document()) == json.dumps(expected)
    assert "_document" not in event.to_dict() and "_document" not in repr(event)


def test_codec_rejects_declared_json_nested_too_deep() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    record = Record(b"k", deep, [(H_CONTENT_TYPE, CONTENT_JSON.encode())])
    with pytest.raises(DecodeError, match="nests too deep"):
        event_from_message(record)


def test_strict_namespace_refuses_a_header_naming_another_namespace() -> None:
    own = Record(b"k", b"v", [(H_NAMESPACE, b"orders")])
    assert event_from_message(own, "orders", strict_namespace=True).namespace == "orders"
    assert event_from_message(Record(b"k", b"v"), "orders", strict_namespace=True).namespace == (
        "orders"
    )
    other = Record(b"k", b"v", [(H_NAMESPACE, b"admin")])
    with pytest.raises(DecodeError, match="namespace='admin' on a topic of namespace 'orders'"):
        event_from_message(other, "orders", strict_namespace=True)
    # Not strict (listeners): the header says which namespace the event is of.
    assert event_from_message(other, "orders").namespace == "admin"


def test_codec_rejects_a_value_over_max_bytes() -> None:
    assert event_from_message(Record(b"k", b"x" * 10), max_bytes=10).value == "x" * 10
    with pytest.raises(DecodeError, match="value of 11 bytes is over the limit of 10"):
        event_from_message(Record(b"k", b"x" * 11), max_bytes=10)


# -- encode then decode --------------------------------------------------------------

_mapped = {H_EVENT_ID, H_NAMESPACE, H_SENDER, H_CONTEXT, H_EVENT_TYPE, H_CONTENT_TYPE}
# Keys and metadata fields are text without NUL (the codec refuses NUL there).
_field_text = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
_optional_text = st.none() | st.text(_field_text, min_size=1, max_size=20)


@given(
    key=st.text(_field_text, max_size=30),
    value=st.text(max_size=60) | st.binary(max_size=60),
    namespace=st.text(_field_text, min_size=1, max_size=20),
    sender=_optional_text,
    context=_optional_text,
    event_type=_optional_text,
    headers=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=10).filter(lambda n: n not in _mapped),
            st.binary(max_size=20),
        ),
        max_size=4,
    ),
)
def test_record_round_trip(
    key: str,
    value: str | bytes,
    namespace: str,
    sender: str | None,
    context: str | None,
    event_type: str | None,
    headers: list[tuple[str, bytes]],
) -> None:
    sent = Event(
        key=key,
        value=value,
        namespace=namespace,
        sender=sender,
        context=context,
        event_type=event_type,
        headers=tuple(headers),
        create_time=1_700_000_000_123,
    )
    record = Record(key.encode(), record_value(sent), list(record_headers(sent)))
    received = event_from_message(record)
    assert received == replace(sent, topic="orders", partition=2, offset=41)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(
    key=_text,
    value=st.one_of(_text, st.binary(max_size=12)),
    metadata=st.tuples(*[st.one_of(st.none(), _text.filter(bool))] * 3),
    create_time=st.sampled_from([-1, 0, 1, 1_700_000_000_123]),
    headers=st.lists(st.tuples(_text, st.binary(max_size=4)), max_size=2).map(tuple),
    where=st.tuples(st.sampled_from(["orders", "a.b-c_d"]), st.integers(0, 2**31 - 1),
                    st.integers(0, 2**63 - 1)),
    event_id=st.sampled_from(["", "e-123", "order-7/created"]),
)  # fmt: skip
def test_read_event_builds_what_the_constructor_builds(
    key: str,
    value: str | bytes,
    metadata: tuple[str | None, str | None, str | None],
    create_time: int,
    headers: tuple[tuple[str, bytes], ...],
    where: tuple[str, int, int],
    event_id: str,
) -> None:
    """The codec's shortcut (:func:`kec.event.read_event`) and ``Event(...)`` agree on
    every field, the id's explicitness and the create time (none given: now)."""
    sender, context, event_type = metadata
    topic, partition, offset = where
    before = int(time.time() * 1000)
    fast = read_event(key, value, "shop", sender, context, event_type, create_time, headers,
                      topic, partition, offset, event_id)  # fmt: skip
    slow = Event(
        key=key, value=value, namespace="shop", sender=sender, context=context,
        event_type=event_type, create_time=max(create_time, 0), headers=headers, topic=topic,
        partition=partition, offset=offset, event_id=event_id,
    )  # fmt: skip
    after = int(time.time() * 1000)
    if create_time <= 0:  # each took "now": compare the rest, and "now" by its bounds
        assert before <= fast.create_time <= after and before <= slow.create_time <= after
        fast = replace(fast, create_time=slow.create_time)
    assert fast == slow
    assert fast.explicit_id is slow.explicit_id is bool(event_id)
    assert fast.event_id == (event_id or f"{topic}/{partition}/{offset}")
    assert type(fast) is Event and hash(fast) == hash(slow)


def test_an_event_the_codec_builds_is_a_frozen_event_like_any_other() -> None:
    event = read_event("k", "{}", "shop", None, None, None, 5, (), "t", 1, 2, "", ({},))
    assert type(event) is Event and isinstance(event, Event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.key = "other"  # type: ignore[misc]
    assert event == Event(key="k", value="{}", namespace="shop", create_time=5, topic="t",
                          partition=1, offset=2)  # fmt: skip
    assert pickle.loads(pickle.dumps(event)) == event
    assert replace(event, key="k2").key == "k2" and event.document() == {}
