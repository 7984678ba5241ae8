"""The exactly-once pipeline: Kafka records → checkpoint store → dispatcher.

:class:`Pipeline` runs steps 1–3 for one batch at a time, in this order:

1. **poll** — ``consume()`` up to ``batch_size`` records, or what arrived within
   ``linger_ms``; auto-commit and auto offset store are off, ``read_committed``,
   cooperative-sticky assignment. Each record becomes an event, or is *poison*: any
   exception raised by one record while it is decoded (no key, not UTF-8, too large, a
   namespace header that is not its topic's, ...) or while the rules evaluate it is that
   record's, never its batch's (:mod:`connector.deadletter`).
2. **checkpoint** — ONE durable store transaction, a constant number of statements per
   partition: record the explicit event ids (a resend under another offset is a
   duplicate; other events are known by their offset), read the rule state the new
   events need (locked), evaluate the rules for the new events in order, write the rule
   state, record poison records (already acknowledged by the dead-letter topic), and per
   partition append the batch's record (its new events and the actions born from them,
   numbered) and its next offset, under this instance's owner epoch (a stale epoch
   aborts the whole transaction: fencing).
3. **event_checkpointed** — commit the batch's Kafka offsets, asynchronously: issued only
   now, so never ahead of the durable checkpoint, but the next poll does not wait for
   the group coordinator (the store, not Kafka, says where a partition resumes). Commits
   go out at most every ``commit_interval`` (the latest offsets then), so small batches
   do not cost a request each; a revoke and a stop commit what is left.

Step 4, **dispatch**, runs in :class:`connector.outbox.Dispatcher`, which gets the
batch's actions in memory after step 2.

On assignment each partition is claimed in the store (new epoch), the dispatcher loads
what is pending for it, and the consumer seeks to the store's next offset when it has
one, else to the committed Kafka offset. When the store is ahead of Kafka's committed
offset (a stop between steps 2 and 3) that offset is committed before the next batch.
On revoke the dispatcher finishes the partition's deliveries in flight and settles it
before the partition is let go. When ``outbox_max_pending`` actions are not delivered
yet the partitions are paused until they drain (backpressure).

A batch that fails as a whole (store, dead-letter topic) rewinds its partitions and is
tried again; what no retry can cure stops the pipeline with one line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from checkpoint.base import BatchTransaction, CheckpointStore, Claim
from checkpoint.base import TopicPartition as TP
from connector.deadletter import DeadLetters, Poison
from connector.metrics import LATENCY_BUCKETS, Histogram
from kec import kafka
from kec.action import Action
from kec.codec import event_from_message
from kec.errors import CheckpointError, ConnectorError, Fenced, KafkaClientError, KafkaFatal
from kec.evaluation import Evaluator
from kec.event import Event
from kec.faults import crash_point

log = logging.getLogger(__name__)

STATISTICS_MS = 5000  # librdkafka's statistics (lag, broker states) this often
_UNREACHABLE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE}
UNREACHABLE_LOG_EVERY = 30.0  # seconds between two "Kafka is unreachable" lines


class ActionSink(Protocol):
    """Where checkpointed actions go: :class:`connector.outbox.Dispatcher`."""

    @property
    def pending(self) -> int: ...

    def adopt(self, claims: Mapping[TP, Claim]) -> None: ...

    def queue(self, tp: TP, first_aseq: int, actions: Sequence[Action]) -> None: ...

    def release(self, partitions: Sequence[TP]) -> None: ...


class Undispatched:
    """A sink that dispatches nothing: the actions stay in the store, pending, for the
    next owner that runs a dispatcher (tools and tests that only checkpoint)."""

    pending = 0

    def adopt(self, claims: Mapping[TP, Claim]) -> None:
        pass

    def queue(self, tp: TP, first_aseq: int, actions: Sequence[Action]) -> None:
        pass

    def release(self, partitions: Sequence[TP]) -> None:
        pass


@dataclass
class Applied:
    """What step 2 made of a batch's events."""

    new: list[Event] = field(default_factory=list)
    # Actions in the order the rules queued them, each with the event that caused it.
    actions: list[tuple[Event, Action]] = field(default_factory=list)
    # Events the rules raised on: poison, each on its own (the others go on).
    failed: list[tuple[Event, Exception]] = field(default_factory=list)


