"""kec.codec.decode_record: the pipeline's one-call decode answers as event_from_message.

Real confluent-kafka ``Message`` objects (the client builds them without a broker), so
the methods the codec calls are the ones the pipeline's records have.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from kec import codec
from kec.codec import MAX_KEY_BYTES, check_outgoing, decode_record, event_from_message
from kec.errors import DecodeError
from kec.event import Event

_texts = st.sampled_from(
    [
        b'{"order": 1, "status": "created"}',
        b"[1, 2.5, -3e2]",
        b'{"big": 123456789012345678901234567890}',
        b'{"f": 1e300}',
        b'{"nan": NaN}',
        b"123",
        b'"just a string"',
        b"not json {",
        b"",
        b"  \t{}",
        b"[" * 70 + b"]" * 70,
        b"\xff\xfe not utf-8",
        b'{"nul": "a\\u0000b"}',
        b"caf\xc3\xa9",
    ]
)
_content_types = st.sampled_from(
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"text/plain",
        b"application/octet-stream",
        b"\xff",
        b"a\x00b",
        b"x" * (MAX_KEY_BYTES + 1),
        None,
    ]
)
_other_headers = st.sampled_from(
    [
        ("namespace", b"orders"),
        ("namespace", b"elsewhere"),
        ("event-id", b"my-id-1"),
        ("event-id", b"t/0/5"),
        ("sender", b"svc"),
        ("context", None),
        ("trace", b"\x00\x01"),
    ]
)
_headers = st.one_of(
    st.none(),
    st.just([]),
    _content_types.map(lambda v: [("content-type", v)]),
    st.lists(
        st.one_of(_content_types.map(lambda v: ("content-type", v)), _other_headers),
        max_size=3,
    ),
)
_keys = st.one_of(
    st.none(),
    st.sampled_from([b"k-1", b"", b"a\x00b", b"\xc3", b"k" * (MAX_KEY_BYTES + 1), "str-key"]),
    st.binary(max_size=8),
)
_values = st.one_of(st.none(), _texts, st.binary(max_size=16))


def _message(key: Any, value: Any, headers: Any, timestamp: int) -> Message:
    return Message(
        topic="orders-topic",
        partition=2,
        offset=41,
        key=key,
        value=value,
        headers=headers,
        timestamp=(1, timestamp),
    )


def _answer(fn: Any, msg: Message, max_bytes: int | None) -> tuple[str, Any]:
    try:
        event = fn(msg, max_bytes)
    except DecodeError as exc:
        return "refused", str(exc)
    assert isinstance(event, Event)
    return "event", (event, event.document(), event.explicit_id)


def _general(msg: Message, max_bytes: int | None) -> Event:
    return event_from_message(msg, "orders", max_bytes=max_bytes, strict_namespace=True)


def _fast(msg: Message, max_bytes: int | None) -> Event:
    return decode_record(msg, "orders", max_bytes)


@settings(max_examples=1500, deadline=None)
@given(
    _keys,
    _values,
    _headers,
    st.sampled_from([None, 10, 4096]),
    st.sampled_from([1_700_000_000_000, 1]),
)
def test_decode_record_answers_as_event_from_message(
    key: Any, value: Any, headers: Any, max_bytes: int | None, timestamp: int
) -> None:
    msg = _message(key, value, headers, timestamp)
    assert _answer(_fast, msg, max_bytes) == _answer(_general, msg, max_bytes)


@pytest.mark.parametrize("headers", [[("content-type", b"application/json")], None])
def test_the_common_record_is_read_by_the_one_call(headers: Any) -> None:
    msg = _message(b"k-1", b'{"order": 1, "status": "created"}', headers, 1_700_000_000_000)
    event = decode_record(msg, "orders", None)
    assert event == Event(
        key="k-1",
        value='{"order": 1, "status": "created"}',
        namespace="orders",
        create_time=1_700_000_000_000,
        topic="orders-topic",
        partition=2,
        offset=41,
    )
    assert event.event_id == "orders-topic/2/41" and not event.explicit_id
    assert event.document() == {"order": 1, "status": "created"}


def test_a_record_without_a_timestamp_gets_the_time_it_was_read() -> None:
    event = decode_record(_message(b"k", b"v", None, -1), "orders", None)
    general = _general(_message(b"k", b"v", None, -1), None)
    assert abs(event.create_time - general.create_time) < 60_000
    assert event.create_time > 1_700_000_000_000


def test_content_types_seen_are_remembered_only_up_to_a_bound() -> None:
    for i in range(200):  # a producer writing a new content type on every record
        msg = _message(b"k-1", b'{"n": 1}', [("content-type", f"text/x-{i}".encode())], 1)
        assert _answer(_fast, msg, None) == _answer(_general, msg, None)
    assert len(codec._content_types) <= codec._CONTENT_TYPES_KEPT
    # Past the bound a known type is still answered from the table, a new one worked out.
    for raw in (b"application/json", b"text/x-199", b"application/octet-stream"):
        msg = _message(b"k-1", b'{"n": 1}', [("content-type", raw)], 1)
        assert _answer(_fast, msg, None) == _answer(_general, msg, None)


@pytest.mark.parametrize(
    ("event", "refused"),
    [
        (Event("k" * 1025, "v"), "record key is 1025 bytes"),
        (Event("a\x00b", "v"), "record key contains a NUL"),
        (Event("k", "v", context="c" * 1025), "header 'context' is 1025 bytes"),
        (Event("k", "v", sender="a\x00"), "header 'sender' contains a NUL"),
        (Event("k", "v", event_id="t/0/1"), "shape topic/partition/offset"),
        (Event("\ud800", "v"), "text that is not Unicode"),
        (Event("k", "x" * 101), "value of 101 bytes is over the limit of 100"),
    ],
)
def test_an_outgoing_event_the_pipeline_would_refuse_is_refused(event: Event, refused: str) -> None:
    with pytest.raises(DecodeError, match=refused):
        check_outgoing(event, max_bytes=100)


def test_an_outgoing_record_decodes_back_to_its_event() -> None:
    event = Event("k", '{"a": 1}', namespace="shop", context="wf", headers=(("x", b"1"),))
    key, value, headers = check_outgoing(event, max_bytes=100)
    back = event_from_message(_message(key, value, headers, 7), "shop", strict_namespace=True)
    assert (back.key, back.value, back.context) == ("k", '{"a": 1}', "wf")
    assert (back.headers, back.event_id) == ((("x", b"1"),), event.event_id)
