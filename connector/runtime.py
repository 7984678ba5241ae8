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
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from checkpoint.base import BatchTransaction, CheckpointStore
from checkpoint.base import TopicPartition as TP
from connector.deadletter import DeadLetters, Poison
from connector.outbox import OutboxGauge
from kec.action import Action
from kec.codec import event_from_message
from kec.errors import CheckpointError, ConnectorError, Fenced, KafkaClientError, KafkaFatal
from kec.evaluation import Evaluator
from kec.event import Event
from kec.faults import crash_point

log = logging.getLogger(__name__)


@dataclass
class Applied:
    """What step 2 made of a batch's events."""

    new: list[Event] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    # Events the rules raised on: poison, each on its own (the others go on).
    failed: list[tuple[Event, Exception]] = field(default_factory=list)


def apply_events(tx: BatchTransaction, evaluator: Evaluator, events: Sequence[Event]) -> Applied:
    """Step 2's work on events, inside the caller's store transaction ``tx``.

    Insert the events (ids already stored are skipped), evaluate the rules for the new
    ones only, in order (rule state is read once per key and later events of the batch
    see earlier updates), save the changed rule state and queue the actions. An event the
    rules raise on is that event's failure, not the batch's: it is returned in
    ``failed``, queues nothing and changes no state.
    """
    applied = Applied(new=tx.insert_events(events))
    state: dict[str, str | None] = {}
    dirty: set[str] = set()
    for event in applied.new:
        try:
            keys = evaluator.state_keys(event)
            for key in keys:
                if key not in state:
                    state[key] = tx.get_rule_state(key)
            result = evaluator.evaluate(event, {k: state[k] for k in keys})
        except CheckpointError:
            raise  # the store's failure, not the event's
        except Exception as exc:
            applied.failed.append((event, exc))
            continue
        applied.actions.extend(result.actions)
        if result.state_updates:
            state.update(result.state_updates)
            dirty.update(result.state_updates)
    for key in dirty:
        tx.put_rule_state(key, state[key])
    if applied.actions:
        tx.add_actions(applied.actions)
    return applied


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
    dlq_flush_timeout: float = 30.0  # for the broker to acknowledge dead letters (else retry)
    outbox_max_pending: int = 100_000
    max_event_bytes: int | None = 1_048_576  # larger values go to the dead-letter topic
    kafka_properties: Mapping[str, Any] = field(default_factory=dict)
    auto_offset_reset: str = "earliest"
    instance_id: str = field(default_factory=_instance_id)
    # Kafka static membership: a restarted process with the same id gets its partitions
    # back at once instead of waiting out the dead member's session timeout.
    group_instance_id: str | None = None
    # A partition fenced by another owner yet still assigned here after this long: stop.
    fenced_grace: float = 60.0

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
        self._dead_letters = DeadLetters(None, None)
        self._epochs: dict[TP, int] = {}
        self._fenced: dict[TP, float] = {}  # partition -> when a batch found it fenced
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
            # Copies not acknowledged in time expire rather than pile up across retries.
            timeout_ms = int(self._settings.dlq_flush_timeout * 1000)
            self._dlq = self._producer_factory(
                {"message.timeout.ms": timeout_ms, **self._settings.producer_config()}
            )
        self._dead_letters = DeadLetters(
            self._dlq, self._settings.dlq_topic, flush_timeout=self._settings.dlq_flush_timeout
        )
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
        """Process batches until ``stop`` is set; the batch in progress is finished first.

        A batch that fails as a whole (store, dead-letter topic, Kafka) was rolled back
        and rewound; it is tried again after a pause that doubles up to 30 s. A failure
        that no retry can cure (a corrupt store, a newer schema, a fatal Kafka error, a
        partition fenced for good) is logged in one line and raised: the process stops.
        """
        self.start()
        pause = 0.5
        while not stop.is_set():
            self._apply_backpressure()
            try:
                self.run_once()
                pause = 0.5
            except ConnectorError as exc:
                if not exc.retriable:
                    log.error("stopping: %s", exc)
                    raise
                self._failed(exc, pause)
                stop.wait(pause)
                pause = min(30.0, pause * 2)
            except Exception as exc:
                self._failed(exc, pause)
                stop.wait(pause)
                pause = min(30.0, pause * 2)
            self._check_fenced()

    def _failed(self, exc: Exception, pause: float) -> None:
        self.stats.failed_batches += 1
        log.warning(
            "batch failed and was rolled back; its partitions were rewound and it is retried "
            "in %.1fs: %s: %s",
            pause,
            type(exc).__name__,
            exc,
            exc_info=not isinstance(exc, ConnectorError),
        )

    # -- one batch ---------------------------------------------------------------------

    def run_once(self) -> int:
        """Run steps 1–3 for one batch; return the number of records it covered.

        Whatever fails after the records were fetched rewinds their partitions to the
        batch's first offsets, so a failed batch is read again, never skipped.
        """
        consumer = self._consumer
        if consumer is None:
            raise KafkaClientError("the pipeline is not started")
        messages = consumer.consume(self._settings.batch_size, self._settings.linger_ms / 1000)
        if self._resync:
            self._commit_resync()
        if not messages:
            return 0
        crash_point("after_poll")
        first: dict[TP, int] = {}
        try:
            events, poison, offsets = self._decode(messages, first)
            if not offsets:
                return 0
            new, actions, poison = self._checkpoint(events, poison, offsets)
        except Fenced as exc:
            # Another instance claimed a partition of this batch (this one was paused past
            # its session timeout, say): nothing was written. Drop the partition until Kafka
            # revokes or reassigns it; the rest of the batch is read again.
            self._rewind(first)
            self._fence(exc, first)
            return 0
        except BaseException:
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
        stats.dead_records += len(poison)
        stats.actions += actions
        return len(messages)

    def _decode(
        self, messages: Sequence[Any], first: dict[TP, int]
    ) -> tuple[list[Event], list[Poison], dict[TP, int]]:
        """Events and poison records of a batch; ``first`` gets each partition's first offset.

        Any exception while decoding one record makes that record poison: the others go on.
        """
        events: list[Event] = []
        poison: list[Poison] = []
        offsets: dict[TP, int] = {}
        topics = self._settings.topics
        limit = self._settings.max_event_bytes
        epochs = self._epochs
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaFatal(f"fatal consumer error: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            tp = (topic, partition)
            if tp not in epochs:  # revoked (or fenced) since it was fetched
                continue
            first.setdefault(tp, offset)
            offsets[tp] = offset + 1
            try:
                events.append(
                    event_from_message(msg, topics[topic], max_bytes=limit, strict_namespace=True)
                )
            except Exception as exc:
                poison.append(Poison.of(msg, exc))
        return events, poison, offsets

    def _checkpoint(
        self, events: list[Event], poison: list[Poison], offsets: dict[TP, int]
    ) -> tuple[int, int, list[Poison]]:
        """Step 2: one store transaction. Poison records are on the dead-letter topic
        (acknowledged) before the transaction commits, so both hold them or neither."""
        with self._store.batch() as tx:
            applied = apply_events(tx, self._evaluator, events)
            poison = poison + [Poison.of_event(e, exc) for e, exc in applied.failed]
            for event, exc in applied.failed:
                log.warning(
                    "rules failed on event %s (%s[%s]@%s), sent to the dead letters: %s: %s",
                    event.event_id,
                    event.topic,
                    event.partition,
                    event.offset,
                    type(exc).__name__,
                    exc,
                )
            if poison:
                tx.add_dead_records([p.stored() for p in poison])
                self._dead_letters.send(poison)
            tx.set_next_offsets(offsets, {tp: self._epochs[tp] for tp in offsets})
        if applied.actions:
            self._gauge.add(len(applied.actions))
        return len(applied.new), len(applied.actions), poison

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

    def _fence(self, exc: Fenced, batch: Mapping[TP, int]) -> None:
        now = time.monotonic()
        for tp in exc.partitions or tuple(batch):
            self._epochs.pop(tp, None)
            self._fenced.setdefault(tp, now)
        log.warning("%s: this instance stops touching it until Kafka reassigns it", exc)

    def _check_fenced(self) -> None:
        """Stop if Kafka keeps assigning a partition that the store says is not ours."""
        if not self._fenced or self._consumer is None:
            return
        now = time.monotonic()
        grace = self._settings.fenced_grace
        overdue = [tp for tp, since in self._fenced.items() if now - since > grace]
        if not overdue:
            return
        assigned = {(p.topic, p.partition) for p in self._consumer.assignment()}
        for tp in overdue:
            del self._fenced[tp]
        lost = sorted(tp for tp in overdue if tp in assigned)
        if lost:
            names = ", ".join(f"{t}[{p}]" for t, p in lost)
            message = (
                f"{names}: fenced in the checkpoint store by another instance, yet still "
                f"assigned to this one by Kafka {grace:g}s later (two consumer groups or two "
                "connectors sharing a store under different group ids?)"
            )
            log.error("stopping: %s", message)
            raise Fenced(message, tuple(lost))

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
        for tp in epochs:
            self._fenced.pop(tp, None)
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
            self._fenced.pop((p.topic, p.partition), None)
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