def apply_events(tx: BatchTransaction, evaluator: Evaluator, events: Sequence[Event]) -> Applied:
    """Step 2's work on events, inside the caller's store transaction ``tx``.

    Events with an explicit id already recorded are duplicates (as is a repeat within
    ``events``); the others are new. The rule state every new event needs is read at
    once (and locked), the rules are evaluated for the new events in order (later
    events see earlier updates), and the changed state is written back. An event the
    rules raise on is that event's failure, not the batch's: it is returned in
    ``failed``, queues nothing and changes no state.
    """
    explicit = [e for e in events if e.explicit_id]
    fresh = tx.claim_event_ids(explicit) if explicit else set()
    applied = Applied()
    for event in events:
        if event.explicit_id:
            key = (event.namespace, event.event_id)
            if key not in fresh:
                continue
            fresh.discard(key)  # a second copy in this batch is a duplicate
        applied.new.append(event)
    keys: list[str] = []
    needs: list[Sequence[str]] = []
    for event in applied.new:
        try:
            wanted = evaluator.state_keys(event)
        except Exception:  # evaluated below, where the failure is recorded
            wanted = ()
        needs.append(wanted)
        keys.extend(wanted)
    state: dict[str, str | None] = dict(tx.read_rule_state(keys)) if keys else {}
    dirty: set[str] = set()
    ttl: dict[str, float] = {}
    new: list[Event] = []
    for event, wanted in zip(applied.new, needs, strict=True):
        try:
            result = evaluator.evaluate(event, {k: state.get(k) for k in wanted})
        except Exception as exc:
            applied.failed.append((event, exc))
            continue
        new.append(event)
        applied.actions.extend((event, a) for a in result.actions)
        if result.state_updates:
            state.update(result.state_updates)
            dirty.update(result.state_updates)
            ttl.update(result.state_ttl)
    applied.new = new
    if dirty:
        now = time.time()
        expires = {k: now + ttl[k] for k in dirty if k in ttl}
        tx.write_rule_state({k: state[k] for k in dirty}, expires)
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
    commit_interval: float = 0.1  # seconds between two Kafka offset commits (step 3)

    def consumer_config(self) -> dict[str, Any]:
        """The pipeline consumer's settings; :data:`kec.kafka.PIPELINE_FIXED` is applied
        (and a user property that contradicts it refused) when it is built."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "client.id": self.instance_id,
            "auto.offset.reset": self.auto_offset_reset,
            # Fetch in larger bites: a batch is one store transaction, fewer is faster.
            "fetch.wait.max.ms": max(1, min(self.linger_ms, 100)),
            "queued.min.messages": max(1000, self.batch_size * 2),
        }
        if self.group_instance_id:
            config["group.instance.id"] = self.group_instance_id
        return {**config, **self.kafka_properties}

    def producer_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka_properties}


@dataclass
class PipelineStats:
    batches: int = 0
    records: int = 0
    new_events: int = 0
    duplicates: int = 0
    dead_records: int = 0
    actions: int = 0
    failed_batches: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)  # actions queued per rule
    store_write: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    lag: dict[TP, int] = field(default_factory=dict)  # from librdkafka's statistics
    kafka_connected: bool = False
    joined: bool = False  # the group assigned this member its partitions (possibly none)
    store_ok: bool = True  # the last batch transaction went through


@dataclass
class _Owned:
    """A partition this instance owns: its epoch and the next offset the store holds."""

    epoch: int
    next_offset: int | None


class Pipeline:
    """Steps 1–3 of the protocol; see the module docstring. Not thread-safe: one thread."""

    def __init__(
        self,
        settings: PipelineSettings,
        store: CheckpointStore,
        evaluator: Evaluator,
        sink: ActionSink,
    ) -> None:
        self._settings = settings
        self._store = store
        self._evaluator = evaluator
        self._sink = sink
        self._consumer: Consumer | None = None
        self._dlq: Producer | None = None
        self._dead_letters = DeadLetters(None, None)
        self._owned: dict[TP, _Owned] = {}
        self._fenced: dict[TP, float] = {}  # partition -> when a batch found it fenced
        self._resync: dict[TP, int] = {}
        self._uncommitted: dict[TP, int] = {}  # checkpointed, not committed to Kafka yet
        self._last_commit = 0.0
        self._paused = False
        self._fatal: KafkaError | None = None
        self._unreachable_logged = 0.0
        self.stats = PipelineStats()

    @property
    def paused(self) -> bool:
        """Whether the partitions are paused because too many actions wait (backpressure)."""
        return self._paused

    @property
    def owned(self) -> dict[TP, int]:
        """The partitions this pipeline owns, with their owner epochs."""
        return {tp: o.epoch for tp, o in self._owned.items()}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = kafka.consumer(
            {
                "statistics.interval.ms": STATISTICS_MS,
                **self._settings.consumer_config(),
                "stats_cb": self._on_statistics,
                "error_cb": self._on_error,
            },
            fixed_settings=kafka.PIPELINE_FIXED,
        )
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
            self._dlq = kafka.producer(
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
        if self._consumer is not None:
            self._commit(now=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()  # runs on_revoke: the dispatcher settles what it delivered
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
        if self._fatal is not None:
            raise KafkaFatal(f"fatal Kafka error: {self._fatal}")
        if self._resync:
            self._commit_resync()
        if not messages:
            self._commit()
            return 0
        self.stats.kafka_connected = True
        crash_point("after_poll")
        first: dict[TP, int] = {}
        try:
            events, poison, offsets = self._decode(messages, first)
            if not offsets:
                return 0
            queued, new, duplicates, poison = self._checkpoint(events, poison, first, offsets)
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
        for tp, offset in offsets.items():
            self._owned[tp].next_offset = offset
        for tp, (first_aseq, actions) in queued.items():
            self._sink.queue(tp, first_aseq, actions)
        crash_point("after_checkpoint")
        self._uncommitted.update(offsets)
        self._commit()
        crash_point("after_commit")
        stats = self.stats
        stats.batches += 1
        stats.records += len(messages)
        stats.new_events += new
        stats.duplicates += duplicates
        stats.dead_records += len(poison)
        stats.actions += sum(len(a) for _, a in queued.values())
        return len(messages)

    def _decode(
        self, messages: Sequence[Any], first: dict[TP, int]
    ) -> tuple[list[Event], list[Poison], dict[TP, int]]:
        """Events and poison records of a batch; ``first`` gets each partition's first
        offset. Records the store has already checkpointed (below its next offset) are
        skipped; any exception while decoding one record makes that record poison."""
        events: list[Event] = []
        poison: list[Poison] = []
        offsets: dict[TP, int] = {}
        topics = self._settings.topics
        limit = self._settings.max_event_bytes
        owned = self._owned
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
            mine = owned.get(tp)
            if mine is None:  # revoked (or fenced) since it was fetched
                continue
            first.setdefault(tp, offset)
            offsets[tp] = offset + 1
            if mine.next_offset is not None and offset < mine.next_offset:
                continue  # checkpointed already: known by its offset
            try:
                events.append(
                    event_from_message(msg, topics[topic], max_bytes=limit, strict_namespace=True)
                )
            except Exception as exc:
                poison.append(Poison.of(msg, exc))
        return events, poison, offsets

    def _checkpoint(
        self,
        events: list[Event],
        poison: list[Poison],
        first: Mapping[TP, int],
        offsets: Mapping[TP, int],
    ) -> tuple[dict[TP, tuple[int, list[Action]]], int, int, list[Poison]]:
        """Step 2: one store transaction. Poison records are on the dead-letter topic
        (acknowledged) before the transaction commits, so both hold them or neither.
        Returns each partition's (first action number, actions), how many events were
        new and how many duplicates, and the poison records."""
        by_tp: dict[TP, tuple[list[Event], list[Action]]] = {tp: ([], []) for tp in offsets}
        started = time.perf_counter()
        try:
            queued, new, duplicates, poison = self._transaction(
                events, poison, first, offsets, by_tp
            )
        except CheckpointError:
            self.stats.store_ok = False
            raise
        self.stats.store_ok = True
        self.stats.store_write.observe(time.perf_counter() - started)
        for _, actions in queued.values():
            self.stats.by_rule.update(a.rule for a in actions)
        return queued, new, duplicates, poison

    def _transaction(
        self,
        events: list[Event],
        poison: list[Poison],
        first: Mapping[TP, int],
        offsets: Mapping[TP, int],
        by_tp: dict[TP, tuple[list[Event], list[Action]]],
    ) -> tuple[dict[TP, tuple[int, list[Action]]], int, int, list[Poison]]:
        with self._store.batch() as tx:
            applied = apply_events(tx, self._evaluator, events)
            for event in applied.new:
                by_tp[(event.topic, event.partition)][0].append(event)  # type: ignore[index]
            for event, action in applied.actions:
                by_tp[(event.topic, event.partition)][1].append(action)  # type: ignore[index]
            failed = [Poison.of_event(e, exc) for e, exc in applied.failed]
            for event, exc in applied.failed:
                log.warning(
                    "rules failed on event %s (%s[%s]@%s), sent to the dead letters: %s: %s",
                    event.event_id, event.topic, event.partition, event.offset,
                    type(exc).__name__, exc,
                )  # fmt: skip
            poison = poison + failed
            if poison:
                tx.add_dead_records([p.stored() for p in poison])
                self._dead_letters.send(poison)
            queued: dict[TP, tuple[int, list[Action]]] = {}
            for tp, (new, actions) in sorted(by_tp.items()):
                mine = self._owned[tp]
                first_aseq = tx.append(tp, mine.epoch, first[tp], offsets[tp], new, actions)
                if actions:
                    queued[tp] = (first_aseq, actions)
        duplicates = len(events) - len(applied.new) - len(applied.failed)
        return queued, len(applied.new), duplicates, poison

    def _commit(self, *, now: bool = False, only: Sequence[TP] | None = None) -> None:
        """Step 3 for what was checkpointed: when ``commit_interval`` has passed (or
        ``now``), commit the latest offsets of those partitions (or of ``only``)."""
        if not self._uncommitted:
            return
        if not now and time.monotonic() - self._last_commit < self._settings.commit_interval:
            return
        chosen = (
            list(self._uncommitted) if only is None else [t for t in only if t in self._uncommitted]
        )
        offsets = {tp: self._uncommitted.pop(tp) for tp in chosen}
        if offsets:
            self._send_commit(offsets)
            self._last_commit = time.monotonic()

    def _send_commit(self, offsets: Mapping[TP, int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=True,
            )
        except KafkaException as exc:
            # The store already holds the batch and is the source of truth: a lost commit
            # only means Kafka's view lags until the next one.
            log.warning("offset commit failed (store is ahead, safe): %s", exc)

    def _commit_resync(self) -> None:
        """Commit the store's offsets where Kafka's committed offset lags behind them."""
        assert self._consumer is not None
        pending = {tp: o for tp, o in self._resync.items() if tp in self._owned}
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
            self._send_commit(behind)

    def _on_statistics(self, text: str) -> None:
        """librdkafka's statistics (on the poll thread): broker states and consumer lag."""
        try:
            stats = json.loads(text)
        except ValueError:
            return
        brokers = stats.get("brokers", {}).values()
        up = any(b.get("state") == "UP" for b in brokers if b.get("nodeid", -1) >= 0)
        self.stats.kafka_connected = up
        lag: dict[TP, int] = {}
        for topic, data in stats.get("topics", {}).items():
            for part, p in data.get("partitions", {}).items():
                tp = (topic, int(part))
                if tp in self._owned and p.get("consumer_lag", -1) >= 0:
                    lag[tp] = int(p["consumer_lag"])
        self.stats.lag = lag

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-wide errors: a fatal one stops the pipeline; brokers out of
        reach are said in one line now and then, naming where the connector looks."""
        if err.fatal():
            self._fatal = err
            return
        why = kafka.unreachable(err)
        if why is not None:
            self.stats.kafka_connected = False
            now = time.monotonic()
            if now - self._unreachable_logged >= UNREACHABLE_LOG_EVERY:
                self._unreachable_logged = now
                log.error(
                    "Kafka at %s is not reachable (%s); retrying",
                    self._settings.bootstrap_servers,
                    why,
                )
        else:
            log.warning("Kafka: %s", err.str())

    def _fence(self, exc: Fenced, batch: Mapping[TP, int]) -> None:
        now = time.monotonic()
        lost = [tp for tp in exc.partitions or tuple(batch) if tp in self._owned]
        for tp in lost:
            del self._owned[tp]
            self._fenced.setdefault(tp, now)
        self._sink.release(lost)
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
            if (topic, partition) in self._owned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    # -- assignment and backpressure -----------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.joined = True
        self.stats.kafka_connected = True
        tps = [(p.topic, p.partition) for p in partitions]
        if not tps:
            consumer.incremental_assign(partitions)
            return
        claims = self._store.claim(self._settings.instance_id, tps)
        self._sink.adopt(claims)
        for p in partitions:
            tp = (p.topic, p.partition)
            claim = claims[tp]
            self._owned[tp] = _Owned(claim.epoch, claim.next_offset)
            self._fenced.pop(tp, None)
            if claim.next_offset is not None:
                p.offset = claim.next_offset  # the store, not Kafka, says where it resumes
                self._resync[tp] = claim.next_offset
        consumer.incremental_assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        log.info(
            "assigned %s",
            ", ".join(
                f"{p.topic}[{p.partition}]@"
                + (f"store:{p.offset}" if claims[(p.topic, p.partition)].next_offset is not None
                   else "committed")
                for p in partitions
            ),
        )  # fmt: skip

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self._consumer is not None:
            self._commit(now=True, only=tps)  # Kafka's view level with the store before hand-over
        for tp in tps:
            self._uncommitted.pop(tp, None)
            self._owned.pop(tp, None)
            self._fenced.pop(tp, None)
            self._resync.pop(tp, None)
        if tps:
            self._sink.release(tps)  # deliveries in flight finish, then the last settlement
        consumer.incremental_unassign(partitions)
        if partitions:
            log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        limit = self._settings.outbox_max_pending
        pending = self._sink.pending
        if not self._paused and pending >= limit:
            self._paused = True
            consumer.pause(consumer.assignment())
            log.warning(
                "%d actions wait for delivery (limit %d): pausing partitions", pending, limit
            )
        elif self._paused and pending < limit * 0.8:
            self._paused = False
            consumer.resume(consumer.assignment())
            log.info("%d actions wait for delivery: resuming partitions", pending)
