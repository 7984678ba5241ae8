"""``replay``: evaluate records the connector already checkpointed again, with the
rules as they are now, and queue the actions that were not queued before.

What it is for: a rule that was missing or wrong when the events arrived. The fixed rule
fires for them; the rules that fired before do not fire again, because an action's id is
its rule and its events (:mod:`kec.action`), and the replay skips every id the records'
own batches (or an earlier replay) queued.

A dedicated reader assigns the partitions (no group, no commits), seeks to the start
(``from_offset``, or the first offset at or after ``from_time``) and reads up to where the
store has checkpointed each partition, as found when the replay began. Records past that
are the pipeline's to read: they are counted, not touched. A record that was a duplicate
when it arrived (its explicit id was stored under another offset) is skipped again. In a
partition an operator reset (``partitions reset``), a record is known by the id it was
checkpointed under, ``topic/partition/offset@generation`` (read from its batch), so the
actions it fired are found as the ones queued before; taken as ``topic/partition/offset``
it would fire each rule again under new ids.

The replayed actions become due retries of their partition (rows of their own): its owner
delivers them within a second or so, or the next owner does. The checkpoint's offsets
never move. Undecodable records are counted, not dead-lettered again (the pipeline did
that).

A partition the store has stopped (its offsets went backwards, its topic was created
again) is not replayed, nor one whose topic Kafka now knows by another id than the one
it was checkpointed under (created again, and not stopped yet): what its records are,
and under which ids they will fire, is the operator's ``partitions reset`` to decide.
The store's offsets are another topic's, so a replay would take records never
checkpointed for ones that were.

``all_of`` and time-driven rules are not replayed (:func:`without_sets`), and the replay
says which it left out: what such a rule fires depends on the set (or the burst, the
batch) as it stood when each event arrived (which events came before it, which set had
just fired and started over), and today's set is not that. Evaluating old events
against it would invent actions a live run never fired: a range processed once, with
unchanged rules, replayed, would queue new ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from checkpoint.base import OperationsStore, PartitionInfo
from connector.ops.kafka_io import (
    offsets_for_time,
    partitions_of,
    positions,
    watermarks,
)
from connector.topics import describe_topics, open_admin
from kec import kafka
from kec.action import Action
from kec.codec import event_from_message
from kec.errors import ConfigError, KafkaClientError
from kec.evaluation import Evaluator
from kec.event import Event
from kec.kafka import TP, is_eof, is_fatal, kafka_tp
from kec.kafka.registry import RecordFormats, RegistryUnavailable

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
    evaluated: int = 0  # records evaluated again
    duplicates: int = 0  # records that were resends of an earlier event when they arrived
    unread: int = 0  # records in the range the pipeline has not checkpointed yet
    undecodable: int = 0
    rule_failures: int = 0  # events the rules raised on (the pipeline dead-lettered them)
    actions: int = 0  # actions queued now
    known: int = 0  # actions the rules produced again that were queued before
    partitions: int = 0
    left_out: tuple[str, ...] = ()  # all_of rules, not replayed (see the module docstring)
    # Partitions not replayed, and why: stopped, or their topic created again.
    held_back: dict[TP, str] = field(default_factory=dict)


def without_sets(evaluator: Evaluator) -> tuple[Evaluator, tuple[str, ...]]:
    """``evaluator`` without its ``all_of`` and ``sequence`` rules (the rules that keep
    sets), and their names (none: as it is)."""
    from connector.rules.trigger import TriggerEngine

    if not isinstance(evaluator, TriggerEngine):
        return evaluator, ()
    # Stateful rules: all_of sets, sequences, correlation joins (their key is not their one
    # pattern) and the time-driven ones (debounce, throttle, batch, absence).
    sets = tuple(r.name for r in evaluator.rules if r.patterns != (r.key,) or r.timing is not None)
    if not sets:
        return evaluator, ()
    kept = [r for r in evaluator.rules if r.name not in sets]
    return TriggerEngine(kept, limits=evaluator.limits), sets


def _plan(
    connection: kafka.Connection,
    topics: Mapping[str, str],
    span: ReplayRange,
    checkpointed: Mapping[TP, int],
) -> tuple[dict[TP, int], dict[TP, int], int]:
    """``(start, end)`` offsets of every partition that has something to replay (``end``:
    where the store's checkpoint stands), and how many records of the range lie past it."""
    names = list(topics)
    if span.topic is not None:
        if span.topic not in topics:
            raise ConfigError(
                f"topic {span.topic!r} is not configured (configured: {', '.join(names)})"
            )
        names = [span.topic]
    consumer = kafka.reader(connection, "replay-plan")
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
    unread = 0
    for tp in tps:
        low, high = marks[tp]
        first = max(starts[tp], low)  # records below the low watermark were deleted
        last = min(high, checkpointed.get(tp, 0))
        unread += max(0, high - max(first, last))
        if first < last:
            start[tp], end[tp] = first, last
    return start, end, unread


def _held_back(
    connection: kafka.Connection, rows: Mapping[TP, PartitionInfo], tps: Collection[TP]
) -> dict[TP, str]:
    """Which of ``tps`` must not be replayed, and why (see the module docstring)."""
    held = {
        tp: f"stopped until an operator resets it ({row.stopped})"
        for tp in tps
        if (row := rows.get(tp)) is not None and row.stopped
    }
    known = {tp: row.topic_id for tp, row in rows.items() if tp in tps and tp not in held}
    names = {tp[0] for tp, topic_id in known.items() if topic_id}
    if not names:
        return held
    found = describe_topics(open_admin(connection), names, timeout=30)
    for tp, topic_id in known.items():
        info = found.get(tp[0])
        if topic_id and info is not None and info.topic_id and info.topic_id != topic_id:
            held[tp] = (
                "its topic was created again since it was checkpointed (the pipeline stops "
                "it until an operator resets it)"
            )
    return held


def _evaluate(
    store: OperationsStore, evaluator: Evaluator, events: list[Event], report: ReplayReport
) -> dict[TP, list[Action]]:
    """The actions the rules give ``events`` now, by partition (rule state read only)."""
    keys = sorted({k for e in events for k in evaluator.state_keys(e)})
    state: dict[str, str | None] = dict(store.read_rule_state(keys)) if keys else {}
    found: dict[TP, list[Action]] = {}
    for event in events:
        if event.explicit_id:
            first = store.get_event(event.event_id, event.namespace)
            if first is not None and first.coordinates != event.coordinates:
                report.duplicates += 1  # a resend when it arrived: it fired nothing then
                continue
        try:
            result = evaluator.evaluate(
                event, {k: state.get(k) for k in evaluator.state_keys(event)}
            )
        except Exception:
            report.rule_failures += 1
            continue
        report.evaluated += 1
        tp = (event.topic or "", event.partition or 0)
        found.setdefault(tp, []).extend(result.actions)
    return found


def replay(
    connection: kafka.Connection,
    topics: Mapping[str, str],
    store: OperationsStore,
    evaluator: Evaluator,
    span: ReplayRange,
    *,
    batch_size: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
    formats: RecordFormats | None = None,
    max_bytes: int | None = None,
) -> ReplayReport:
    """Replay ``span`` into the opened ``store``; ``on_progress(done, total)`` per batch.
    ``all_of`` rules are left out (``report.left_out``). ``formats``: the topics written
    with a registered schema, decoded as the pipeline decodes them (a registry that cannot
    answer stops the replay: its records are not counted undecodable). ``max_bytes``: the
    pipeline's ``max_event_bytes``; a larger value was a dead letter, and is undecodable
    here too (evaluated, it would fire actions the pipeline never queued)."""
    evaluator, left_out = without_sets(evaluator)
    rows = {p.tp: p for p in store.partitions()}
    start, end, unread = _plan(connection, topics, span, store.next_offsets())
    held = _held_back(connection, rows, start)
    for tp in held:
        del start[tp], end[tp]
    report = ReplayReport(partitions=len(start), unread=unread, left_out=left_out, held_back=held)
    total = sum(end[tp] - start[tp] for tp in start)
    if on_progress is not None:
        on_progress(0, total)
    if not start:
        return report
    reset = {tp for tp in start if rows[tp].generation}
    consumer = kafka.reader(connection, "replay")
    try:
        consumer.assign([kafka_tp(tp, o) for tp, o in start.items()])
        open_tps = set(start)
        last_progress = time.monotonic()
        while open_tps:
            messages = consumer.consume(batch_size, 0.5)
            events: list[Event] = []
            offsets: dict[TP, list[int]] = {}
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if is_fatal(err) or not is_eof(err):
                        raise KafkaClientError(f"consumer error during replay: {err}")
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is None or partition is None or offset is None:
                    continue
                tp = (topic, partition)
                if tp not in open_tps or offset >= end[tp]:
                    continue  # past the range this replay was asked for
                report.read += 1
                offsets.setdefault(tp, []).append(offset)
                try:
                    events.append(
                        event_from_message(
                            msg,
                            topics.get(topic, "default"),
                            max_bytes=max_bytes,
                            strict_namespace=True,
                            key_decoder=formats.key_decoder(topic) if formats else None,
                            value_decoder=formats.value_decoder(topic) if formats else None,
                        )
                    )
                except RegistryUnavailable:
                    raise
                except Exception:
                    report.undecodable += 1
            if reset:
                events = _as_checkpointed(store, events, offsets, reset)
            for tp, actions in _evaluate(store, evaluator, events, report).items():
                span_of = offsets[tp]
                queued = store.requeue(tp, actions, min(span_of), max(span_of) + 1)
                report.actions += queued
                report.known += len(actions) - queued
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
                consumer.incremental_unassign([kafka_tp(tp) for tp in done])
            if open_tps and time.monotonic() - last_progress > IDLE_TIMEOUT:
                raise KafkaClientError(
                    f"replay made no progress for {IDLE_TIMEOUT:.0f}s with "
                    f"{len(open_tps)} partitions unfinished"
                )
    finally:
        consumer.close()
    return report


def _as_checkpointed(
    store: OperationsStore,
    events: list[Event],
    offsets: Mapping[TP, list[int]],
    reset: Collection[TP],
) -> list[Event]:
    """``events`` under the ids their records were checkpointed with, for the partitions in
    ``reset`` (the pipeline gives records there a generation: :meth:`Pipeline._decode`).
    A record whose batch retention deleted keeps the id of its coordinates."""
    ids = {
        tp: store.checkpointed_ids(tp, min(read), max(read) + 1)
        for tp, read in offsets.items()
        if tp in reset
    }
    found: list[Event] = []
    for event in events:
        known = ids.get((event.topic or "", event.partition or 0))
        if known and not event.explicit_id and event.offset is not None:
            stored = known.get(event.offset)
            if stored is not None and stored != event.event_id:
                event = replace(event, event_id=stored)
        found.append(event)
    return found


def _finished(at: Mapping[TP, int], end: Mapping[TP, int]) -> Sequence[TP]:
    return [tp for tp, offset in at.items() if offset >= end[tp]]
