"""Poison records through the real pipeline on the real broker: one record's failure is
that record's, never its batch's; a batch that fails as a whole is retried, never skipped."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from checkpoint import ActionState, CheckpointStore, open_store
from connector.pipeline.pipeline import Pipeline, PipelineSettings, Undispatched
from kec.codec import record_headers, record_value
from kec.evaluation import Evaluation, NotifyAll
from kec.event import CONTENT_JSON, H_CONTENT_TYPE, H_NAMESPACE, Event
from tests.support import wait_for


class RaisesOn:
    """NotifyAll, except that it raises on events whose key starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._inner = NotifyAll("log")

    def state_keys(self, event: Event) -> Sequence[str]:
        return ()

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        if event.key.startswith(self._prefix):
            raise ZeroDivisionError(f"a rule bug on {event.key}")
        return self._inner.evaluate(event, state)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    with open_store(f"sqlite://{tmp_path / 'store.db'}") as opened:
        yield opened


def _running(pipeline: Pipeline) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def _read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got: list[Any] = []

    def enough() -> bool:
        got.extend(m for m in consumer.consume(500, 0.2) if m.error() is None)
        return len(got) >= count

    try:
        wait_for(enough, timeout=60, what=f"{count} records on {topic}")
    finally:
        consumer.close()
    return got


def test_poison_records_go_to_the_dead_letters_and_their_batch_goes_on(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, store: CheckpointStore
) -> None:
    topic, dlq = new_topic(3), new_topic(1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    good: list[Event] = []
    poison = 0
    deep = b"[" * 100_000 + b"]" * 100_000
    for i in range(3000):
        event = Event(key=f"k-{i % 50}", value=f"v{i}", namespace="shop")
        headers: list[tuple[str, str | bytes | None]] = list(record_headers(event))
        producer.produce(topic, key=event.key, value=record_value(event), headers=headers)
        good.append(event)
        if i % 75 == 0:  # 40 of each kind of poison, spread over the stream
            json_header: list[tuple[str, str | bytes | None]] = [
                (H_CONTENT_TYPE, CONTENT_JSON.encode())
            ]
            producer.produce(topic, key=b"deep", value=deep, headers=json_header)
            producer.produce(topic, key=f"bug-{i}", value=b"x")  # the rules raise on it
            producer.produce(topic, key=b"\xff\xfe", value=b"key not UTF-8")
            producer.produce(topic, key=b"k", value=b"v", headers=[(H_NAMESPACE, b"admin")])
            poison += 4
    assert producer.flush(60) == 0

    settings = PipelineSettings(bootstrap, group_id, {topic: "shop"}, dlq_topic=dlq, batch_size=500)
    pipeline = Pipeline(settings, store, RaisesOn("bug-"), Undispatched())
    stop, thread = _running(pipeline)
    try:
        wait_for(
            lambda: (
                store.count_events() >= len(good)
                and len(store.list_dead_records(limit=1000)) >= poison
            ),
            timeout=120,
            what="every record processed",
        )
    finally:
        stop.set()
        thread.join(60)
        pipeline.close()

    assert pipeline.stats.failed_batches == 0
    assert store.count_events() == len(good), "poison is a dead record, not an event"
    actions = store.list_actions(ActionState.PENDING, limit=10_000)
    assert {a.action.event_ids[0] for a in actions} == {e.event_id for e in good}
    dead = store.list_dead_records(limit=1000)
    assert len(dead) == poison
    classes = {d.error_class for d in dead}
    assert classes == {"DecodeError", "ZeroDivisionError"}
    assert sum("nests too deep" in d.error for d in dead) == 40
    assert sum("rule evaluation failed" in d.error for d in dead) == 40
    assert sum("a record's namespace is its topic's" in d.error for d in dead) == 40

    copies = _read_all(bootstrap, dlq, poison)
    assert len(copies) == poison
    for msg in copies:
        headers = dict(msg.headers() or [])
        assert headers["source-topic"] == topic.encode()
        assert {"error", "error-class", "source-partition", "source-offset"} <= set(headers)


def test_a_dead_letter_topic_that_fails_holds_the_batch_until_it_works(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    store: CheckpointStore,
    admin: AdminClient,
) -> None:
    topic = new_topic(1)
    dlq = f"dlq-{uuid.uuid4().hex[:12]}"  # does not exist yet; the broker does not create it
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(10):
        producer.produce(topic, key=f"k{i}", value=b"ok")
    producer.produce(topic, key=None, value=b"a record without a key")
    for i in range(10, 20):
        producer.produce(topic, key=f"k{i}", value=b"ok")
    assert producer.flush(30) == 0

    settings = PipelineSettings(
        bootstrap, group_id, {topic: "shop"}, dlq_topic=dlq, dlq_flush_timeout=1.0
    )
    pipeline = Pipeline(settings, store, NotifyAll("log"), Undispatched())
    stop, thread = _running(pipeline)
    try:
        wait_for(lambda: pipeline.stats.failed_batches >= 2, timeout=60, what="failed batches")
        # Nothing was skipped: the batch holding the poison record is not checkpointed.
        assert store.count_events() == 0 and store.list_dead_records() == []
        assert thread.is_alive()  # the connector retries; it does not exit
        admin.create_topics([NewTopic(dlq, 1, 1)])[dlq].result(30)
        wait_for(
            lambda: store.count_events() == 20 and len(store.list_dead_records()) == 1,
            timeout=90,
            what="the batch after the dead-letter topic came back",
        )
        copies = _read_all(bootstrap, dlq, 1)
    finally:
        stop.set()
        thread.join(60)
        pipeline.close()
    admin.delete_topics([dlq])
    assert [c.value() for c in copies] == [b"a record without a key"]
