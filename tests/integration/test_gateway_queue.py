"""The HTTP gateway's waiter queues in a real (SQLite) store, without Kafka: the pipeline's
evaluator wrapper (HttpIndex) writes one small row per queued event, in the batch's
transaction, and reads none; a range read lists a pair's events in arrival order; consuming
an event deletes its row and touches no other. Queuing is O(1) per event: the write for the
5,001st event of a pair is the same one row, of the same size, as for the first.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import pytest

from checkpoint.base import BatchTransaction, DeadRecord, EventKey
from checkpoint.sqlite import MemoryStore
from connector.gateway import Gateway, GatewaySettings
from connector.gateway.waiters import (
    H_EVENT_KEY,
    H_WORKFLOW_ID,
    HttpIndex,
    consumed_step,
    queue_prefix,
)
from connector.pipeline.pipeline import apply_events
from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from kec.action import Action
from kec.event import TP as TopicPartition
from kec.event import Event
from kec.kafka import Connection
from tests.integration.gateway_helpers import queued

TOPIC = "http-events"
TP = (TOPIC, 0)
QUEUED = 5000
SHIP = {"name": "ship", "namespace": "http", "key": "approve", "action": "START"}
RULES = [Rule.model_validate({**SHIP, "workflow": "fulfilment", "task": "ship"})]


class Recording(BatchTransaction):
    """A batch transaction that remembers the rule state read and written through it."""

    def __init__(self, tx: BatchTransaction) -> None:
        self._tx = tx
        self.read: list[list[str]] = []
        self.written: list[dict[str, str | None]] = []

    def claim_event_ids(self, events: Sequence[Event]) -> set[EventKey]:
        return self._tx.claim_event_ids(events)

    def read_rule_state(self, keys: Sequence[str]) -> dict[str, str]:
        self.read.append(list(keys))
        return self._tx.read_rule_state(keys)

    def write_rule_state(
        self, updates: Mapping[str, str | None], expires: Mapping[str, float] | None = None
    ) -> None:
        self.written.append(dict(updates))
        self._tx.write_rule_state(updates, expires)

    def event_time_watermark(self, moving: Mapping[TopicPartition, int] | None = None) -> int:
        return self._tx.event_time_watermark(moving)

    def add_dead_records(self, records: Sequence[DeadRecord]) -> None:
        self._tx.add_dead_records(records)

    def append(
        self,
        tp: TopicPartition,
        epoch: int,
        first_offset: int,
        next_offset: int,
        events: Sequence[Event],
        actions: Sequence[Action],
    ) -> int:
        return self._tx.append(tp, epoch, first_offset, next_offset, events, actions)


def gateway_event(
    offset: int, workflow_id: str = "wf-1", key: str = "approve", namespace: str = "http"
) -> Event:
    """An event as the gateway produces it and the pipeline reads it back."""
    return Event(
        key=key,
        value=str(offset),
        namespace=namespace,
        context=workflow_id,
        headers=((H_WORKFLOW_ID, workflow_id.encode()), (H_EVENT_KEY, key.encode())),
        event_id=f"order-{offset}",
        topic=TOPIC,
        partition=0,
        offset=offset,
    )


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    with MemoryStore() as opened:
        yield opened


def checkpoint(
    store: MemoryStore, epoch: int, index: HttpIndex, events: list[Event]
) -> tuple[Recording, list[Action]]:
    """What the pipeline does with one batch of the gateway's topic (step 2)."""
    offsets = [e.offset for e in events if e.offset is not None]
    with store.batch() as tx:
        recording = Recording(tx)
        applied = apply_events(recording, index, events)
        actions = [a for _, a in applied.actions]
        tx.append(TP, epoch, min(offsets), max(offsets) + 1, applied.new, actions)
    return recording, actions


def row_bytes(written: dict[str, str | None]) -> int:
    return sum(len(k.encode()) + len((v or "").encode()) for k, v in written.items())


