"""The exactly-once pipeline: Kafka records → checkpoint store → dispatcher.

:class:`Pipeline` runs steps 1–3 for one batch at a time, in this order:

1. **poll** — up to ``batch_size`` records the client already holds, at once; when it
   holds none, the first to arrive within ``linger_ms`` and what came with it
   (:func:`kec.kafka.fetch_batch`); auto-commit and auto offset store are off, ``read_committed``,
   cooperative-sticky assignment. Each record becomes an event, or is *poison*: any
   exception raised by one record while it is decoded (no key, not UTF-8, too large, a
   namespace header that is not its topic's, ...) or while the rules evaluate it is that
   record's, never its batch's (:mod:`kec.deadletter`).
2. **checkpoint** — ONE durable store transaction, a constant number of statements per
   partition: record the explicit event ids (a resend under another offset is a
   duplicate; other events are known by their offset), read the rule state the new
   events need (locked), evaluate the rules for the new events in order, write the rule
   state, record poison records (already acknowledged by the dead-letter topic), and per
   partition append the batch's record (its new events and the actions born from them,
   numbered) and its next offset, under this instance's owner epoch (a stale epoch
   aborts the whole transaction: fencing). When the store's write lock is shared with
   other processes (one SQLite file, ``processes: N``), rules that read no state (every
   rule a single-key one) are evaluated, and the batch's record encoded, *before* the
   transaction opens (:func:`evaluate_ahead`): the same results, with the lock held for
   the writes only.
3. **event_checkpointed** — commit the batch's Kafka offsets, asynchronously: issued only
   now, so never ahead of the durable checkpoint, but the next poll does not wait for
   the group coordinator (the store, not Kafka, says where a partition resumes). Commits
   go out at most every ``commit_interval`` (the latest offsets then), so small batches
   do not cost a request each; a revoke and a stop commit what is left.

Step 4, **dispatch**, runs in :class:`connector.dispatch.Dispatcher`, which gets the
batch's actions in memory after step 2.

On assignment each partition is claimed in the store (new epoch), the dispatcher loads
what is pending for it, and the consumer seeks to the store's next offset when it has
one, else to the committed Kafka offset. When the store is ahead of Kafka's committed
offset (a stop between steps 2 and 3) that offset is committed before the next batch.
On revoke the dispatcher finishes the partition's deliveries in flight and settles it
before the partition is let go; a stop waits at most ``LEAVE_TIMEOUT`` for the group
beyond that revoke (everything is committed by then). Each partition's state (claiming,
owned, stopped, fenced) and claim epoch live in the
:class:`~connector.common.ownership.Ownership` registry shared with the dispatcher: a
partition the dispatcher finds fenced is let go at the next batch, as one a batch found
fenced. When ``outbox_max_pending`` actions are not delivered
yet the partitions are paused until they drain (backpressure).

A batch that fails as a whole (store, dead-letter topic) rewinds its partitions and is
tried again; what no retry can cure stops the pipeline with one line.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

from checkpoint.base import BatchTransaction, Claim, DeadRecord, PipelineStore
from checkpoint.records import Encoded
from connector.common.outage import Outage, cause_of
from connector.common.ownership import Ownership, State
from connector.metrics.core import LATENCY_BUCKETS, Histogram
from connector.pipeline.readwatch import FIRST_LOOK, ReadWatch, Verdict
from connector.pipeline.timers import fire_due, has_timers
from kec import kafka
from kec.action import Action
from kec.codec import MAX_EVENT_BYTES, decode_record, event_from_message
from kec.deadletter import DeadLetters, Poison
from kec.errors import (
    CheckpointError,
    ClaimTimeout,
    ConnectorError,
    Fenced,
    KafkaClientError,
    KafkaFatal,
    OffsetConflict,
)
from kec.evaluation import Evaluation, Evaluator, reads_state
from kec.event import Event
from kec.faults import crash_point
from kec.kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TP,
    Consumer,
    KafkaError,
    KafkaException,
    KafkaTopicPartition,
    Producer,
    fetch_batch,
    is_eof,
    is_fatal,
    kafka_tp,
)
from kec.kafka.registry import RecordFormats, RegistryUnavailable

log = logging.getLogger(__name__)

STATISTICS_MS = 5000  # librdkafka's statistics (lag, broker states) this often
UNREACHABLE_LOG_EVERY = 30.0  # seconds between two "Kafka is unreachable" lines
STOPPED_CHECK_EVERY = 2.0  # seconds between two looks for an operator's reset
MAX_RETRY_PAUSE = 10.0  # seconds: the longest pause before a failed batch is tried again
# Seconds a deliberate stop waits for the consumer to leave its group, outside our own
# revoke. A static member caught in a rebalance whose other member stopped too waits out
# that member's session (45 s by default) before close() returns; by then all it had is
# committed and checkpointed, so it need not wait.
LEAVE_TIMEOUT = 5.0


class ActionSink(Protocol):
    """Where checkpointed actions go: :class:`connector.dispatch.Dispatcher`."""

    @property
    def pending(self) -> int: ...

    def adopt(self, claims: Mapping[TP, Claim]) -> None: ...

    def queue(self, tp: TP, first_aseq: int, actions: Sequence[Action]) -> None: ...

    def release(self, partitions: Sequence[TP]) -> None: ...

    def catch_up(self, tp: TP) -> None: ...


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

    def catch_up(self, tp: TP) -> None:
        pass


@dataclass
class Applied:
    """What step 2 made of a batch's events."""

    new: list[Event] = field(default_factory=list)
    # Actions in the order the rules queued them, each with the event that caused it.
    actions: list[tuple[Event, Action]] = field(default_factory=list)
    # Events the rules raised on: poison, each on its own (the others go on).
    failed: list[tuple[Event, Exception]] = field(default_factory=list)
    skipped: int = 0  # new events not evaluated (``skip``)


def apply_events(
    tx: BatchTransaction,
    evaluator: Evaluator,
    events: Sequence[Event],
    skip: Collection[object] = (),
    ahead: Mapping[int, Evaluation | Exception] | None = None,
) -> Applied:
    """Step 2's work on events, inside the caller's store transaction ``tx``.

    Events with an explicit id already recorded are duplicates (as is a repeat within
    ``events``); the others are new. The rule state every new event needs is read at
    once (and locked), the rules are evaluated for the new events in order (later
    events see earlier updates), and the changed state is written back, with the event
    time at which each expiring state can no longer complete. An event the rules raise
    on is that event's failure, not the batch's: it is returned in ``failed``, queues
    nothing and changes no state. Events whose ``coordinates`` are in ``skip`` (known to
    fail: already sent to the dead letters) are recorded like the others but not
    evaluated. ``ahead``: the results of :func:`evaluate_ahead` for ``events`` (by the
    event's ``id()``), taken instead of evaluating again.
    """
    explicit = [e for e in events if e.explicit_id]
    applied = Applied()
    if not explicit:  # the common case: every event known by its record, all new
        applied.new = list(events)
    else:
        fresh = tx.claim_event_ids(explicit)
        for event in events:
            if event.explicit_id:
                key = (event.namespace, event.event_id)
                if key not in fresh:
                    continue
                fresh.discard(key)  # a second copy in this batch is a duplicate
            applied.new.append(event)
    keys: list[str] = []
    needs: list[Sequence[str]] = []
    reading = ahead is None and reads_state(evaluator)
    if reading:
        for event in applied.new:
            try:
                wanted = () if skip and event.coordinates in skip else evaluator.state_keys(event)
            except Exception:  # evaluated below, where the failure is recorded
                wanted = ()
            needs.append(wanted)
            keys.extend(wanted)
    else:  # every rule a single-key one: no event names a row
        needs = [()] * len(applied.new)
    state: dict[str, str | None] = dict(tx.read_rule_state(keys)) if keys else {}
    dirty: set[str] = set()
    expiry: dict[str, float] = {}
    new: list[Event] = []
    for event, wanted in zip(applied.new, needs, strict=True):
        if skip and event.coordinates in skip:  # a property making a tuple: asked only then
            applied.skipped += 1
            continue
        if ahead is not None:
            result = ahead[id(event)]
            if isinstance(result, Exception):
                applied.failed.append((event, result))
                continue
        else:
            try:
                result = evaluator.evaluate(
                    event, {k: state.get(k) for k in wanted} if reading else _NO_STATE
                )
            except Exception as exc:
                applied.failed.append((event, exc))
                continue
        new.append(event)
        if len(result.actions) == 1:  # the common case, without a generator
            applied.actions.append((event, result.actions[0]))
        else:
            applied.actions.extend((event, a) for a in result.actions)
        if result.state_updates:
            state.update(result.state_updates)
            dirty.update(result.state_updates)
            for row in result.state_updates:  # the last write of a row says when it expires
                expiry.pop(row, None)
            expiry.update(result.state_expiry)
    applied.new = new
    if dirty:
        tx.write_rule_state(
            {k: state[k] for k in dirty}, {k: expiry[k] for k in dirty if k in expiry}
        )
    return applied


