"""Schema versions 3 and 4 (batch records, per-partition action numbers), and the move to them.

Version 4 adds to version 3 (:data:`V4_CHANGES`, also the way from 3 to 4): each
partition's *event time* (the newest Kafka record timestamp it checkpointed, in ms: the
clock of ``all_of`` windows and their pruning), its Kafka topic id (a topic deleted and
created again is recognised), why it is stopped (offsets that went backwards), how many
times an operator reset it (its *generation*: offsets seen before are new records), and an
index of batches by action number (after an operator restarts a partition at lower
offsets, offsets no longer grow with action numbers).

Both dialects create the same tables (:data:`V3_TABLES`, with their own column types) and
move a version-2 store the same way, inside the migration's one transaction:

* each partition's next offset and owner epoch become its ``kec_partitions`` row;
* events become batch records of up to 1,000 events per partition, in stored order, and
  their explicit ids go to ``kec_event_ids``;
* pending actions become ``retry`` rows (attempts kept) and dead ones ``dead`` rows of
  the partition of their first event (actions whose events are gone go to the partition
  that holds most events); done actions are only counted, per rule;
* rule state, dead records and durable steps are copied.

The version-2 tables are dropped at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from checkpoint.records import encode_action, encode_actions, encode_events
from kec.action import Action
from kec.event import Event

if TYPE_CHECKING:
    from checkpoint.sql import Sql

TopicPartition = tuple[str, int]

# {type} placeholders: each dialect maps them to its own column types.
V3_TABLES = (
    """CREATE TABLE kec_partitions (
        topic {text} NOT NULL, partition {int} NOT NULL, owner {text} NOT NULL,
        epoch {int} NOT NULL, next_offset {int}, next_aseq {int} NOT NULL,
        watermark {int} NOT NULL, done_above {text}, claimed_at {real} NOT NULL,
        PRIMARY KEY (topic, partition)){without_rowid}""",
    """CREATE TABLE kec_batches (
        seq {seq}, topic {text} NOT NULL, partition {int} NOT NULL,
        first_offset {int} NOT NULL, next_offset {int} NOT NULL, first_aseq {int} NOT NULL,
        n_actions {int} NOT NULL, n_events {int} NOT NULL, stored_at {real} NOT NULL,
        events {blob} NOT NULL, actions {blob} NOT NULL)""",
    # One index: offsets and action numbers grow together within a partition, so it also
    # finds the batch holding a watermark (one page less to write per batch).
    "CREATE INDEX kec_batches_at ON kec_batches (topic, partition, first_offset, first_aseq)",
    """CREATE TABLE kec_event_ids (
        id {text} NOT NULL, ns {text} NOT NULL, topic {text}, partition {int}, off {int},
        PRIMARY KEY (id, ns)){without_rowid}""",
    """CREATE TABLE kec_parked (
        topic {text} NOT NULL, partition {int} NOT NULL, aseq {int} NOT NULL,
        action_id {text} NOT NULL UNIQUE, action {text} NOT NULL, state {text} NOT NULL,
        attempts {int} NOT NULL, next_attempt_at {real} NOT NULL, last_error {text},
        parked_at {real} NOT NULL, PRIMARY KEY (topic, partition, aseq))""",
    """CREATE TABLE kec_rule_state (
        key {text} PRIMARY KEY, value {text} NOT NULL, expires_at {real},
        updated_at {real} NOT NULL){without_rowid}""",
    """CREATE TABLE kec_rule_counts (
        rule {text} PRIMARY KEY, n {int} NOT NULL){without_rowid}""",
    """CREATE TABLE kec_dead_records (
        seq {seq}, topic {text} NOT NULL, partition {int} NOT NULL, "offset" {int} NOT NULL,
        error {text} NOT NULL, error_class {text} NOT NULL, key {blob}, value {blob},
        stored_at {real} NOT NULL, UNIQUE (topic, partition, "offset"))""",
    """CREATE TABLE kec_steps (
        step_id {text} PRIMARY KEY, event {text} NOT NULL,
        stored_at {real} NOT NULL){without_rowid}""",
)

# {type} placeholders as in V3_TABLES.
V4_CHANGES = (
    "ALTER TABLE kec_partitions ADD COLUMN event_time {int}",
    "ALTER TABLE kec_partitions ADD COLUMN topic_id {text}",
    "ALTER TABLE kec_partitions ADD COLUMN stopped {text}",
    "ALTER TABLE kec_partitions ADD COLUMN generation {int} NOT NULL DEFAULT 0",
    "CREATE INDEX kec_batches_aseq ON kec_batches (topic, partition, first_aseq)",
)
TABLES = V3_TABLES + V4_CHANGES  # a new store

_CHUNK = 1000


@dataclass
class V2Contents:
    """What a version-2 store holds, read by the dialect from its own tables."""

    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    owners: dict[TopicPartition, tuple[str, int]] = field(default_factory=dict)
    # (event, stored_at) in stored order
    events: list[tuple[Event, float]] = field(default_factory=list)
    # (action, state, attempts, next_attempt_at, last_error) in queued order
    actions: list[tuple[Action, str, int, float, str | None]] = field(default_factory=list)
    rule_state: list[tuple[str, str]] = field(default_factory=list)
    dead_records: list[tuple[Any, ...]] = field(default_factory=list)  # 7 columns
    steps: list[tuple[str, str]] = field(default_factory=list)


def write_v3(sql: Sql, old: V2Contents) -> None:
    """Write a version-2 store's contents into freshly created version-3 tables."""
    now = time.time()
    where: dict[str, TopicPartition] = {}
    by_tp: dict[TopicPartition, list[tuple[Event, float]]] = {}
    for event, stored_at in old.events:
        # Events stored without coordinates (written by hand, not read from Kafka) are
        # kept in a batch of their own, found by their ids.
        tp = (event.topic or "", event.partition if event.partition is not None else 0)
        where[event.event_id] = tp
        by_tp.setdefault(tp, []).append((event, stored_at))
    busiest = max(by_tp, key=lambda tp: len(by_tp[tp]), default=("", 0))
    for tp, rows in by_tp.items():
        for i in range(0, len(rows), _CHUNK):
            chunk = rows[i : i + _CHUNK]
            events = [e for e, _ in chunk]
            offsets = [e.offset for e in events if e.offset is not None]
            sql.execute(
                "INSERT INTO kec_batches (topic, partition, first_offset, next_offset, "
                "first_aseq, n_actions, n_events, stored_at, events, actions) "
                "VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?, ?)",
                (
                    tp[0], tp[1], min(offsets, default=0), max(offsets, default=-1) + 1,
                    len(events), chunk[-1][1], encode_events(events), encode_actions([]),
                ),
            )  # fmt: skip
            sql.executemany(
                "INSERT INTO kec_event_ids (id, ns, topic, partition, off) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id, ns) DO NOTHING",
                [(e.event_id, e.namespace, *tp, e.offset) for e in events if e.explicit_id],
            )
    aseqs: Counter[TopicPartition] = Counter()
    counts: Counter[str] = Counter()
    parked = []
    for action, state, attempts, next_at, error in old.actions:
        counts[action.rule] += 1
        if state == "done":
            continue
        tp = next((where[e] for e in action.event_ids if e in where), busiest)
        parked.append(
            (
                tp[0], tp[1], aseqs[tp], action.action_id, encode_action(action),
                "dead" if state == "dead" else "retry", attempts, next_at, error, now,
            )
        )  # fmt: skip
        aseqs[tp] += 1
    _partitions(sql, old.offsets, old.owners, aseqs, now)
    sql.executemany(
        "INSERT INTO kec_parked (topic, partition, aseq, action_id, action, state, attempts, "
        "next_attempt_at, last_error, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        parked,
    )
    sql.executemany("INSERT INTO kec_rule_counts (rule, n) VALUES (?, ?)", sorted(counts.items()))
    sql.executemany(
        "INSERT INTO kec_rule_state (key, value, expires_at, updated_at) VALUES (?, ?, NULL, ?)",
        [(k, v, now) for k, v in old.rule_state],
    )
    sql.executemany(
        'INSERT INTO kec_dead_records (topic, partition, "offset", error, error_class, key, '
        "value, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*row, now) for row in old.dead_records],
    )
    sql.executemany(
        "INSERT INTO kec_steps (step_id, event, stored_at) VALUES (?, ?, ?)",
        [(k, v, now) for k, v in old.steps],
    )


def _partitions(
    sql: Sql,
    offsets: Mapping[TopicPartition, int],
    owners: Mapping[TopicPartition, tuple[str, int]],
    aseqs: Mapping[TopicPartition, int],
    now: float,
) -> None:
    every: Iterable[TopicPartition] = sorted(set(offsets) | set(owners) | set(aseqs))
    sql.executemany(
        "INSERT INTO kec_partitions (topic, partition, owner, epoch, next_offset, next_aseq, "
        "watermark, claimed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                tp[0],
                tp[1],
                owners.get(tp, ("nobody", 0))[0],
                owners.get(tp, ("nobody", 0))[1],
                offsets.get(tp),
                aseqs.get(tp, 0),
                aseqs.get(tp, 0),
                now,
            )
            for tp in every
        ],
    )
