"""The exactly-once pipeline: Kafka records → checkpoint store → outbox (docs/architecture.md).

:class:`Pipeline` runs steps 1–3 for one batch at a time, in this order:

1. **poll** — ``consume()`` up to ``batch_size`` records, or what arrived within
   ``linger_ms``; auto-commit and auto offset store are off, ``read_committed``,
   cooperative-sticky assignment. Records that cannot become events (no key, not UTF-8,
   declared JSON that is not, over ``max_event_bytes``) are produced to the dead-letter
   topic (acknowledged before step 2) and recorded with the batch.
2. **checkpoint** — ONE durable store transaction: insert the events (ids already stored
   are skipped), evaluate the rules for the *new* events only, queue the resulting actions
   in the outbox, save multi-event rule state, record each partition's next offset under
   this instance's owner epoch (a stale epoch aborts the whole transaction: fencing).
3. **event_checkpointed** — commit the batch's Kafka offsets synchronously. Only now; so
   the committed offset is never ahead of the durable checkpoint.

Step 4, **dispatch**, runs concurrently in :class:`connector.outbox.Dispatcher`.

On assignment each partition is claimed in the store (new epoch) and the consumer seeks to
the store's next offset when it has one, else to the committed Kafka offset: the store is
the source of truth. When the store is ahead of Kafka's committed offset (the process died
between steps 2 and 3) that offset is committed before the next batch, so Kafka's view
catches up even when no new record arrives. On revoke the partition is dropped at once;
what was not committed is re-delivered to the next owner and deduplicated by event id.
When the outbox holds ``outbox_max_pending`` actions the partitions are paused until it
drains (backpressure).
A failed batch (store, dead-letter producer) rewinds its partitions and is tried again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from checkpoint.base import BatchTransaction, CheckpointStore, DeadRecord
from checkpoint.base import TopicPartition as TP
from connector.outbox import OutboxGauge
from kec.action import Action
from kec.codec import event_from_message
from kec.errors import DecodeError, KafkaClientError
from kec.evaluation import Evaluator
from kec.event import Event
from kec.faults import crash_point

log = logging.getLogger(__name__)


def apply_events(
    tx: BatchTransaction, evaluator: Evaluator, events: Sequence[Event]
) -> tuple[list[Event], list[Action]]:
    """Step 2's work on events, inside the caller's store transaction ``tx``.

    Insert the events (ids already stored are skipped), evaluate the rules for the new
    ones only, in order (rule state is read once per key and later events of the batch
    see earlier updates), save the changed rule state and queue the actions. Returns the
    new events and the queued actions.
    """
    new = tx.insert_events(events)
    actions: list[Action] = []
    state: dict[str, str | None] = {}
    dirty: set[str] = set()
    for event in new:
        keys = evaluator.state_keys(event)
        for key in keys:
            if key not in state:
                state[key] = tx.get_rule_state(key)
        result = evaluator.evaluate(event, {k: state[k] for k in keys})
        actions.extend(result.actions)
        if result.state_updates:
            state.update(result.state_updates)
            dirty.update(result.state_updates)
    for key in dirty:
        tx.put_rule_state(key, state[key])
    if actions:
        tx.add_actions(actions)
    return new, actions


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class PipelineSettings:
    bootstrap_servers: str
    group_id: str
    topics: Mapping[str, str]  # topic -> namespace of its events
    batch_size: int = 1000
    linger_ms: int = 10
    dlq_topic: str | None = None
    outbox_max_pending: int = 100_000
    max_event_bytes: int | None = 1_048_576  # larger values go to the dead-letter topic
    kafka_properties: Mapping[str, Any] = field(default_factory=dict)
    auto_offset_reset: str = "earliest"
    instance_id: str = field(default_factory=_instance_id)
    # Kafka static membership: a restarted process with the same id gets its partitions
    # back at once instead of waiting out the dead member's session timeout.
    group_instance_id: str | None = None

    def consumer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "client.id": self.instance_id,
            "auto.offset.reset": self.auto_offset_reset,
        }
        if self.group_instance_id:
            config["group.instance.id"] = self.group_instance_id
        return {
            **config,
            **self.kafka_properties,
            # The protocol depends on these; user properties cannot override them.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
        }

    def producer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            **self.kafka_properties,
            "enable.idempotence": True,
            "acks": "all",
        }


# An undecodable record and its own Kafka headers (kept for the dead-letter topic only).
_Dead = tuple[DeadRecord, list[tuple[str, bytes]]]


@dataclass
class PipelineStats:
    batches: int = 0
    records: int = 0
    new_events: int = 0
    duplicates: int = 0
    dead_records: int = 0
    actions: int = 0
    failed_batches: int = 0


class Pipeline:
    """Steps 1–3 of the protocol; see the module docstring. Not thread-safe: one thread."""

    def __init__(
        self,
        settings: PipelineSettings,
        store: CheckpointStore,
        evaluator: Evaluator,
        gauge: OutboxGauge,
        *,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self._settings = settings
        self._store = store
        self._evaluator = evaluator
        self._gauge = gauge
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._consumer: Consumer | None = None
        self._dlq: Producer | None = None
        self._epochs: dict[TP, int] = {}
        self._resync: dict[TP, int] = {}
        self._paused = False
        self.stats = PipelineStats()

    @property
    def paused(self) -> bool:
        """Whether the partitions are paused because the outbox is full (backpressure)."""
        return self._paused

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = self._consumer_factory(self._settings.consumer_config())
        consumer.subscribe(
            list(self._settings.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._consumer = consumer
        if self._settings.dlq_topic:
            self._dlq = self._producer_factory(self._settings.producer_config())
        log.info(
            "pipeline %s: group %s, topics %s, batch %d, linger %dms",
            self._settings.instance_id,
            self._settings.group_id,
            ", ".join(self._settings.topics),
            self._settings.batch_size,
            self._settings.linger_ms,
        )

    def close(self) -> None:
        """Leave the group (revoking partitions cleanly) and release the clients."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()
        dlq, self._dlq = self._dlq, None
        if dlq is not None:
            dlq.flush(10)

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in progress is finished first."""
        self.start()
        while not stop.is_set():
            self._apply_backpressure()
            try:
                self.run_once()
            except KafkaClientError:
                raise
            except Exception:
                # The batch rolled back; its records are re-read after the rewind.
                self.stats.failed_batches += 1
                log.exception("batch failed; its partitions were rewound, retrying in 1s")
                stop.wait(1.0)

    # -- one batch ---------------------------------------------------------------------

    def run_once(self) -> int:
        """Run steps 1–3 for one batch; return the number of records it covered."""
        consumer = self._consumer
        if consumer is None:
            raise KafkaClientError("the pipeline is not started")
        messages = consumer.consume(self._settings.batch_size, self._settings.linger_ms / 1000)
        if self._resync:
            self._commit_resync()
        if not messages:
            return 0
        crash_point("after_poll")
        events, dead, offsets, first = self._decode(messages)
        if not offsets:
            return 0
        try:
            if dead:
                self._send_to_dlq(dead)
            new, actions = self._checkpoint(events, [record for record, _ in dead], offsets)
        except Exception:
            self._rewind(first)
            raise
        crash_point("after_checkpoint")
        self._commit(offsets)
        crash_point("after_commit")
        stats = self.stats
        stats.batches += 1
        stats.records += len(messages)
        stats.new_events += new
        stats.duplicates += len(events) - new
        stats.dead_records += len(dead)
        stats.actions += actions
        return len(messages)

    def _decode(
        self, messages: Sequence[Any]
    ) -> tuple[list[Event], list[_Dead], dict[TP, int], dict[TP, int]]:
        events: list[Event] = []
        dead: list[_Dead] = []
        offsets: dict[TP, int] = {}
        first: dict[TP, int] = {}
        topics = self._settings.topics
        limit = self._settings.max_event_bytes
        epochs = self._epochs
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaClientError(f"fatal consumer error: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            tp = (topic, partition)
            if tp not in epochs:  # revoked since it was fetched
                continue
            first.setdefault(tp, offset)
            offsets[tp] = offset + 1
            try:
                events.append(
                    event_from_message(msg, topics.get(topic, "default"), max_bytes=limit)
                )
            except DecodeError as exc:
                record = DeadRecord(
                    topic, partition, offset, str(exc), type(exc).__name__, msg.key(), msg.value()
                )
                dead.append((record, msg.headers() or []))
        return events, dead, offsets, first

    def _checkpoint(
        self, events: list[Event], dead: list[DeadRecord], offsets: dict[TP, int]
    ) -> tuple[int, int]:
        with self._store.batch() as tx:
            new, actions = apply_events(tx, self._evaluator, events)
            if dead:
                tx.add_dead_records(dead)
            tx.set_next_offsets(offsets, {tp: self._epochs[tp] for tp in offsets})
        if actions:
            self._gauge.add(len(actions))
        return len(new), len(actions)

    def _commit(self, offsets: Mapping[TP, int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # The store already holds the batch and is the source of truth: a lost commit
            # only means these records are re-read and deduplicated after a restart.
            log.warning("offset commit failed (store is ahead, safe): %s", exc)

    def _commit_resync(self) -> None:
        """Commit the store's offsets where Kafka's committed offset lags behind them."""
        assert self._consumer is not None
        pending = {tp: o for tp, o in self._resync.items() if tp in self._epochs}
        self._resync.clear()
        if not pending:
            return
        try:
            committed = self._consumer.committed(
                [TopicPartition(t, p) for t, p in pending], timeout=10
            )
        except KafkaException as exc:
            log.warning("could not read committed offsets to resync them: %s", exc)
            return
        behind = {
            (c.topic, c.partition): pending[(c.topic, c.partition)]
            for c in committed
            if c.offset < pending[(c.topic, c.partition)]  # negative: nothing committed yet
        }
        if behind:
            log.info(
                "Kafka commit behind the checkpoint (a stop between steps 2 and 3): committing %s",
                ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(behind.items())),
            )
            self._commit(behind)

    def _send_to_dlq(self, dead: Sequence[_Dead]) -> None:
        """Produce each record as it came (key, value, headers) plus the reason headers.

        The record's own headers come first, so what reads the dead-letter topic can
        send a record back to its source topic as it was (Kafka Connect does the same).
        """
        if self._dlq is None:
            for record, _ in dead:
                log.warning(
                    "undecodable record %s[%d]@%d (%s); no dead-letter topic configured, "
                    "kept in the store only",
                    record.topic,
                    record.partition,
                    record.offset,
                    record.error,
                )
            return
        topic = self._settings.dlq_topic
        assert topic is not None
        for record, headers in dead:
            self._dlq.produce(
                topic,
                key=record.key,
                value=record.value,
                headers=[
                    *headers,
                    ("error", record.error.encode()),
                    ("error-class", record.error_class.encode()),
                    ("source-topic", record.topic.encode()),
                    ("source-partition", str(record.partition).encode()),
                    ("source-offset", str(record.offset).encode()),
                ],
            )
        if self._dlq.flush(30) != 0:
            raise KafkaClientError(f"dead-letter topic {topic} did not acknowledge in 30s")

    def _rewind(self, first: Mapping[TP, int]) -> None:
        assert self._consumer is not None
        for (topic, partition), offset in first.items():
            if (topic, partition) in self._epochs:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    # -- assignment and backpressure -----------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if not tps:
            consumer.incremental_assign(partitions)
            return
        epochs = self._store.claim_partitions(self._settings.instance_id, tps)
        stored: dict[TP, int] = {}
        for topic in {t for t, _ in tps}:
            stored.update(self._store.next_offsets(topic))
        for p in partitions:
            nxt = stored.get((p.topic, p.partition))
            if nxt is not None:
                p.offset = nxt  # the store, not Kafka, says where this partition resumes
                self._resync[(p.topic, p.partition)] = nxt
        self._epochs.update(epochs)
        consumer.incremental_assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        log.info(
            "assigned %s",
            ", ".join(
                f"{p.topic}[{p.partition}]@{'store:' + str(p.offset) if (p.topic, p.partition) in stored else 'committed'}"  # noqa: E501
                for p in partitions
            ),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._epochs.pop((p.topic, p.partition), None)
            self._resync.pop((p.topic, p.partition), None)
        consumer.incremental_unassign(partitions)
        if partitions:
            log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        limit = self._settings.outbox_max_pending
        pending = self._gauge.pending
        if not self._paused and pending >= limit:
            self._paused = True
            consumer.pause(consumer.assignment())
            log.warning("outbox holds %d actions (limit %d): pausing partitions", pending, limit)
        elif self._paused and pending < limit * 0.8:
            self._paused = False
            consumer.resume(consumer.assignment())
            log.info("outbox down to %d actions: resuming partitions", pending)
