"""One definition of a ``topic/partition/offset`` id (``kec.event.parse_coordinates``),
shared by the codec (which refuses such ids as explicit) and the store (which looks them up
by place): an id one side accepts is never misread by the other. No broker needed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint.sqlite import MemoryStore
from kec.codec import explicit_id_problem
from kec.event import MAX_OFFSET, MAX_PARTITION, Event, parse_coordinates

TOPIC = st.from_regex(r"[a-zA-Z0-9._-]{1,249}", fullmatch=True).filter(
    lambda t: t not in (".", "..")
)


@pytest.mark.parametrize(
    ("event_id", "coordinates"),
    [
        ("orders/2/41", ("orders", 2, 41)),
        ("events.orders_v2-x/0/0", ("events.orders_v2-x", 0, 0)),
        (".hidden/1/2", (".hidden", 1, 2)),
        ("t/2147483647/9223372036854775807", ("t", MAX_PARTITION, MAX_OFFSET)),
        ("t/007/1", ("t", 7, 1)),  # Kafka would write 7; still a place, so not an explicit id
        ("x" * 249 + "/1/2", ("x" * 249, 1, 2)),
        ("a/b/1/2", None),  # '/' is not in a topic name: an explicit id
        ("/1/2", None),  # no topic
        ("./1/2", None),  # '.' and '..' are not topic names
        ("../1/2", None),
        ("x" * 250 + "/1/2", None),  # topic names are at most 249 characters
        ("t/-1/2", None),  # partitions and offsets are never negative
        ("t/1/-2", None),
        ("t/2147483648/0", None),  # past int32
        ("t/0/9223372036854775808", None),  # past int64
        ("t/\u0661/2", None),  # an Arabic-Indic digit is a digit to \d, not to Kafka
        ("ü/1/2", None),
        ("a b/1/2", None),
        ("t/1/2/", None),
        ("t/1", None),
        ("t/+1/2", None),
        ("", None),
    ],
)
def test_what_is_a_place_and_what_is_an_explicit_id(
    event_id: str, coordinates: tuple[str, int, int] | None
) -> None:
    assert parse_coordinates(event_id) == coordinates
    refused = explicit_id_problem(event_id) is not None
    assert refused == (coordinates is not None)


@given(TOPIC, st.integers(0, MAX_PARTITION), st.integers(0, MAX_OFFSET))
def test_every_kafka_place_reads_back(topic: str, partition: int, offset: int) -> None:
    assert parse_coordinates(f"{topic}/{partition}/{offset}") == (topic, partition, offset)
    placed = Event(key="k", value="v", topic=topic, partition=partition, offset=offset)
    assert parse_coordinates(placed.event_id) == placed.coordinates


@dataclass(frozen=True)
class Record:
    """The part of ``confluent_kafka.Message`` the codec reads."""

    event_id: str
    where: tuple[str, int, int]

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> list[tuple[str, bytes]]:
        return [("event-id", self.event_id.encode())]

    def topic(self) -> str:
        return self.where[0]

    def partition(self) -> int:
        return self.where[1]

    def offset(self) -> int:
        return self.where[2]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


# Ids that look like places: parts joined by slashes, numbers (also negative, huge or
# zero-padded) among them, and the odd character no topic name has.
PART = st.one_of(
    st.text(alphabet="ab.-_ü \u0661", max_size=4),
    st.integers(-3, 2**64).map(str),
    st.integers(0, 99).map(lambda n: f"0{n}"),
)
LOOKALIKE = st.one_of(
    st.lists(PART, min_size=1, max_size=5).map("/".join),
    st.text(alphabet="ab./-_0123456789 ü\u0661", min_size=1, max_size=40),
).filter(bool)


@settings(max_examples=300, deadline=None)
@given(LOOKALIKE)
def test_an_id_the_codec_accepts_as_explicit_is_found_again_by_the_store(event_id: str) -> None:
    from kec.codec import event_from_message

    if explicit_id_problem(event_id) is not None:
        assert parse_coordinates(event_id) is not None  # the only refusal for these ids
        return
    event = event_from_message(Record(event_id, ("orders", 0, 5)), "shop")
    assert event.event_id == event_id and event.explicit_id
    with MemoryStore() as store:
        epoch = store.claim("me", [("orders", 0)])[("orders", 0)].epoch
        with store.batch() as tx:
            tx.claim_event_ids([event])
            tx.append(("orders", 0), epoch, 5, 6, [event], [])
        assert store.get_event(event_id, "shop") == event
        assert store.get_event(event_id) == event