def test_queuing_writes_one_constant_size_row_per_event_and_reads_none(
    store: MemoryStore,
) -> None:
    epoch = store.claim("me", [TP])[TP].epoch
    index = HttpIndex(TriggerEngine(RULES), "http")

    first, actions = checkpoint(store, epoch, index, [gateway_event(0)])
    assert [a.task for a in actions] == ["ship"]  # the rules ride along
    assert first.read == []  # a queue row is written blind: nothing read, nothing locked
    [first_write] = first.written
    assert list(first_write.values()) == ["order-0"]

    for start in range(1, QUEUED, 500):
        batch = [gateway_event(i) for i in range(start, min(start + 500, QUEUED))]
        checkpoint(store, epoch, index, batch)
    assert len(queued(store, "wf-1", "approve")) == QUEUED

    later, _ = checkpoint(store, epoch, index, [gateway_event(QUEUED)])
    assert later.read == []
    [later_write] = later.written
    assert list(later_write.values()) == [f"order-{QUEUED}"]
    # One row again, of the first row's size: the key's widths are fixed (and the id's
    # digits the only difference), whatever the queue holds.
    assert len(later_write) == len(first_write) == 1
    first_key, later_key = next(iter(first_write)), next(iter(later_write))
    assert len(first_key) == len(later_key)
    assert row_bytes(later_write) - row_bytes(first_write) == len(str(QUEUED)) - 1
    assert row_bytes(later_write) < 120
    assert index.indexed == QUEUED + 1

    # Arrival order, all of them (paged reads, as the long poll pages).
    prefix = queue_prefix("http", "wf-1", "approve")
    ids: list[str] = []
    after: str | None = None
    while page := store.read_rule_state_range(prefix, 1000, after):
        ids.extend(v for _, v in page)
        after = page[-1][0]
    assert ids == [f"order-{i}" for i in range(QUEUED + 1)]


def test_only_new_gateway_events_of_the_namespace_are_queued(store: MemoryStore) -> None:
    epoch = store.claim("me", [TP])[TP].epoch
    index = HttpIndex(TriggerEngine(RULES), "http")
    other_pair = gateway_event(1, workflow_id="wf-2")
    elsewhere = gateway_event(2, namespace="billing")
    plain = Event(key="approve", value="x", namespace="http", event_id="no-pair",
                  topic=TOPIC, partition=0, offset=3)  # fmt: skip
    checkpoint(store, epoch, index, [gateway_event(0), other_pair, elsewhere, plain])
    resend = dataclasses.replace(gateway_event(0), offset=4)
    again, _ = checkpoint(store, epoch, index, [resend])  # the same id: a duplicate
    assert again.written == []
    assert queued(store, "wf-1", "approve") == ["order-0"]
    assert queued(store, "wf-2", "approve") == ["order-1"]
    assert queued(store, "wf-1", "approve", namespace="billing") == []  # not the gateway's
    assert index.indexed == 2


def test_consuming_deletes_only_that_events_row(store: MemoryStore) -> None:
    epoch = store.claim("me", [TP])[TP].epoch
    checkpoint(
        store, epoch, HttpIndex(TriggerEngine([]), "http"), [gateway_event(i) for i in range(5)]
    )
    gateway = Gateway(GatewaySettings(Connection("127.0.0.1:1"), topic=TOPIC), store)
    consumed = asyncio.run(gateway.consume("order-2"))
    assert consumed is not None and consumed.event_id == "order-2"
    assert store.get_step(consumed_step("order-2")) is not None
    assert queued(store, "wf-1", "approve") == ["order-0", "order-1", "order-3", "order-4"]
    assert asyncio.run(gateway.consume("order-2")) is not None  # again: harmless
    assert asyncio.run(gateway.consume("unknown")) is None
    assert queued(store, "wf-1", "approve") == ["order-0", "order-1", "order-3", "order-4"]
