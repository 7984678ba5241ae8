"""(h) the floor: the least Python that does the connector's durable work, for its ratio.

Not product code: a benchmark reference, written with confluent-kafka, sqlite3, orjson and
hashlib only, so ``make bench`` can say how far each connector row is from what plain
Python on the same machine, the same broker and the same records can do. Per batch:

1. consume up to ``batch`` records, or what came within ``linger_ms`` (auto-commit and
   auto offset store off, ``read_committed``; librdkafka's fetch defaults, as row (a):
   with the pipeline's ``fetch.wait.max.ms`` and ``queued.min.messages`` this loop waited
   on fetches for more than half its time, so it measured the fetch, not the Python);
2. per record: parse the value as JSON, look the rule up by the record's key (a dict of
   exact keys, then the match-all rule: every event becomes one ``notify`` action, as the
   connector rows' ``NotifyAll``), an action id (blake2b of the rule and the event id
   ``topic/partition/offset``), the action as JSON;
3. ONE SQLite transaction (WAL, ``synchronous=FULL``) holding the batch's events and
   actions as one blob, with the next offset of each partition;
4. produce each action with an idempotent producer (``acks=all``), key = the event's key,
   the ``action-id`` header, as the ``kafka`` target does;
5. commit the offsets asynchronously.

Measured as the connector rows are: the clock starts once the first batch is durable and
stops when the broker has acknowledged the last action (the producer is not
transactional, so an acknowledged record is what a ``read_committed`` reader sees); the
first batch's events are not counted.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

RULE = "notify-all"
NAMESPACE = "bench"
TARGET = "actions"
HEADER_JSON: tuple[str, str | bytes | None] = ("content-type", b"application/json")


class Record(Protocol):
    """The part of ``confluent_kafka.Message`` the loop reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


# One action to produce: the record's key, the action as JSON, its headers.
Outgoing = tuple[bytes | None, bytes, list[tuple[str, str | bytes | None]]]


@dataclass(frozen=True)
class Batch:
    blob: bytes  # {"events": [...], "actions": [...]} as one JSON document
    offsets: dict[tuple[str, int], int]  # next offset to read, per partition
    outgoing: list[Outgoing]


def action_id(rule: str, event_id: str) -> str:
    """Deterministic: the same rule and event give the same id (the idempotency key)."""
    # (usedforsecurity=False would double the call's cost: keyword parsing.)
    return hashlib.blake2b(f"{rule}\x00{event_id}".encode(), digest_size=16).hexdigest()


def build_batch(
    records: Sequence[Record], rules: Mapping[str, str] | None = None, default: str = RULE
) -> Batch:
    """Steps 2-3 without I/O: each record's event and its one action, the batch's blob.

    ``rules`` maps exact record keys to a rule name; any other key takes ``default``. A
    value that is not JSON raises ``orjson.JSONDecodeError`` (the floor has no dead
    letters: the benchmark's records are all JSON)."""
    rules = rules or {}
    events: list[dict[str, Any]] = []
    actions: list[orjson.Fragment] = []
    outgoing: list[Outgoing] = []
    offsets: dict[tuple[str, int], int] = {}
    # Locals, and action_id() inlined: this loop is the floor, every lookup counts.
    dumps, loads, fragment, blake2b = orjson.dumps, orjson.loads, orjson.Fragment, hashlib.blake2b
    for record in records:
        topic, partition, offset = record.topic(), record.partition(), record.offset()
        assert topic is not None and partition is not None and offset is not None
        raw_key, value = record.key(), record.value()
        key_bytes = raw_key.encode() if isinstance(raw_key, str) else raw_key
        key = key_bytes.decode() if key_bytes is not None else None
        raw = value.encode() if isinstance(value, str) else (value or b"null")
        loads(raw)  # parse: a JSON value is checked before it is stored
        text = fragment(raw)
        event_id = f"{topic}/{partition}/{offset}"
        rule = rules.get(key, default) if key is not None else default
        aid = blake2b(f"{rule}\x00{event_id}".encode(), digest_size=16).hexdigest()
        events.append(
            {"id": event_id, "key": key, "value": text, "timestamp": record.timestamp()[1]}
        )
        body = dumps(
            {
                "action_id": aid,
                "rule": rule,
                "kind": "notify",
                "target": TARGET,
                "namespace": NAMESPACE,
                "event_ids": [event_id],
                "event_key": key,
                "payload": {"value": text, "offset": offset, "partition": partition},
            }
        )
        actions.append(fragment(body))
        outgoing.append((key_bytes, body, [("action-id", aid.encode()), HEADER_JSON]))
        offsets[(topic, partition)] = offset + 1
    blob = dumps({"events": events, "actions": actions})
    return Batch(blob, offsets, outgoing)


class Store:
    """One SQLite file in WAL mode, ``synchronous=FULL``: a batch is one row, one commit."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches"
            " (seq INTEGER PRIMARY KEY, offsets BLOB NOT NULL, body BLOB NOT NULL)"
        )

    def write(self, batch: Batch) -> None:
        offsets = orjson.dumps([[t, p, o] for (t, p), o in batch.offsets.items()])
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO batches (offsets, body) VALUES (?, ?)", (offsets, batch.blob)
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class FloorResult:
    events: int  # counted after the clock started (the first batch excluded)
    seconds: float


def run_floor(
    bootstrap: str,
    topic: str,
    output: str,
    count: int,
    db: Path,
    batch: int,
    linger_ms: int,
    timeout: float = 1800.0,
) -> FloorResult:
    """Read ``count`` records of ``topic`` from the start, one action each to ``output``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"floor-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": 30_000,
        }
    )
    store = Store(db)
    acked = 0
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            failures.append(err)

    seen = 0
    first = 0
    started: float | None = None
    deadline = time.monotonic() + timeout
    consumer.subscribe([topic])
    try:
        while seen < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"floor: {seen} of {count} records read in {timeout:g}s")
            messages = consumer.consume(batch, max(linger_ms, 1) / 1000)
            records = [m for m in messages if m.error() is None]
            if not records:
                continue
            work = build_batch(records)
            store.write(work)
            if started is None:
                started, first = time.perf_counter(), len(records)
            produce, poll = producer.produce, producer.poll
            for key, value, headers in work.outgoing:
                while True:
                    try:
                        produce(output, value, key, headers=headers, on_delivery=delivered)
                        break
                    except BufferError:
                        poll(0.01)
            poll(0)
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in work.offsets.items()],
                asynchronous=True,
            )
            seen += len(records)
        while acked < seen and not failures:
            if time.monotonic() > deadline:
                raise RuntimeError(f"floor: {acked} of {seen} actions acknowledged")
            producer.poll(0.05)
        if failures:
            raise RuntimeError(f"floor: {len(failures)} action(s) failed: {failures[0].str()}")
        assert started is not None
        return FloorResult(seen - first, time.perf_counter() - started)
    except KafkaException as exc:
        raise RuntimeError(f"floor: {exc}") from exc
    finally:
        consumer.close()
        producer.flush(30)
        store.close()
