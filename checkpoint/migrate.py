"""The schema, written once for both dialects: its tables, its versions, the walk between them.

Version 4 adds to version 3 (:data:`V4_CHANGES`, also the way from 3 to 4): each
partition's *event time* (the newest Kafka record timestamp it checkpointed, in ms: the
clock of ``all_of`` windows and their pruning), its Kafka topic id (a topic deleted and
created again is recognised), why it is stopped (offsets that went backwards), how many
times an operator reset it (its *generation*: offsets seen before are new records), and an
index of batches by action number (after an operator restarts a partition at lower
offsets, offsets no longer grow with action numbers).

:func:`create_or_migrate` creates a new store or walks an older one up, step by step
(:data:`STEPS`), inside the dialect's schema transaction and under its schema lock. The
dialect (:class:`~checkpoint.sql.Dialect`) supplies only what differs: the column types
behind the ``{type}`` placeholders, where the version is kept (SQLite: ``PRAGMA
user_version``; PostgreSQL: ``kec_meta``), and the guard that refuses a migration while a
connector of the older version still uses the store (:class:`~kec.errors.StoreInUse`).

Version 5 adds the lineage tables (:data:`V5_CHANGES`): delivery attempts and the times
actions were settled, read by ``event-connector trace``.

Layouts older than :data:`OLDEST` (versions 1 and 2) were written only by development
builds: no release ever shipped them, so they are refused with what to do instead of being
rewritten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from checkpoint.base import SCHEMA_VERSION
from kec.errors import CheckpointError, SchemaTooNew

if TYPE_CHECKING:
    from checkpoint.sql import Dialect, Sql

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
# Lineage (see connector/ops/trace.py): delivery attempts worth telling (failures, and
# the delivery that follows one) and, at most once a second per partition, how far the
# settled actions reached when: a first-try delivery is dated by the first mark above it.
V5_CHANGES = (
    """CREATE TABLE kec_attempts (
        seq {seq}, topic {text} NOT NULL, partition {int} NOT NULL, aseq {int} NOT NULL,
        action_id {text} NOT NULL, n {int} NOT NULL, at {real} NOT NULL,
        target {text} NOT NULL, outcome {text} NOT NULL, detail {text})""",
    "CREATE INDEX kec_attempts_action ON kec_attempts (action_id)",
    """CREATE TABLE kec_settled (
        topic {text} NOT NULL, partition {int} NOT NULL, upto {int} NOT NULL,
        at {real} NOT NULL, PRIMARY KEY (topic, partition, upto)){without_rowid}""",
)
TABLES = V3_TABLES + V4_CHANGES + V5_CHANGES  # a new store

# The statements that move a store to each version from the one below it.
STEPS: dict[int, tuple[str, ...]] = {4: V4_CHANGES, 5: V5_CHANGES}
OLDEST = 3  # the oldest layout a store is moved on from


def judge(version: int, where: str) -> int:
    """``version`` if this code can use or migrate a store of it (0: none yet); else raise
    :class:`~kec.errors.SchemaTooNew`, or :class:`~kec.errors.CheckpointError` for a
    layout no release shipped."""
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{where} has checkpoint schema version {version}; this version of "
            f"kafka-event-connector knows up to {SCHEMA_VERSION}. Upgrade the connector."
        )
    if 0 < version < OLDEST:
        raise CheckpointError(
            f"{where} has checkpoint schema version {version}, a layout of development "
            f"builds that no release shipped; this version moves stores on from version "
            f"{OLDEST} only and has left it untouched. Stop whatever still uses it, move it "
            "aside (SQLite: the file; PostgreSQL: its kec_ tables, or use another database) "
            "and start again: a new store reads on from the consumer group's committed "
            "offsets, and actions still pending in the old one are not carried over"
        )
    return version


def create_or_migrate(sql: Sql, dialect: Dialect) -> None:
    """Bring the store to :data:`~checkpoint.base.SCHEMA_VERSION`: create it, or walk it up
    from its version. Called inside the dialect's schema transaction, under its lock."""
    version = judge(dialect.stored_version(sql), dialect.describe())
    if version == SCHEMA_VERSION:
        return  # another process got there first
    statements: tuple[str, ...] = TABLES
    if version != 0:
        dialect.refuse_older_users(sql, version)
        statements = tuple(
            s for step in range(version + 1, SCHEMA_VERSION + 1) for s in STEPS[step]
        )
    for statement in statements:
        sql.execute(statement.format(**dialect.types))
    dialect.record_version(sql)