_NO_STATE: Mapping[str, str | None] = MappingProxyType({})


class Ahead:
    """Step 2's evaluation done before the transaction (:func:`evaluate_ahead`)."""

    __slots__ = ("records", "results")

    def __init__(
        self, results: dict[int, Evaluation | Exception], records: dict[TP, Encoded]
    ) -> None:
        self.results = results  # each event's result, or what it raised, by its id()
        # Each partition's batch record as it will be if every event evaluated is new (no
        # explicit id recorded before) and no timed rule fires: the transaction writes it
        # when that holds, and encodes again when not (:meth:`Encoded.of`).
        self.records = records


def evaluate_ahead(
    evaluator: Evaluator, events: Sequence[Event], skip: Collection[object] = ()
) -> Ahead | None:
    """The rules' results for ``events`` (and what an event made them raise), worked out
    before the store transaction opens, with the batch records they make: only for an
    evaluator that reads no rule state (``reads_state()`` False), whose results cannot
    depend on the store. None when it reads state, or when a result changes state after
    all: then only the transaction may evaluate (:func:`apply_events`). Events in
    ``skip`` are left out."""
    if reads_state(evaluator):
        return None
    results: dict[int, Evaluation | Exception] = {}
    parts: dict[object, tuple[list[Event], list[Action]]] = {}
    evaluate = evaluator.evaluate
    for event in events:
        if skip and event.coordinates in skip:
            continue
        try:
            result = evaluate(event, _NO_STATE)
        except Exception as exc:
            results[id(event)] = exc
            continue
        if result.state_updates:
            return None
        results[id(event)] = result
        tp = (event.topic, event.partition)
        part = parts.get(tp)
        if part is None:
            part = parts[tp] = ([], [])
        part[0].append(event)
        part[1].extend(result.actions)
    records = {tp: Encoded(evs, actions) for tp, (evs, actions) in parts.items()}
    return Ahead(results, records)  # type: ignore[arg-type]  # event tps are whole here


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


HEARTBEAT_MS = 1000  # the pipeline consumer's heartbeat.interval.ms (Kafka's: 3000)
METADATA_REFRESH_MS = 30_000  # topic.metadata.refresh.interval.ms (librdkafka's: 300,000)


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
    max_event_bytes: int | None = MAX_EVENT_BYTES  # larger values go to the dead-letter topic
    kafka_properties: Mapping[str, Any] = field(default_factory=dict)
    auto_offset_reset: str = "earliest"
    instance_id: str = field(default_factory=_instance_id)
    # Kafka static membership: a restarted process with the same id gets its partitions
    # back at once instead of waiting out the dead member's session timeout.
    group_instance_id: str | None = None
    session_timeout_ms: int | None = None  # None: Kafka's (a kafka property wins over both)
    # A partition fenced by another owner yet still assigned here after this long: stop.
    fenced_grace: float = 60.0
    commit_interval: float = 0.1  # seconds between two Kafka offset commits (step 3)
    # Partitions Kafka assigned but the store could not claim are retried (paused) for
    # this long; then the process exits, so that Kafka gives them to another instance.
    claim_timeout: float = 300.0
    kafka_timeout: float = 10.0  # seconds for a watermark or topic request when checking
    check_interval: float = 30.0  # seconds between two checks of the topics' ids
    # A partition that starts reading and reads nothing is looked at after this long
    # (connector.pipeline.readwatch).
    read_watch_after: float = FIRST_LOOK
    # A partition with nothing left to read moves its event time to the present this often.
    idle_interval: float = 10.0

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
            # queued.min.messages stays librdkafka's (100,000 a partition, the prefetch
            # bounded by queued.max.messages.kbytes): at twice the batch the queue ran dry,
            # the pipeline spent 27-29% of its time in consume() waiting for fetches, and
            # row (b) of the benchmark ran at 0.76x (bench/RESULTS.md).
            # The end of a partition is news: its event time may move on (idle partitions).
            "enable.partition.eof": True,
            # A member learns of a rebalance at its next heartbeat, and a cooperative one
            # takes two (revoke, then assign): at Kafka's 3 s, the second of N processes
            # started together waited ~6 s for its partitions while the first read them all.
            "heartbeat.interval.ms": HEARTBEAT_MS,
            # A topic deleted and created again while the group rebalanced is assigned to
            # nobody until a member's metadata shows it again: every 30 s, not librdkafka's
            # 5 min (its partitions are then claimed, found recreated and stopped).
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        }
        if self.group_instance_id:
            config["group.instance.id"] = self.group_instance_id
        if self.session_timeout_ms is not None:
            config["session.timeout.ms"] = self.session_timeout_ms
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
    conflicts: int = 0  # batches the store had already (a lost COMMIT acknowledgement)
    by_rule: Counter[str] = field(default_factory=Counter)  # actions queued per rule
    store_write: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    lag: dict[TP, int] = field(default_factory=dict)  # from librdkafka's statistics
    # Per subscribed topic, from the same statistics: its partitions in the consumer's
    # metadata, and those this pipeline reads (owned: claimed, not stopped).
    partitions: dict[str, int] = field(default_factory=dict)
    owned: dict[str, int] = field(default_factory=dict)
    kafka_connected: bool = False
    joined: bool = False  # the group assigned this member its partitions (possibly none)
    store_ok: bool = True  # the last batch transaction went through
    stopped: dict[TP, str] = field(default_factory=dict)  # partitions stopped, and why
    claiming: int = 0  # partitions assigned by Kafka that the store could not claim yet
    backpressure_pauses: int = 0  # times the partitions were paused for backpressure
    backpressure_seconds: float = 0.0  # time they spent paused so, up to the last resume
    paused_since: float | None = None  # monotonic time of the current pause, if paused

    def paused_seconds(self, now: float) -> float:
        """The time spent paused for backpressure, the current pause included."""
        since = self.paused_since
        return self.backpressure_seconds + (max(0.0, now - since) if since is not None else 0.0)


@dataclass
class _Reading:
    """Where the pipeline reads a partition it claimed: the next offset the store holds.
    Its epoch and state (owned, stopped, fenced) are in :class:`Ownership`."""

    next_offset: int | None
    generation: int = 0  # resets by an operator: see checkpoint.base.Claim
    idle_marked: float = 0.0  # monotonic time its event time was last moved to the present


@dataclass
class _Batch:
    """What step 1 made of one ``consume()``: per partition, where its part starts (the
    store's next offset, else its first record) and ends, its newest record timestamp."""

    events: list[Event] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    start: dict[TP, int] = field(default_factory=dict)
    first: dict[TP, int] = field(default_factory=dict)  # the first record's offset
    next: dict[TP, int] = field(default_factory=dict)
    event_time: dict[TP, int] = field(default_factory=dict)  # ms
    at_end: set[TP] = field(default_factory=set)  # partitions read to their end
    epoch: dict[TP, int] = field(default_factory=dict)  # the claim each part is written under
    behind: dict[TP, int] = field(default_factory=dict)  # a record below the store's offset


