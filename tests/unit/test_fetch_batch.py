"""A consumer's next batch (kec.kafka.fetch_batch, the pipeline's step 1): what the client
holds, at once; a wait, bounded by the linger, only when it holds nothing. The consumer
here is a script of what librdkafka's calls return (pure logic: which calls, in which
order)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from kec.kafka.clients import IDLE_WAIT_MIN_MS, fetch_batch

pytestmark = pytest.mark.unit


class Scripted:
    """Answers ``consume`` and ``poll`` from lists, recording each call."""

    def __init__(self, consumed: list[list[str]], polled: list[str | None]) -> None:
        self.consumed, self.polled = consumed, polled
        self.calls: list[tuple[Any, ...]] = []

    def consume(self, size: int, timeout: float) -> list[str]:
        self.calls.append(("consume", size, timeout))
        return self.consumed.pop(0)[:size]

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", timeout))
        return self.polled.pop(0)


def batch(consumer: Scripted, size: int, linger_ms: int) -> list[Any]:
    return list(fetch_batch(cast(Any, consumer), size, linger_ms))


def test_records_the_client_holds_are_taken_at_once() -> None:
    consumer = Scripted([["r1", "r2", "r3"]], [])
    assert batch(consumer, 1000, 10) == ["r1", "r2", "r3"]
    assert consumer.calls == [("consume", 1000, 0)], "no wait when records are there"


def test_with_none_held_the_first_to_arrive_and_what_came_with_it_make_the_batch() -> None:
    consumer = Scripted([[], ["r2", "r3"]], ["r1"])
    assert batch(consumer, 1000, 25) == ["r1", "r2", "r3"]
    assert consumer.calls == [("consume", 1000, 0), ("poll", 0.025), ("consume", 999, 0)]


def test_nothing_within_the_linger_is_an_empty_batch() -> None:
    consumer = Scripted([[]], [None])
    assert batch(consumer, 1000, 10) == []
    assert consumer.calls == [("consume", 1000, 0), ("poll", 0.01)]


def test_a_batch_of_one_takes_the_polled_record_alone() -> None:
    consumer = Scripted([[]], ["r1"])
    assert batch(consumer, 1, 50) == ["r1"]
    assert consumer.calls == [("consume", 1, 0), ("poll", 0.05)]


@pytest.mark.parametrize("linger_ms", [0, 1, IDLE_WAIT_MIN_MS])
def test_an_idle_wait_is_never_shorter_than_the_floor(linger_ms: int) -> None:
    """A linger of 0 would make an idle loop spin; the poll ends on a record anyway."""
    consumer = Scripted([[]], [None])
    assert batch(consumer, 1000, linger_ms) == []
    assert consumer.calls == [("consume", 1000, 0), ("poll", IDLE_WAIT_MIN_MS / 1000)]
