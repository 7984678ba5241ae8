"""wait_for_event as a durable step over real parts: the Kafka broker and a sqlite store.

The process-kill half of the contract (SIGKILL between the step's checkpoint and the
Kafka commit) is in tests/chaos/test_step_crash.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition

from checkpoint import open_store
from checkpoint.base import CheckpointStore
from checkpoint.group_commit import GroupCommit
from checkpoint.sql import SqlStore
from kec.codec import record_headers, record_value
from kec.event import Event
from listeners import durable, kafka
from listeners.base import EventListener
from listeners.kafka import QueueEventListener
from listeners.timer import TimerListener
from tests.support import wait_for

T = TypeVar("T")
R = TypeVar("R")

WAIT = 60.0  # bound on any single wait; never reached when things work


@pytest.fixture
def configured(bootstrap: str, group_id: str) -> Iterator[kafka.KafkaSettings]:
    settings = kafka.configure(bootstrap_servers=bootstrap, group_id=group_id)
    yield settings
    kafka.reset_configuration()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    with open_store(f"sqlite:///{tmp_path / 'steps.db'}") as opened:
        yield opened


def produce(bootstrap: str, topic: str, *values: str) -> list[Event]:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    events = [Event(key="k", value=value) for value in values]
    for event in events:
        producer.produce(
            topic, key=event.key, value=record_value(event), headers=record_headers(event)
        )
    assert producer.flush(30) == 0
    return events


def committed(bootstrap: str, group: str, topic: str, partition: int = 0) -> int:
    """The group's committed offset of one partition (OFFSET_INVALID when none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, partition)], timeout=30)
        return int(tp.offset)
    finally:
        consumer.close()


async def test_a_kafka_step_is_checkpointed_then_committed(
    configured: kafka.KafkaSettings,
    store: CheckpointStore,
    bootstrap: str,
    new_topic: Callable[..., str],
) -> None:
    topic = new_topic(1)
    (sent,) = produce(bootstrap, topic, "first")
    event = await durable.wait_for_event(
        QueueEventListener, topic, timeout=WAIT, step_id="wf-1/queue", store=store
    )
    assert event.event_id == sent.event_id
    assert event.coordinates == (topic, 0, 0)
    assert store.get_step("wf-1/queue") == event
    assert committed(bootstrap, configured.group_id, topic) == 1


async def test_a_resumed_kafka_step_returns_its_event_without_polling_again(
    configured: kafka.KafkaSettings,
    store: CheckpointStore,
    bootstrap: str,
    new_topic: Callable[..., str],
) -> None:
    topic = new_topic(1)
    produce(bootstrap, topic, "first")
    first = await durable.wait_for_event(
        QueueEventListener, topic, timeout=WAIT, step_id="s", store=store
    )
    (second,) = produce(bootstrap, topic, "second")
    again = await durable.wait_for_event(
        QueueEventListener, topic, timeout=WAIT, step_id="s", store=store
    )
    assert again == first
    # The second record was not consumed by the resumed step: it is still the next one.
    assert committed(bootstrap, configured.group_id, topic) == 1
    other = await durable.wait_for_event(
        QueueEventListener, topic, timeout=WAIT, step_id="s2", store=store
    )
    assert other.event_id == second.event_id
    assert committed(bootstrap, configured.group_id, topic) == 2


async def test_event_checkpointed_twice_or_late_does_no_harm(
    configured: kafka.KafkaSettings,
    store: CheckpointStore,
    bootstrap: str,
    new_topic: Callable[..., str],
) -> None:
    topic = new_topic(1)
    produce(bootstrap, topic, "a", "b")
    a = await durable.wait_for_event(
        QueueEventListener, topic, timeout=WAIT, step_id="a", store=store
    )
    b = await durable.wait_for_event(
        QueueEventListener, topic, timeout=WAIT, step_id="b", store=store
    )
    assert [a.offset, b.offset] == [0, 1]
    assert committed(bootstrap, configured.group_id, topic) == 2
    # A repeat for b and a stale one for a (a crashed run resuming) leave the offset alone.
    await QueueEventListener().event_checkpointed(b)
    await QueueEventListener().event_checkpointed(a)
    assert committed(bootstrap, configured.group_id, topic) == 2
    # So does resuming step a, which calls event_checkpointed(a) again.
    assert await durable.wait_for_event(QueueEventListener, topic, step_id="a", store=store) == a
    assert committed(bootstrap, configured.group_id, topic) == 2