class Pipeline:
    """Steps 1–3 of the protocol; see the module docstring. Not thread-safe: one thread."""

    def __init__(
        self,
        settings: PipelineSettings,
        store: PipelineStore,
        evaluator: Evaluator,
        sink: ActionSink,
        *,
        after_batch: Callable[[], None] | None = None,
        ownership: Ownership | None = None,
        formats: RecordFormats | None = None,
    ) -> None:
        """``after_batch``: called after each batch that checkpointed records (the HTTP
        gateway looks for its events in the store then); it never fails the batch.
        ``ownership``: the registry shared with the dispatcher (a fresh one if not given:
        then only the pipeline's own findings reach it). ``formats``: the topics whose
        keys or values are written with a registered schema, and their decoder."""
        self._formats = formats
        self._settings = settings
        self._store = store
        self._evaluator = evaluator
        self._sink = sink
        self._after_batch = after_batch
        self._consumer: Consumer | None = None
        self._admin: Any = None
        self._dlq: Producer | None = None
        self._dead_letters = DeadLetters(None, None)
        self.ownership = ownership if ownership is not None else Ownership()
        self._owned: dict[TP, _Reading] = {}  # claimed here (owned or stopped)
        self._at_end: set[TP] = set()  # read to their end, nothing read since
        self._claim_retry = 0.0  # monotonic time of the next claim attempt
        self._claim_pause = 0.5
        self._resync: dict[TP, int] = {}
        self._read_watch = ReadWatch(settings.read_watch_after, settings.check_interval)
        self._uncommitted: dict[TP, int] = {}  # checkpointed, not committed to Kafka yet
        self._last_commit = 0.0
        self._last_check = self._last_stopped_check = time.monotonic()
        self._paused = False
        self._pause_log = _PauseLog()
        self._fatal: KafkaError | None = None
        self._unreachable_logged = 0.0
        self._kafka_down_since: float | None = None
        self._store_outage = Outage("checkpoint store", log)
        self._claim_outage = Outage("claiming assigned partitions in the checkpoint store", log)
        self.stats = PipelineStats()
        # Work for the pipeline's thread between two batches (a config reload, a pause).
        self._between: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._running = False
        self._running_lock = threading.Lock()
        # A close that outlived LEAVE_TIMEOUT is abandoned: a revoke it runs later is skipped.
        self._leave_lock = threading.Lock()
        self._revoking = False
        self._left = False

    @property
    def paused(self) -> bool:
        """Whether the partitions are paused because too many actions wait (backpressure)."""
        return self._paused

    @property
    def owned(self) -> dict[TP, int]:
        """The partitions this pipeline owns (read or stopped), with their owner epochs."""
        return self.ownership.epochs()

    def positions(self) -> dict[TP, int | None]:
        """Each partition claimed here with the offset its next batch starts at (None:
        nothing of it checkpointed yet). On the pipeline's thread, between two batches."""
        return {tp: mine.next_offset for tp, mine in sorted(self._owned.items())}

    def between_batches(self, work: Callable[[], Any]) -> Future[Any]:
        """Run ``work`` on the pipeline's thread before its next batch (at once, in the
        calling thread, when the pipeline is not running); the future holds its result or
        its exception. So a batch is evaluated wholly before or wholly after it."""
        future: Future[Any] = Future()
        with self._running_lock:
            if self._running:
                self._between.put((work, future))
                return future
        _settle(future, work)
        return future

    def _run_between(self) -> None:
        while True:
            try:
                work, future = self._between.get_nowait()
            except queue.Empty:
                return
            _settle(future, work)

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
        self._admin = kafka.admin(self._settings.producer_config())
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
            self._leave(consumer)
        # Every client is destroyed here, not at interpreter exit: a librdkafka client
        # freed while Python finalizes can call back into it (one `run` stopped by a
        # fatal error died by SIGSEGV after its last line). DeadLetters held the producer.
        dlq, self._dlq = self._dlq, None
        self._dead_letters = DeadLetters(None, None)
        if dlq is not None:  # unacknowledged copies: their batch was not committed
            kafka.close_producer(dlq, 10)
        self._admin = None

    def _leave(self, consumer: Consumer) -> None:
        """``consumer.close()``, which runs the last revoke (the dispatcher settles what it
        delivered), bounded by :data:`LEAVE_TIMEOUT` outside that revoke.

        Past the bound the close goes on in its thread and any revoke it still runs is
        skipped: offsets and checkpoints are already level, so this ends like a crash after
        a clean commit (what was delivered and not settled is delivered again, same ids).
        """
        done = threading.Event()

        def close() -> None:
            try:
                consumer.close()
            except Exception as exc:  # the process is leaving: say so, do not fail the stop
                log.warning("closing the Kafka consumer failed: %s", cause_of(exc))
            finally:
                done.set()

        threading.Thread(target=close, name="kafka-leave", daemon=True).start()
        timeout = LEAVE_TIMEOUT
        while not done.wait(timeout):
            with self._leave_lock:
                if not self._revoking:
                    self._left = True
                    log.warning(
                        "the consumer did not leave group %s within %gs (a rebalance is "
                        "waiting for a member that stopped); stopping without it: offsets "
                        "and checkpoints are complete",
                        self._settings.group_id, timeout,
                    )  # fmt: skip
                    return

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in progress is finished first.

        A batch that fails as a whole (store, dead-letter topic, Kafka) was rolled back
        and rewound; it is tried again after a pause that doubles up to 10 s (so a store or
        broker that is back is used again within seconds). A failure
        that no retry can cure (a corrupt store, a newer schema, a fatal Kafka error, a
        partition fenced for good, partitions that could not be claimed in time) is
        logged in one line and raised: the process stops.
        """
        self.start()
        with self._running_lock:
            self._running = True
        try:
            self._loop(stop)
        finally:
            with self._running_lock:
                self._running = False
            self._run_between()  # asked while it stopped: nothing is evaluated any more

    def _loop(self, stop: threading.Event) -> None:
        pause = 0.5
        while not stop.is_set():
            self._run_between()
            self._apply_backpressure()
            try:
                self._housekeeping()
                self.run_once()
                pause = 0.5
            except ConnectorError as exc:
                if not exc.retriable:
                    log.error("stopping: %s", exc)
                    raise
                self._failed(exc, pause)
                stop.wait(pause)
                pause = min(MAX_RETRY_PAUSE, pause * 2)
            except Exception as exc:
                self._failed(exc, pause)
                stop.wait(pause)
                pause = min(MAX_RETRY_PAUSE, pause * 2)
            self._check_fenced()

    def _failed(self, exc: Exception, pause: float) -> None:
        self.stats.failed_batches += 1
        if isinstance(exc, CheckpointError):
            self._store_outage.failed(exc, retry_in=pause)
            return
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
        batch's first offsets, so a failed batch is read again, never skipped. Partitions
        the dispatcher found fenced since the last batch are let go first
        (:meth:`_take_fenced`).
        """
        consumer = self._consumer
        if consumer is None:
            raise KafkaClientError("the pipeline is not started")
        self._take_fenced()
        messages = fetch_batch(consumer, self._settings.batch_size, self._settings.linger_ms)
        if self._fatal is not None:
            raise KafkaFatal(f"fatal Kafka error: {self._fatal}")
        if self._resync:
            self._commit_resync()
        if not messages:
            self._commit()
            self._idle(set())
            return 0
        self.stats.kafka_connected = True
        if self._kafka_down_since is not None:
            self._kafka_back()
        crash_point("after_poll")
        batch = _Batch()
        try:
            self._decode(messages, batch, self.ownership.epochs(State.OWNED))
            if self._read_watch:
                self._read_watch.fetched(batch.first)  # these fetch: even a failed batch says so
            if batch.behind:
                self._went_back(batch.behind)
            if not batch.next:
                self._idle(batch.at_end)
                return 0
            queued, new, duplicates = self._checkpoint(batch)
        except OffsetConflict as exc:
            self._rewind(batch.first)
            self._catch_up(exc, batch)
            return 0
        except Fenced as exc:
            # Another instance claimed a partition of this batch (this one was paused past
            # its session timeout, say): nothing was written. Drop the partition until Kafka
            # revokes or reassigns it; the rest of the batch is read again.
            self._rewind(batch.first)
            self._fence(exc, batch.first)
            return 0
        except BaseException:
            self._rewind({**batch.first, **batch.behind})
            raise
        self._store_outage.ok()
        for tp, offset in batch.next.items():
            self._owned[tp].next_offset = offset
        for tp, (first_aseq, actions) in queued.items():
            self._sink.queue(tp, first_aseq, actions)
        crash_point("after_checkpoint")
        self._uncommitted.update(batch.next)
        self._commit()
        crash_point("after_commit")
        self._idle(batch.at_end, batch.next)
        stats = self.stats
        stats.batches += 1
        stats.records += len(messages)
        stats.new_events += new
        stats.duplicates += duplicates
        stats.dead_records += len(batch.poison)
        stats.actions += sum(len(a) for _, a in queued.values())
        if self._after_batch is not None:
            try:
                self._after_batch()
            except Exception:  # an observer never fails a batch that is already durable
                log.exception("after-batch hook failed")
        return len(messages)

    def _decode(self, messages: Sequence[Any], batch: _Batch, reading: Mapping[TP, int]) -> None:
        """Step 1's work: events and poison records of a batch, and where each partition's
        part starts and ends. Only records of ``reading`` (the partitions owned, not
        stopped, with their epochs) count. A record below the store's next offset is put
        aside in ``batch.behind`` (it should not come: see :meth:`_went_back`); any
        exception while decoding one record makes that record poison."""
        topics = self._settings.topics
        limit = self._settings.max_event_bytes
        owned = self._owned
        formats = self._formats
        at_end, behind, first, next_ = batch.at_end, batch.behind, batch.first, batch.next
        event_time, events = batch.event_time, batch.events
        # Records come in runs of one partition: its lookups are made once a run.
        run_topic: str | None = None
        run_partition = -1
        tp: TP = ("", -1)
        mine: _Reading | None = None
        namespace = ""
        for msg in messages:
            err = msg.error()
            if err is not None:
                if is_fatal(err):
                    raise KafkaFatal(f"fatal consumer error: {err.str()}")
                resource = kafka.refused_resource(err)
                if resource is not None:  # an ACL missing (or revoked): a person must act
                    raise kafka.not_authorized(
                        self._refused_on(resource, msg), err, self._principal()
                    )
                if is_eof(err):
                    batch.at_end.add((msg.topic(), msg.partition()))
                    continue
                refused = kafka.refused_setting(err, self._settings.consumer_config())
                if refused is not None:  # the group is never joined: a person must act
                    raise refused
                log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if partition != run_partition or topic != run_topic:
                run_topic, run_partition = topic, partition
                tp = (topic, partition)
                mine = owned.get(tp) if tp in reading else None
                namespace = topics[topic] if mine is not None else ""  # owned: subscribed
            if mine is None or tp in behind:
                continue  # revoked, fenced or stopped since it was fetched
            stored = mine.next_offset
            if stored is not None and offset < stored:
                behind[tp] = offset
                continue
            if tp not in first:
                first[tp] = offset
                batch.start[tp] = offset if stored is None else stored
                batch.epoch[tp] = reading[tp]
            next_[tp] = offset + 1
            if at_end:
                at_end.discard(tp)
            _, timestamp = msg.timestamp()
            if timestamp > event_time.get(tp, 0):
                event_time[tp] = timestamp
            try:
                if formats is None:
                    event = decode_record(msg, namespace, limit)
                else:
                    event = event_from_message(
                        msg,
                        namespace,
                        max_bytes=limit,
                        strict_namespace=True,
                        key_decoder=formats.key_decoder(topic),
                        value_decoder=formats.value_decoder(topic),
                    )
            except RegistryUnavailable:
                raise  # not the record's fault: the batch is read again, nothing dead-lettered
            except Exception as exc:
                batch.poison.append(Poison.of(msg, exc))
                continue
            if mine.generation and not event.explicit_id:
                # Offsets an operator's reset made count again: their ids must not be the
                # ones the same offsets had before (nor their actions' ids).
                event = replace(event, event_id=f"{event.event_id}@{mine.generation}")
            events.append(event)
        if not behind:
            return
        for tp in batch.behind:  # the partition's records of this batch wait for the check
            for part in (batch.first, batch.start, batch.next, batch.event_time, batch.epoch):
                part.pop(tp, None)
        batch.events = [e for e in batch.events if (e.topic, e.partition) not in batch.behind]
        batch.poison = [p for p in batch.poison if (p.topic, p.partition) not in batch.behind]

    def _refused_on(self, resource: str, msg: Any) -> str:
        if resource == "topic" and msg.topic():
            return f"topic {msg.topic()!r}"
        if resource == "consumer group":
            return f"consumer group {self._settings.group_id!r}"
        return f"the {resource}"

    def _principal(self) -> str:
        settings = self._settings
        return kafka.Connection(settings.bootstrap_servers, settings.kafka_properties).principal()

    def _checkpoint(self, batch: _Batch) -> tuple[dict[TP, tuple[int, list[Action]]], int, int]:
        """Step 2: one store transaction. Poison records go to the dead-letter topic (and
        are acknowledged) before the transaction opens, so no store lock is held while
        Kafka answers; an event the rules raise on is found inside the transaction, which
        is then given up, the event sent to the dead letters and the batch tried again
        without evaluating it. Returns each partition's (first action number, actions),
        how many events were new and how many duplicates."""
        started = time.perf_counter()
        skip: set[object] = set()
        if batch.poison:
            self._dead_letters.send(batch.poison)
        try:
            while True:
                try:
                    queued, new, duplicates = self._transaction(batch, skip)
                    break
                except _RulesFailed as failed:
                    poison = [Poison.of_event(e, exc) for e, exc in failed.events]
                    for event, exc in failed.events:
                        log.warning(
                            "rules failed on event %s (%s[%s]@%s), sent to the dead letters: "
                            "%s: %s",
                            event.event_id, event.topic, event.partition, event.offset,
                            type(exc).__name__, exc,
                        )  # fmt: skip
                    self._dead_letters.send(poison)
                    batch.poison.extend(poison)
                    skip.update(e.coordinates for e, _ in failed.events)
        except CheckpointError:
            self.stats.store_ok = False
            raise
        self.stats.store_ok = True
        self.stats.store_write.observe(time.perf_counter() - started)
        for _, actions in queued.values():
            self.stats.by_rule.update(a.rule for a in actions)
        return queued, new, duplicates

    def _transaction(
        self, batch: _Batch, skip: set[object]
    ) -> tuple[dict[TP, tuple[int, list[Action]]], int, int]:
        # Only while other processes wait for this transaction's lock: elsewhere the
        # extra pass is a cost for nothing (~1 us an event, measured on PostgreSQL).
        ahead = (
            evaluate_ahead(self._evaluator, batch.events, skip)
            if self._store.shared_write_lock
            else None
        )
        encoded = ahead.records if ahead is not None else {}
        by_tp: dict[TP, tuple[list[Event], list[Action]]] = {tp: ([], []) for tp in batch.next}
        with self._store.batch() as tx:
            applied = apply_events(
                tx, self._evaluator, batch.events, skip, ahead.results if ahead else None
            )
            if applied.failed:
                raise _RulesFailed(applied.failed)
            for event in applied.new:
                by_tp[(event.topic, event.partition)][0].append(event)  # type: ignore[index]
            for event, action in applied.actions:
                by_tp[(event.topic, event.partition)][1].append(action)  # type: ignore[index]
            # Time-driven rules due now that these partitions' event time moved on.
            now = {tp: t for tp, t in batch.event_time.items() if tp in by_tp and t > 0}
            for tp, fired in fire_due(tx, self._evaluator, now).items():
                by_tp[tp][1].extend(fired)
            if batch.poison:
                tx.add_dead_records([DeadRecord.of(p) for p in batch.poison])
            queued: dict[TP, tuple[int, list[Action]]] = {}
            for tp, (new, actions) in sorted(by_tp.items()):
                first_aseq = tx.append(
                    tp, batch.epoch[tp], batch.start[tp], batch.next[tp], new, actions,
                    batch.event_time.get(tp), encoded.get(tp),
                )  # fmt: skip
                if actions:
                    queued[tp] = (first_aseq, actions)
        duplicates = len(batch.events) - len(applied.new) - applied.skipped
        return queued, len(applied.new), duplicates

    def _catch_up(self, exc: OffsetConflict, batch: _Batch) -> None:
        """The store refused a batch that does not start at a partition's stored next
        offset. The store ahead: an earlier attempt of this batch committed though its
        acknowledgement was lost, so read on from the store's offset, and have the
        dispatcher load the actions it never got. The store behind this instance's own
        belief (restored from a backup?): stop the partition."""
        self.stats.conflicts += 1
        try:
            stored = self._store.next_offsets()
        except CheckpointError as err:
            self._store_outage.failed(err)
            return
        for tp in batch.next:
            mine = self._owned.get(tp)
            if mine is None:
                continue
            now = stored.get(tp)
            if now == mine.next_offset:
                continue
            if now is None or (mine.next_offset is not None and now < mine.next_offset):
                self._stop(
                    tp,
                    f"the store's next offset ({now}) is behind the offset this instance "
                    f"checkpointed ({mine.next_offset}): was the store restored from a backup?",
                )
                continue
            log.warning(
                "%s[%d]: the store already holds offsets %s..%d (an earlier attempt of this "
                "batch committed; its acknowledgement was lost): reading on from %d",
                tp[0], tp[1], mine.next_offset if mine.next_offset is not None else "start",
                now - 1, now,
            )  # fmt: skip
            # The actions first: should loading them fail (the store dropped again), the
            # partition must not read on past them; the batch is tried again, and conflicts
            # again, until they are loaded.
            self._sink.catch_up(tp)
            mine.next_offset = now
            self._try_seek(tp, now)
        self._uncommitted.update(
            {tp: o for tp, o in stored.items() if tp in self._owned and tp in batch.next}
        )
        if exc.partition not in batch.next:
            log.warning("offset conflict on a partition outside the batch: %s", exc)

    # -- step 3 ------------------------------------------------------------------------

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
                offsets=[kafka_tp(tp, o) for tp, o in offsets.items()],
                asynchronous=True,
            )
        except KafkaException as exc:
            # The store already holds the batch and is the source of truth: a lost commit
            # only means Kafka's view lags until the next one.
            log.warning("offset commit failed (store is ahead, safe): %s", exc)

    def _commit_resync(self) -> None:
        """Commit the store's offsets where Kafka's committed offset lags behind them."""
        assert self._consumer is not None
        pending = {
            tp: o for tp, o in self._resync.items() if self.ownership.state(tp) is State.OWNED
        }
        self._resync.clear()
        if not pending:
            return
        try:
            committed = self._consumer.committed([kafka_tp(tp) for tp in pending], timeout=10)
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

    # -- librdkafka callbacks ------------------------------------------------------------

    def _on_statistics(self, text: str) -> None:
        """librdkafka's statistics (on the poll thread): broker states and consumer lag."""
        try:
            stats = json.loads(text)
        except ValueError:
            return
        brokers = stats.get("brokers", {}).values()
        up = any(b.get("state") == "UP" for b in brokers if b.get("nodeid", -1) >= 0)
        self.stats.kafka_connected = up
        if up:
            self._kafka_back()
        lag: dict[TP, int] = {}
        partitions: dict[str, int] = {}
        for topic, data in stats.get("topics", {}).items():
            for part, p in data.get("partitions", {}).items():
                tp = (topic, int(part))
                if tp[1] >= 0:  # -1: librdkafka's internal unassigned partition
                    partitions[topic] = partitions.get(topic, 0) + 1
                if tp in self._owned and p.get("consumer_lag", -1) >= 0:
                    lag[tp] = int(p["consumer_lag"])
        owned = dict.fromkeys(partitions, 0)
        for topic, _ in self.ownership.in_state(State.OWNED):
            owned[topic] = owned.get(topic, 0) + 1
        self.stats.lag, self.stats.partitions, self.stats.owned = lag, partitions, owned

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-wide errors: a fatal one stops the pipeline; brokers out of
        reach are said in one line now and then, naming where the connector looks."""
        if is_fatal(err):
            self._fatal = err
            return
        why = kafka.unreachable(err)
        if why is not None:
            self.stats.kafka_connected = False
            now = time.monotonic()
            if self._kafka_down_since is None:
                self._kafka_down_since = now
            if now - self._unreachable_logged >= UNREACHABLE_LOG_EVERY:
                self._unreachable_logged = now
                log.error(
                    "Kafka at %s is not reachable (%s); retrying",
                    self._settings.bootstrap_servers,
                    why,
                )
        else:
            log.warning("Kafka: %s", err.str())

    def _kafka_back(self) -> None:
        """A broker answers again: say so once, with how long it was away."""
        since, self._kafka_down_since = self._kafka_down_since, None
        if since is not None:
            self._unreachable_logged = 0.0
            log.warning(
                "Kafka at %s is reachable again after %.1fs",
                self._settings.bootstrap_servers,
                time.monotonic() - since,
            )

    # -- ownership ---------------------------------------------------------------------

    def _fence(self, exc: Fenced, batch: Mapping[TP, int]) -> None:
        """A batch found partitions fenced (the store refused it for a stale epoch): mark
        them fenced, stop reading them, and have the dispatcher let them go."""
        lost = [tp for tp in exc.partitions or tuple(batch) if self.ownership.fence(tp, str(exc))]
        self._let_go(lost)
        self._sink.release(lost)
        log.warning("%s: this instance stops touching it until Kafka reassigns it", exc)

    def _take_fenced(self) -> None:
        """Partitions the dispatcher found fenced (a settlement refused, an epoch read
        back that moved on) since the last batch: stop reading them, as :meth:`_fence`
        does (the dispatcher has let them go already). One log line."""
        news = self.ownership.take_fenced()
        lost = sorted(tp for tp in news if tp in self._owned)
        if not lost:
            return
        self._let_go(lost)
        log.warning(
            "%s: fenced in the checkpoint store (the dispatcher found that another instance "
            "claimed it: %s); this instance stops reading it until Kafka reassigns it",
            ", ".join(f"{t}[{p}]" for t, p in lost),
            "; ".join(sorted({news[tp].why or "epoch moved on" for tp in lost})),
        )

    def _let_go(self, lost: Sequence[TP]) -> None:
        """Stop reading fenced partitions: paused (a reassignment resumes them), and their
        records already fetched are skipped (:meth:`_decode` reads owned ones only)."""
        for tp in lost:
            self._owned.pop(tp, None)
            self._resync.pop(tp, None)
            self.stats.stopped.pop(tp, None)
        if lost and self._consumer is not None:
            try:
                self._consumer.pause([kafka_tp(tp) for tp in lost])
            except KafkaException as exc:  # revoked meanwhile: nothing to fetch anyway
                log.debug("pausing fenced partitions: %s", exc)

    def _check_fenced(self) -> None:
        """Stop if Kafka keeps assigning a partition that the store says is not ours."""
        if self._consumer is None:
            return
        fenced = self.ownership.in_state(State.FENCED)
        if not fenced:
            return
        now = self.ownership.clock()
        grace = self._settings.fenced_grace
        overdue = [tp for tp, held in fenced.items() if now - held.since > grace]
        if not overdue:
            return
        assigned = {(p.topic, p.partition) for p in self._consumer.assignment()}
        self.ownership.release(overdue)
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
        for tp, offset in first.items():
            if tp in self._owned:
                self._seek(tp, offset)

    def _seek(self, tp: TP, offset: int) -> None:
        assert self._consumer is not None
        self._consumer.seek(kafka_tp(tp, offset))

    def _try_seek(self, tp: TP, offset: int) -> None:
        """Seek a partition that may not be fetching yet (just assigned, paused): if
        librdkafka refuses, records below the store's offset that come are caught by the
        check of :meth:`_went_back`, which seeks again."""
        try:
            self._seek(tp, offset)
        except KafkaException as exc:
            log.debug("seek %s[%d]@%d: %s", tp[0], tp[1], offset, exc)

    # -- assignment: claim, check, adopt -------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        """Kafka assigned ``partitions``: claim them in the store, check their offsets, and
        start reading each where the store says. A claim that fails (the store is down)
        leaves them assigned but paused; :meth:`_retry_claims` tries again with backoff, so
        a partition is never assigned and silently unowned."""
        self.stats.joined = True
        self.stats.kafka_connected = True
        tps = [(p.topic, p.partition) for p in partitions]
        if not tps:
            consumer.incremental_assign(partitions)
            return
        self.ownership.assigned(tps)
        try:
            starts = self._adopt(tps)
        except Exception as exc:
            if isinstance(exc, ConnectorError) and not exc.retriable:
                raise
            starts = None  # they stay claiming: retried by _retry_claims
            self._claim_retry = time.monotonic() + self._claim_pause
            self._claim_outage.failed(exc, retry_in=self._claim_pause)
        if starts is not None:
            for p in partitions:
                start = starts.get((p.topic, p.partition))
                if start is not None:
                    p.offset = start  # the store, not Kafka, says where it resumes
        consumer.incremental_assign(partitions)
        held = [
            p for p in partitions
            if self.ownership.state((p.topic, p.partition)) is not State.OWNED
        ]  # fmt: skip
        if self._paused:
            consumer.pause(partitions)
        else:
            # librdkafka keeps a partition's pause across its revocation: one paused here
            # before it was lost (a failed claim, a stop, backpressure) and assigned back
            # later would otherwise never be read again.
            running = [p for p in partitions if p not in held]
            if running:
                consumer.resume(running)
            if held:
                consumer.pause(held)
        self.stats.claiming = len(self.ownership.in_state(State.CLAIMING))
        if starts is not None:
            log.info(
                "assigned %s",
                ", ".join(
                    f"{t}[{p}]@" + (f"store:{starts[(t, p)]}" if (t, p) in starts else "committed")
                    + (" (stopped)" if self.ownership.state((t, p)) is State.STOPPED else "")
                    for t, p in tps
                ),
            )  # fmt: skip

    def _adopt(self, tps: Sequence[TP]) -> dict[TP, int]:
        """Claim ``tps`` (claiming in :attr:`ownership`), check their offsets against
        Kafka's, record them owned (or stopped) at their new epochs, and hand them to the
        dispatcher, which reads their epochs from :attr:`ownership`. Returns the store's
        next offset of each partition that has one and is not stopped. Raises (retriable)
        when the store or Kafka cannot be asked: nothing is owned then (they stay
        claiming, since when they were first)."""
        waiting = self.ownership.in_state(State.CLAIMING)
        claims = self._store.claim(self._settings.instance_id, tps)
        stopped = self._check_offsets(claims)
        self.ownership.claimed({tp: claims[tp].epoch for tp in tps}, stopped)
        try:
            self._sink.adopt(claims)
        except BaseException:
            self.ownership.assigned(tps, since={tp: h.since for tp, h in waiting.items()})
            raise
        starts: dict[TP, int] = {}
        for tp in tps:
            claim = claims[tp]
            self._owned[tp] = _Reading(
                claim.next_offset, claim.generation, idle_marked=time.monotonic()
            )
            if tp in stopped:
                self.stats.stopped[tp] = stopped[tp]
                continue
            self.stats.stopped.pop(tp, None)
            self._read_watch.start(tp, claim.next_offset, "it was assigned", time.monotonic())
            if claim.next_offset is not None:
                starts[tp] = claim.next_offset
                self._resync[tp] = claim.next_offset
        return starts

    def _check_offsets(self, claims: Mapping[TP, Claim]) -> dict[TP, str]:
        """Partitions whose Kafka offsets do not follow the store's (a topic deleted and
        created again, a cluster migrated, an unclean leader election), each with what was
        seen; they are recorded as stopped in the store and logged. A partition already
        stopped stays so until an operator resets it (``event-connector partitions
        reset``). Records deleted by retention before they were read are only logged."""
        stopped: dict[TP, str] = {tp: c.stopped for tp, c in claims.items() if c.stopped}
        ids = self._topic_ids({tp[0] for tp in claims})
        for tp, claim in sorted(claims.items()):
            if tp in stopped:
                log.error("%s[%d] stays stopped: %s", tp[0], tp[1], claim.stopped)
                continue
            current = ids.get(tp[0])
            why = None
            if claim.topic_id is not None and current is not None and claim.topic_id != current:
                why = (
                    f"the topic's id is {current}, not {claim.topic_id} as when it was "
                    "checkpointed: the topic was deleted and created again"
                )
            elif claim.next_offset is not None:
                low, high = self._watermarks(tp)
                if claim.next_offset > high:
                    why = (
                        f"the store's next offset is {claim.next_offset} but Kafka's offsets "
                        f"end at {high} (low {low}): the offsets went backwards (a topic "
                        "created again, a cluster migrated, an unclean leader election)"
                    )
                elif claim.next_offset < low:
                    log.warning(
                        "%s[%d]: records %d..%d were deleted by retention before they were "
                        "read; reading on from %d",
                        tp[0], tp[1], claim.next_offset, low - 1, low,
                    )  # fmt: skip
            if why is not None:
                stopped[tp] = why
                self._report_stopped(tp, why)
                self._store.mark_partition(tp, claim.epoch, stopped=why)
            elif claim.topic_id is None and current is not None:
                self._store.mark_partition(tp, claim.epoch, topic_id=current)
        return stopped

    def _report_stopped(self, tp: TP, why: str) -> None:
        log.error(
            "%s[%d] STOPPED: %s. Nothing of it is read until an operator decides: "
            "`event-connector partitions reset -c FILE --topic %s --partition %d` reads on "
            "from Kafka's offsets, keeping everything the store holds",
            tp[0], tp[1], why, tp[0], tp[1],
        )  # fmt: skip

    def _topic_ids(self, topics: set[str]) -> dict[str, str]:
        from connector.topics import describe_topics

        found = describe_topics(self._admin, topics, self._settings.kafka_timeout)
        return {name: info.topic_id for name, info in found.items() if info and info.topic_id}

    def _watermarks(self, tp: TP) -> tuple[int, int]:
        assert self._consumer is not None
        consumer = self._consumer
        return kafka.retried(
            f"reading the offsets of {tp[0]}[{tp[1]}]",
            lambda: kafka.watermarks(consumer, kafka_tp(tp), self._settings.kafka_timeout / 2),
            self._settings.kafka_timeout,
        )

    def _stop(self, tp: TP, why: str) -> None:
        """Stop reading ``tp`` (it stays assigned, paused, and its actions are delivered)."""
        epoch = self.ownership.epoch(tp)
        if tp not in self._owned or epoch is None or not self.ownership.stop(tp, why):
            return  # not owned here, or stopped already
        self.stats.stopped[tp] = why
        self._uncommitted.pop(tp, None)
        self._report_stopped(tp, why)
        if self._consumer is not None:
            self._consumer.pause([kafka_tp(tp)])
        try:
            self._store.mark_partition(tp, epoch, stopped=why)
        except CheckpointError as exc:
            log.warning("%s[%d]: could not record that it is stopped: %s", tp[0], tp[1], exc)

    def _went_back(self, behind: Mapping[TP, int]) -> None:
        """Records below the store's next offset arrived, which Kafka does not do after a
        seek: its offsets restarted lower (the fetch position was out of range and was
        reset). Stop the partition when Kafka's end is below the store's offset or the
        topic's id changed; otherwise read on from the store's offset."""
        ids = self._topic_ids({tp[0] for tp in behind})
        stored_ids = {p.tp: p.topic_id for p in self._store.partitions() if p.tp in behind}
        for tp, offset in behind.items():
            mine = self._owned.get(tp)
            if mine is None or mine.next_offset is None:
                continue
            low, high = self._watermarks(tp)
            was, now = stored_ids.get(tp), ids.get(tp[0])
            if was is not None and now is not None and was != now:
                why = f"the topic's id is {now}, not {was}: the topic was deleted and created again"
            elif high < mine.next_offset:
                why = (
                    f"Kafka returned offset {offset} below the store's next offset "
                    f"{mine.next_offset}, and its offsets end at {high} (low {low}): the "
                    "offsets went backwards (a topic created again, a cluster migrated, an "
                    "unclean leader election)"
                )
            else:
                log.warning(
                    "%s[%d]: Kafka returned offset %d below the store's next offset %d; "
                    "reading on from %d",
                    tp[0], tp[1], offset, mine.next_offset, mine.next_offset,
                )  # fmt: skip
                self._try_seek(tp, mine.next_offset)
                continue
            self._stop(tp, why)

    def _housekeeping(self) -> None:
        """Between batches: retry claims that failed, resume partitions an operator reset,
        and now and then check that the owned topics are the ones that were checkpointed."""
        if time.monotonic() >= self._claim_retry and self.ownership.in_state(State.CLAIMING):
            self._retry_claims()
        now = time.monotonic()
        if now - self._last_check >= self._settings.check_interval and self._owned:
            self._last_check = self._last_stopped_check = now
            self._check_topics()
        elif self.stats.stopped and now - self._last_stopped_check >= STOPPED_CHECK_EVERY:
            self._last_stopped_check = now
            self._check_topics(ids=False)
        if self._read_watch:
            self._watch_reading(now)

    def _retry_claims(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assigned = {(p.topic, p.partition) for p in consumer.assignment()}
        claiming = self.ownership.in_state(State.CLAIMING)
        self.ownership.release(tp for tp in claiming if tp not in assigned)  # revoked meanwhile
        tps = sorted(tp for tp in claiming if tp in assigned)
        self.stats.claiming = len(tps)
        if not tps:
            self._claim_outage.ok()
            return
        oldest = min(claiming[tp].since for tp in tps)
        try:
            starts = self._adopt(tps)
        except Exception as exc:
            if isinstance(exc, ConnectorError) and not exc.retriable:
                raise
            waited = self.ownership.clock() - oldest
            if waited > self._settings.claim_timeout:
                raise ClaimTimeout(
                    f"could not claim {len(tps)} assigned partition(s) in the checkpoint store "
                    f"for {waited:.0f}s ({cause_of(exc)}); exiting so that Kafka can give them "
                    "to another instance"
                ) from exc
            self._claim_pause = min(10.0, self._claim_pause * 2)
            self._claim_retry = time.monotonic() + self._claim_pause
            self._claim_outage.failed(exc, retry_in=self._claim_pause)
            return
        self._claim_pause = 0.5
        self._claim_outage.ok()
        self.stats.claiming = 0
        resume = []
        for tp in tps:
            if self.ownership.state(tp) is not State.OWNED:
                continue
            start = starts.get(tp)
            self._try_seek(tp, start if start is not None else self._committed_or_reset(tp))
            resume.append(kafka_tp(tp))
        if resume and not self._paused:
            consumer.resume(resume)
        log.info(
            "claimed %s",
            ", ".join(
                f"{t}[{p}]@" + (f"store:{starts[(t, p)]}" if (t, p) in starts else "committed")
                for t, p in tps
            ),
        )

    def _committed_or_reset(self, tp: TP) -> int:
        """Where a partition the store has no offset for starts: Kafka's committed offset,
        else the beginning or the end (``auto.offset.reset``)."""
        assert self._consumer is not None
        try:
            found = self._consumer.committed([kafka_tp(tp)], timeout=10)
            if found and found[0].offset >= 0:
                return int(found[0].offset)
        except KafkaException as exc:
            log.warning("%s[%d]: could not read the committed offset: %s", tp[0], tp[1], exc)
        return OFFSET_END if self._settings.auto_offset_reset == "latest" else OFFSET_BEGINNING

    def _check_topics(self, *, ids: bool = True) -> None:
        """Stop the partitions of a topic whose id is no longer the one checkpointed (a
        topic deleted and created again while this instance kept its assignment); resume
        stopped partitions that an operator reset meanwhile."""
        try:
            rows = {p.tp: p for p in self._store.partitions() if p.tp in self._owned}
            current = self._topic_ids({tp[0] for tp in self._owned}) if ids else {}
        except ConnectorError as exc:
            log.debug("checking the topics' ids failed: %s", exc)
            return
        held = self.ownership.snapshot()
        for tp, mine in list(self._owned.items()):
            row = rows.get(tp)
            if row is None or tp not in held:
                continue
            if held[tp].state is State.STOPPED:
                if row.stopped is None and row.epoch == held[tp].epoch:
                    mine.generation = row.generation
                    self._resume_reset(tp, mine, row.next_offset)
                continue
            now = current.get(tp[0])
            if row.topic_id is not None and now is not None and row.topic_id != now:
                self._stop(
                    tp,
                    f"the topic's id is {now}, not {row.topic_id} as when it was checkpointed: "
                    "the topic was deleted and created again",
                )

    def _resume_reset(self, tp: TP, mine: _Reading, next_offset: int | None) -> None:
        self.ownership.resume(tp)
        mine.next_offset = next_offset
        self.stats.stopped.pop(tp, None)
        self._try_seek(tp, next_offset if next_offset is not None else self._committed_or_reset(tp))
        if self._consumer is not None and not self._paused:
            self._consumer.resume([kafka_tp(tp)])
        log.warning(
            "%s[%d]: reset by an operator; reading on from offset %s", tp[0], tp[1], next_offset
        )
        self._read_watch.start(tp, next_offset, "an operator reset it", time.monotonic())

    def _watch_reading(self, now: float) -> None:
        """Partitions that started reading (assigned, or reset by an operator) and have
        fetched nothing yet: see :mod:`connector.pipeline.readwatch`. Kafka holding records
        from where one starts while none arrives means this client still fetches the topic
        as it was before it was created again: seek again, then stop the process with a
        fatal error (:class:`~kec.errors.KafkaFatal`) so that its supervisor starts a new
        client, which reads the topic as it is now (with static membership, at once)."""
        can_read = not (self._paused or self._store_outage.down or not self.stats.kafka_connected)
        for tp, watched in self._read_watch.due(now):
            mine = self._owned.get(tp)
            if mine is None or self.ownership.state(tp) is not State.OWNED:
                self._read_watch.drop(tp)
                continue
            ends: list[tuple[int, int]] = []  # (first, high) once Kafka was asked
            holds = functools.partial(self._holds_from, tp, watched.start, ends)
            verdict = self._read_watch.look(
                tp, now, mine.next_offset, can_read=can_read, holds=holds
            )
            if verdict is Verdict.GIVE_UP:
                first, high = ends[-1]
                raise KafkaFatal(
                    f"fatal: nothing of {tp[0]}[{tp[1]}] read since {watched.since} though "
                    f"Kafka holds offsets {first}..{high - 1}: this Kafka client still "
                    "fetches the topic as it was before it was created again; exiting so "
                    "that a new client reads it"
                )
            if verdict is Verdict.SEEK:
                first, high = ends[-1]
                log.warning(
                    "%s[%d]: nothing read since %s though Kafka holds offsets %d..%d; "
                    "seeking to %d again", tp[0], tp[1], watched.since, first, high - 1, first,
                )  # fmt: skip
                self._try_seek(tp, first)
                if self._consumer is not None and not self._paused:
                    self._consumer.resume([kafka_tp(tp)])

    def _holds_from(self, tp: TP, start: int | None, ends: list[tuple[int, int]]) -> bool:
        """Whether Kafka holds records of ``tp`` from where it starts reading (the store's
        ``start``, else the committed offset or the beginning) that this client has not
        fetched; appends the range to ``ends``."""
        first = start if start is not None else self._committed_or_reset(tp)
        if first == OFFSET_END:
            return False  # it starts at the end: nothing before it is due
        try:
            low, high = self._watermarks(tp)
        except ConnectorError as exc:
            log.debug("%s[%d]: watermarks of a watched partition: %s", tp[0], tp[1], exc)
            return False
        first = low if first == OFFSET_BEGINNING else max(first, low)
        ends.append((first, high))
        # A client that fetches moves its position past what yields no event (transaction
        # markers, aborted records under read_committed); a stale one stays where it was
        # sought.
        return high > max(first, self._position(tp))

    def _position(self, tp: TP) -> int:
        assert self._consumer is not None
        try:
            (found,) = self._consumer.position([kafka_tp(tp)])
        except KafkaException as exc:
            log.debug("%s[%d]: position of a watched partition: %s", tp[0], tp[1], exc)
            return -1
        return int(found.offset)

    def _idle(self, at_end: Collection[TP], read: Collection[TP] = ()) -> None:
        """Partitions read to their end (``at_end``: this poll found their end; ``read``:
        this batch read records of them), with nothing uncheckpointed: their event time
        moves to the present (the idle rule: no record still to read can be older), at
        most every ``idle_interval`` seconds, so ``all_of`` sets that no event can
        complete any more are pruned even when some partitions see no traffic. With
        time-driven rules it moves for as long as nothing comes, and they fire
        (:meth:`_tick`); without, only when a poll finds the end (a write per partition
        every ``idle_interval`` would cost a fsync each for nothing)."""
        if has_timers(self._evaluator):
            self._at_end.difference_update(read)
            self._at_end.update(at_end)
        else:  # nothing fires by time: a move when a poll finds the end is enough
            self._at_end = set(at_end)
        if not self._at_end:
            return
        now = time.monotonic()
        reading = self.ownership.epochs(State.OWNED)
        for tp in sorted(self._at_end):
            mine = self._owned.get(tp)
            if mine is None or tp not in reading:
                self._at_end.discard(tp)
                continue
            if now - mine.idle_marked < self._settings.idle_interval:
                continue
            mine.idle_marked = now
            try:
                self._tick(tp, mine, reading[tp], int(time.time() * 1000))
            except (CheckpointError, OffsetConflict) as exc:
                # A fence or a conflict is found again by the partition's next batch.
                log.debug("%s[%d]: could not move its event time: %s", tp[0], tp[1], exc)

    def _tick(self, tp: TP, mine: _Reading, epoch: int, now: int) -> None:
        """An idle partition's event time moves to ``now`` (ms); with time-driven rules,
        in one transaction with their due pass, whose actions are queued as a batch of no
        records would queue them (docs/architecture.md, "Time-driven rules")."""
        if mine.next_offset is None or not has_timers(self._evaluator):
            self._store.mark_partition(tp, epoch, event_time=now)
            return
        offset = mine.next_offset
        with self._store.batch() as tx:
            fired = fire_due(tx, self._evaluator, {tp: now}).get(tp, [])
            first_aseq = tx.append(tp, epoch, offset, offset, [], fired, now)
        if fired:
            self.stats.actions += len(fired)
            self.stats.by_rule.update(a.rule for a in fired)
            self._sink.queue(tp, first_aseq, fired)

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        with self._leave_lock:
            if self._left:
                return  # an abandoned close: the service and its store are gone
            self._revoking = True
        try:
            self._revoke(consumer, partitions)
        finally:
            self._revoking = False

    def _revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self._consumer is not None:
            self._commit(now=True, only=tps)  # Kafka's view level with the store before hand-over
        owned = [tp for tp in tps if tp in self._owned]
        for tp in tps:
            self._uncommitted.pop(tp, None)
            self._owned.pop(tp, None)
            self._resync.pop(tp, None)
            self.stats.stopped.pop(tp, None)
        if owned:
            try:
                self._sink.release(owned)  # deliveries in flight finish, then the last settlement
            except Exception as exc:
                # Whatever was delivered and not settled is delivered again (same ids) by
                # the next owner; the partition must be let go all the same.
                log.warning("releasing %d partition(s) failed: %s", len(owned), cause_of(exc))
        # Only now: while the dispatcher settles them, they are still this instance's (its
        # check of the epochs would otherwise drop them before their last settlement).
        self.ownership.release(tps)
        self.stats.claiming = len(self.ownership.in_state(State.CLAIMING))
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
            assigned = consumer.assignment()
            consumer.pause(assigned)
            now = time.monotonic()
            self.stats.paused_since = now
            self.stats.backpressure_pauses += 1
            self._pause_log.paused(now, pending, limit, len(assigned))
        elif self._paused and pending < limit * 0.8:
            self._paused = False
            reading = self.ownership.epochs(State.OWNED)
            running = [p for p in consumer.assignment() if (p.topic, p.partition) in reading]
            consumer.resume(running)
            now = time.monotonic()
            since, self.stats.paused_since = self.stats.paused_since, None
            spent = now - since if since is not None else 0.0
            self.stats.backpressure_seconds += spent
            self._pause_log.resumed(now, pending, spent)


class _PauseLog:
    """The backpressure lines, at most a pause and its resume every ``interval``
    seconds: a small ``outbox_max_pending`` against a slow target pauses and resumes
    many times a second. The next line says how many went unlogged."""

    def __init__(self, interval: float = 30.0) -> None:
        self._interval = interval
        self._last: float | None = None
        self._logged = False  # the current pause was logged: log its resume
        self._quiet = 0  # pauses since the last line

    def paused(self, now: float, pending: int, limit: int, partitions: int) -> None:
        if self._last is not None and now - self._last < self._interval:
            self._logged = False
            self._quiet += 1
            return
        more = f"; {self._quiet} more pause(s) since the last line" if self._quiet else ""
        log.warning(
            "backpressure: %d actions wait for delivery (limit %d): pausing %d partition(s)%s",
            pending, limit, partitions, more,
        )  # fmt: skip
        self._last, self._logged, self._quiet = now, True, 0

    def resumed(self, now: float, pending: int, spent: float) -> None:
        if self._logged:
            log.info(
                "backpressure: %d actions wait for delivery: resuming partitions after %.1fs",
                pending, spent,
            )  # fmt: skip
            self._logged = False


def _settle(future: Future[Any], work: Callable[[], Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return  # its caller gave up waiting and cancelled it
    try:
        result = work()
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


class _RulesFailed(Exception):
    """Inside a batch transaction: the rules raised on these events (they are poison)."""

    def __init__(self, events: list[tuple[Event, Exception]]) -> None:
        super().__init__(f"the rules failed on {len(events)} event(s)")
        self.events = events
