"""``replay``: run a range of the configured topics through the pipeline's steps again.

A dedicated reader assigns the partitions (no group, no commits), seeks to the start
(``from_offset``, or the first offset at or after ``from_time``) and reads up to the high
watermark found when the replay began. Each batch is decoded with :mod:`kec.codec`
and checkpointed in ONE store transaction like the pipeline's step 2: insert the events
(ids already stored are skipped), evaluate the rules for the new ones only (rule state read
and written in the same transaction), queue their actions. So replaying a range the
connector already processed queues nothing: exactly-once is kept by the event-id dedup.

Why not :class:`connector.runtime.Pipeline`: its batch step also records next offsets
under a partition epoch claimed through group assignment. A replay owns no partition and
must not move (or fence) the running connector's offsets, so it runs the same
insert/evaluate/queue sequence without the offset step. Undecodable records are counted,
not dead-lettered again (the pipeline did that when it first read them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from checkpoint.base import CheckpointStore
from checkpoint.base import TopicPartition as TP
from connector.ops.kafka_io import (
    offsets_for_time,
    open_consumer,
    partitions_of,
    positions,
    reader_config,
    watermarks,
)
from connector.runtime import Applied, apply_events
from kec.codec import event_from_message
from kec.errors import ConfigError, KafkaClientError
from kec.evaluation import Evaluator
from kec.event import Event

IDLE_TIMEOUT = 30.0  # no progress for this long while records remain: give up


@dataclass(frozen=True)
class ReplayRange:
    """Where to start: exactly one of ``from_offset`` / ``from_time_ms``."""

    from_offset: int | None = None
    from_time_ms: int | None = None
    partition: int | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        if (self.from_offset is None) == (self.from_time_ms is None):
            raise ConfigError("replay needs exactly one of from-offset and from-time")


@dataclass
class ReplayReport:
    read: int = 0
    new: int = 0
    duplicates: int = 0
    undecodable: int = 0
    rule_failures: int = 0  # events the rules raised on (the pipeline dead-lettered them)
    actions: int = 0
    partitions: int = 0


def _plan(
    client_config: Mapping[str, Any], topics: Mapping[str, str], span: ReplayRange
) -> tuple[dict[TP, int], dict[TP, int]]:
    """``(start, end)`` offsets of every partition that has something to replay."""
    names = list(topics)
    if span.topic is not None:
        if span.topic not in topics:
            raise ConfigError(
                f"topic {span.topic!r} is not configured (configured: {', '.join(names)})"
            )
        names = [span.topic]
    consumer = open_consumer(reader_config(client_config, "replay-plan"))
    try:
        tps = [tp for tp in partitions_of(consumer, names) if span.partition in (None, tp[1])]
        if not tps:
            raise ConfigError(f"partition {span.partition} does not exist in {', '.join(names)}")
        marks = {tp: watermarks(consumer, tp) for tp in tps}
        if span.from_time_ms is not None:
            by_time = offsets_for_time(consumer, tps, span.from_time_ms)
            # -1: nothing that late in the partition, so nothing to replay there.
            wanted = {tp: by_time.get(tp, -1) for tp in tps}
            starts = {tp: (o if o >= 0 else marks[tp][1]) for tp, o in wanted.items()}
        else:
            assert span.from_offset is not None
            starts = {tp: span.from_offset for tp in tps}
    finally:
        consumer.close()
    start: dict[TP, int] = {}
    end: dict[TP, int] = {}
    for tp in tps:
        low, high = marks[tp]
        first = max(starts[tp], low)  # records below the low watermark were deleted
        if first < high:
            start[tp], end[tp] = first, high
    return start, end


def _checkpoint(store: CheckpointStore, evaluator: Evaluator, events: list[Event]) -> Applied:
    """The pipeline's step 2 without the offsets."""
    with store.batch() as tx:
        return apply_events(tx, evaluator, events)


def replay(
    client_config: Mapping[str, Any],
    topics: Mapping[str, str],
    store: CheckpointStore,
    evaluator: Evaluator,
    span: ReplayRange,
    *,
    batch_size: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Replay ``span`` into the opened ``store``; ``on_progress(done, total)`` per batch."""
    start, end = _plan(client_config, topics, span)
    report = ReplayReport(partitions=len(start))
    total = sum(end[tp] - start[tp] for tp in start)
    if on_progress is not None:
        on_progress(0, total)
    if not start:
        return report
    consumer = open_consumer(reader_config(client_config, "replay"))
    try:
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in start.items()])
        open_tps = set(start)
        last_progress = time.monotonic()
        while open_tps:
            messages = consumer.consume(batch_size, 0.5)
            events: list[Event] = []
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.fatal() or err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaClientError(f"consumer error during replay: {err}")
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is None or partition is None or offset is None:
                    continue
                tp = (topic, partition)
                if tp not in open_tps or offset >= end[tp]:
                    continue  # past the range this replay was asked for
                report.read += 1
                try:
                    events.append(
                        event_from_message(msg, topics.get(tp[0], "default"), strict_namespace=True)
                    )
                except Exception:
                    report.undecodable += 1
            if events:
                applied = _checkpoint(store, evaluator, events)
                report.new += len(applied.new)
                report.duplicates += len(events) - len(applied.new)
                report.actions += len(applied.actions)
                report.rule_failures += len(applied.failed)
            if messages:
                last_progress = time.monotonic()
                if on_progress is not None:
                    on_progress(report.read, total)
            # Positions, not record offsets, decide: they also step over control records.
            at = positions(consumer, sorted(open_tps))
            done = _finished(at, end)
            for tp in done:
                open_tps.discard(tp)
            if done:
                consumer.incremental_unassign([TopicPartition(t, p) for t, p in done])
            if open_tps and time.monotonic() - last_progress > IDLE_TIMEOUT:
                raise KafkaClientError(
                    f"replay made no progress for {IDLE_TIMEOUT:.0f}s with "
                    f"{len(open_tps)} partitions unfinished"
                )
    finally:
        consumer.close()
    return report


def _finished(at: Mapping[TP, int], end: Mapping[TP, int]) -> Sequence[TP]:
    return [tp for tp, offset in at.items() if offset >= end[tp]]