async def test_gathered_steps_all_arrive(
    configured: kafka.KafkaSettings,
    store: CheckpointStore,
    bootstrap: str,
    new_topic: Callable[..., str],
) -> None:
    """Two timers and a Kafka event awaited together (AND), on the real clock."""
    topic = new_topic(1)
    soon = time.time() + 0.2
    gathered = asyncio.gather(
        durable.wait_for_event(TimerListener, soon + 0.1, step_id="g/t2", store=store),
        durable.wait_for_event(TimerListener, soon, step_id="g/t1", store=store),
        durable.wait_for_event(QueueEventListener, topic, timeout=WAIT, step_id="g/q", store=store),
    )
    (sent,) = produce(bootstrap, topic, "the queue event")
    t2, t1, queued = await asyncio.wait_for(gathered, WAIT)
    assert [t2.json_value(), t1.json_value()] == [soon + 0.1, soon]
    assert queued.event_id == sent.event_id
    assert [store.get_step(s) for s in ("g/t2", "g/t1", "g/q")] == [t2, t1, queued]
    assert committed(bootstrap, configured.group_id, topic) == 1


async def test_a_step_whose_poll_times_out_stores_and_commits_nothing(
    configured: kafka.KafkaSettings,
    store: CheckpointStore,
    bootstrap: str,
    new_topic: Callable[..., str],
) -> None:
    """A poll that times out stores nothing and commits nothing."""
    topic = new_topic(1)
    with pytest.raises(TimeoutError):
        await durable.wait_for_event(
            QueueEventListener, topic, timeout=0.5, step_id="empty", store=store
        )
    assert store.get_step("empty") is None
    assert committed(bootstrap, configured.group_id, topic) == OFFSET_INVALID


class _Numbered(EventListener):
    """An event at once, numbered by the step's argument."""

    async def poll_for_event(self, n: int) -> Event:  # type: ignore[override]
        return Event(key=f"k-{n}", value=f'{{"n": {n}}}')


def _first_group_held(
    run: Callable[[Sequence[T]], list[R]], queued: Callable[[], int], others: int
) -> GroupCommit[T, R]:
    """A group commit whose first group waits until ``others`` items have queued behind
    it (or 20 s), so that all of them make the second group."""
    first = threading.Event()

    def held_first(items: Sequence[T]) -> list[R]:
        if not first.is_set():
            first.set()
            with contextlib.suppress(AssertionError):
                wait_for(lambda: queued() == others, timeout=20, what="the others queued")
        return run(items)

    return GroupCommit(held_first)


async def _steps(store: SqlStore, prefix: str, count: int) -> list[Event]:
    return await asyncio.wait_for(
        asyncio.gather(
            *(durable.wait_for_event(_Numbered, n, step_id=f"{prefix}/{n}", store=store)
              for n in range(count))
        ),
        WAIT,
    )  # fmt: skip


async def test_steps_awaited_during_a_transaction_all_share_the_next(
    store: CheckpointStore,
) -> None:
    """Far more steps than the event loop's thread pool has threads, on the real SQLite
    store, the first step's transaction held until the others have queued: the rest go
    in one more transaction, each step stored once with its own event. With a thread per
    waiting step, no more than the pool's size could queue."""
    assert isinstance(store, SqlStore)
    steps = 300
    store.steps = _first_group_held(store._put_steps, lambda: len(store.steps._queue), steps - 1)
    try:
        results = await _steps(store, "many", steps)
    finally:
        store.steps.close()
    assert [e.json_value() for e in results] == [{"n": n} for n in range(steps)]
    assert all(store.get_step(f"many/{n}") == results[n] for n in range(steps))
    assert (store.steps.transactions, store.steps.items) == (2, steps)


async def test_steps_looked_up_together_are_read_in_one_query(
    store: CheckpointStore,
) -> None:
    """Steps awaited at once, half of them recorded before (a resumed run): the first
    lookup held until the others have queued, the rest are read with one more query; a
    recorded step returns its stored event without polling, a new one polls."""
    assert isinstance(store, SqlStore)
    steps = 200
    for n in range(0, steps, 2):
        store.put_step(f"again/{n}", Event(key=f"k-{n}", value=f'{{"stored": {n}}}'))
    store.step_reads = _first_group_held(
        store._get_steps, lambda: len(store.step_reads._queue), steps - 1
    )
    try:
        results = await _steps(store, "again", steps)
    finally:
        store.step_reads.close()
    assert [e.json_value() for e in results] == [
        {"stored": n} if n % 2 == 0 else {"n": n} for n in range(steps)
    ]
    assert (store.step_reads.transactions, store.step_reads.items) == (2, steps)


def test_a_group_of_lookups_larger_than_one_query_finds_each_step(
    store: CheckpointStore,
) -> None:
    assert isinstance(store, SqlStore)
    for n in (3, 700, 1199):
        store.put_step(f"s/{n}", Event(key="k", value=str(n)))
    ids = [f"s/{n}" for n in range(1200)] + ["s/700", "s/missing"]
    found = store._get_steps(ids)
    assert len(found) == len(ids)
    hits = {i: Event.from_json(t).value for i, t in zip(ids, found, strict=True) if t is not None}
    assert hits == {"s/3": "3", "s/700": "700", "s/1199": "1199"}
    assert found[-2] == found[700] and found[-1] is None
