"""The checkpoint store, written once in SQL for SQLite and PostgreSQL (dialects).

Every query of the contract (:mod:`checkpoint.base`) is here, with ``?`` placeholders; a
:class:`Dialect` says what differs: how to connect and which connection serves which
role, its column types and where it keeps the schema version (the DDL and the migration
walk are written once, in :mod:`checkpoint.migrate`), how a list of rows becomes a table in
a query (``json_each`` or ``unnest``), how rule-state keys are locked, and ``max`` vs
``greatest``. The tables (all ``kec_``)::

    kec_partitions   one row per partition: owner, epoch, next offset, next action
                     number, watermark (every action below it is settled)
    kec_batches      one row per batch and partition: its new events and its actions,
                     as compact JSON (checkpoint.records), with their offset and action
                     number ranges
    kec_event_ids    explicit event ids (id, namespace) -> where the event is
    kec_parked       actions with a row of their own: retry, held or dead
    kec_rule_state   multi-event rule state, with when it may be deleted
    kec_rule_counts  actions queued per rule (status)
    kec_dead_records poison records (also on the dead-letter topic)
    kec_steps        durable wait_for_event results

Fencing: every write an owner makes about a partition is an ``UPDATE kec_partitions ...
WHERE epoch = ?`` first; no row updated means another instance claimed the partition,
and the transaction raises :class:`~kec.errors.Fenced` (a batch) or leaves that
partition out (a settlement). A claim bumps the epoch in its own transaction, so it is
ordered before or after any such write, never in between.
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import Enum
from typing import Any, Protocol

from checkpoint.base import (
    ActionLineage,
    ActionState,
    Attempt,
    BatchTransaction,
    CheckpointStore,
    Claim,
    DeadRecord,
    EventKey,
    OutboxEntry,
    Parked,
    Parking,
    PartitionInfo,
    Pending,
    Queued,
    Settlement,
    Span,
    StoredBatch,
    Tried,
)
from checkpoint.group_commit import GroupCommit
from checkpoint.records import (
    Encoded,
    decode_action,
    decode_actions,
    decode_event_ids,
    decode_events,
    encode_action,
)
from kec.action import Action
from kec.errors import CheckpointError, Fenced, OffsetConflict
from kec.event import TP, Event, parse_coordinates

_ITER_CHUNK = 200  # batches per page when iterating events
_BATCH_COLUMNS = (
    "seq, topic, partition, first_offset, next_offset, first_aseq, stored_at, events, actions"
)


def _stored_batch(row: Sequence[Any]) -> StoredBatch:
    seq, topic, partition, first_offset, next_offset, first_aseq, stored_at, events, actions = row
    return StoredBatch(
        int(seq), (topic, int(partition)), int(first_offset), int(next_offset), int(first_aseq),
        float(stored_at), tuple(decode_events(events, topic, partition)),
        tuple(decode_actions(actions)),
    )  # fmt: skip


class Role(Enum):
    """Who uses a connection: each role gets its own where the backend allows it."""

    PIPELINE = "pipeline"  # batches and claims: the poll thread
    DISPATCH = "dispatch"  # settlements and pending reads: the dispatcher
    OPS = "ops"  # everything else: tools, gateway, retention


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Sql(abc.ABC):
    """One connection inside a dialect's transaction or read; ``?`` placeholders."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()


class Dialect(abc.ABC):
    """What SQLite and PostgreSQL do differently; see the module docstring."""

    greatest: str  # the two-argument maximum: max (SQLite) or greatest (PostgreSQL)

    @abc.abstractmethod
    def open(self) -> None:
        """Connect, check the store is ours, create or migrate the schema."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def transaction(self, role: Role, doing: str) -> contextlib.AbstractContextManager[Sql]:
        """A write transaction, committed durably when the block exits cleanly."""

    @abc.abstractmethod
    def reading(self, role: Role, doing: str) -> contextlib.AbstractContextManager[Sql]:
        """Reads of the last committed state."""

    @property
    def shared_write_lock(self) -> bool:
        """Whether other processes' writes wait for this one's transactions."""
        return False

    @abc.abstractmethod
    def rows(self, types: Sequence[str], alias: str = "r") -> str:
        """A table source ``alias`` of rows with columns ``c0, c1, ...`` of ``types``
        ('text', 'int', 'real'), filled from the parameters :meth:`rows_params` gives."""

    @abc.abstractmethod
    def rows_params(self, rows: Sequence[Sequence[Any]], types: Sequence[str]) -> list[Any]: ...

    @abc.abstractmethod
    def lock_keys(self, sql: Sql, keys: Sequence[str]) -> None:
        """Serialise transactions on ``keys`` (sorted) until this one ends."""

    @abc.abstractmethod
    def describe(self) -> str:
        """What the store is, for messages (never a password)."""

    # -- the schema (created and migrated once, in checkpoint.migrate) ---------------------

    types: Mapping[str, str]  # the schema's {type} placeholders in this dialect's DDL

    @abc.abstractmethod
    def stored_version(self, sql: Sql) -> int:
        """The store's schema version, 0 when there is none yet; raises
        :class:`~kec.errors.StoreCorrupt` for what is not a store of ours and
        :class:`~kec.errors.StoreMissing` for none when this store may not create one."""

    @abc.abstractmethod
    def refuse_older_users(self, sql: Sql, version: int) -> None:
        """Before a store of ``version`` is migrated: raise :class:`~kec.errors.StoreInUse`
        while a connector of that version still uses it, and keep such from starting until
        the schema transaction ends."""

    @abc.abstractmethod
    def record_version(self, sql: Sql) -> None:
        """Mark the store as ours at :data:`~checkpoint.base.SCHEMA_VERSION`."""


def _fenced(sql: Sql, tp: TP, epoch: int) -> Fenced:
    row = sql.one("SELECT owner, epoch FROM kec_partitions WHERE topic = ? AND partition = ?", tp)
    owner, current = row if row else ("nobody", 0)
    return Fenced(
        f"{tp[0]}[{tp[1]}]: epoch {epoch} is stale; {owner} owns it at epoch {current}", (tp,)
    )


def _refused(sql: Sql, tp: TP, epoch: int, first: int) -> CheckpointError:
    """Why an append's conditional update matched no row: fenced, or not where it starts."""
    row = sql.one(
        "SELECT epoch, next_offset FROM kec_partitions WHERE topic = ? AND partition = ?", tp
    )
    if row is None or row[0] != epoch:
        return _fenced(sql, tp, epoch)
    return OffsetConflict(tp, row[1], first)


class _Batch(BatchTransaction):
    """The writes of one batch inside the pipeline's transaction."""

    def __init__(self, sql: Sql, dialect: Dialect) -> None:
        self._sql = sql
        self._d = dialect
        self._rules: Counter[str] = Counter()
        self.closed = False
        self.failed: BaseException | None = None

    @contextlib.contextmanager
    def _use(self) -> Iterator[Sql]:
        if self.closed:
            raise CheckpointError("this batch has ended; open a new one")
        try:
            yield self._sql
        except BaseException as exc:
            # Remembered: a failure swallowed inside the block must still cancel the batch.
            self.failed = exc
            raise

    def claim_event_ids(self, events: Sequence[Event]) -> set[EventKey]:
        rows: dict[EventKey, list[Any]] = {}
        for e in events:
            rows.setdefault(
                (e.event_id, e.namespace), [e.event_id, e.namespace, e.topic, e.partition, e.offset]
            )
        if not rows:
            return set()
        types = ("text", "text", "text", "int", "int")
        with self._use() as sql:
            found = sql.all(
                "INSERT INTO kec_event_ids (id, ns, topic, partition, off) "
                f"SELECT c0, c1, c2, c3, c4 FROM {self._d.rows(types)} WHERE true "
                "ON CONFLICT (id, ns) DO NOTHING RETURNING ns, id",
                self._d.rows_params(list(rows.values()), types),
            )
        return {(ns, eid) for ns, eid in found}

    def read_rule_state(self, keys: Sequence[str]) -> dict[str, str]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        with self._use() as sql:
            self._d.lock_keys(sql, wanted)
            found = sql.all(
                "SELECT key, value FROM kec_rule_state "
                f"WHERE key IN (SELECT c0 FROM {self._d.rows(('text',))})",
                self._d.rows_params([[k] for k in wanted], ("text",)),
            )
        return {k: v for k, v in found}

    def write_rule_state(
        self, updates: Mapping[str, str | None], expires: Mapping[str, float] | None = None
    ) -> None:
        gone = [[k] for k, v in updates.items() if v is None]
        kept = [[k, v, (expires or {}).get(k)] for k, v in updates.items() if v is not None]
        with self._use() as sql:
            if gone:
                sql.execute(
                    "DELETE FROM kec_rule_state "
                    f"WHERE key IN (SELECT c0 FROM {self._d.rows(('text',))})",
                    self._d.rows_params(gone, ("text",)),
                )
            if kept:
                types = ("text", "text", "real")
                sql.execute(
                    "INSERT INTO kec_rule_state (key, value, expires_at, updated_at) "
                    f"SELECT c0, c1, c2, ? FROM {self._d.rows(types)} WHERE true "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                    "expires_at = excluded.expires_at, updated_at = excluded.updated_at",
                    [time.time(), *self._d.rows_params(kept, types)],
                )

    def event_time_watermark(self, moving: Mapping[TP, int] | None = None) -> int:
        with self._use() as sql:
            rows = sql.all("SELECT topic, partition, coalesce(event_time, 0) FROM kec_partitions")
        times = {(t, p): int(at) for t, p, at in rows}
        for tp, at in (moving or {}).items():
            times[tp] = max(times.get(tp, 0), at)
        return min(times.values(), default=0)

    def add_dead_records(self, records: Sequence[DeadRecord]) -> None:
        if not records:
            return
        now = time.time()
        with self._use() as sql:
            sql.executemany(
                'INSERT INTO kec_dead_records (topic, partition, "offset", error, error_class, '
                "key, value, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                'ON CONFLICT (topic, partition, "offset") DO NOTHING',
                [
                    (r.topic, r.partition, r.offset, r.error, r.error_class, r.key, r.value, now)
                    for r in records
                ],
            )

    def append(
        self,
        tp: TP,
        epoch: int,
        first_offset: int,
        next_offset: int,
        events: Sequence[Event],
        actions: Sequence[Action],
        event_time: int | None = None,
        encoded: Encoded | None = None,
    ) -> int:
        # Conditional on the epoch (fencing) and on the stored next offset: a batch that
        # committed already (its acknowledgement lost) is refused, not applied twice.
        moved, params = "", [next_offset, len(actions)]
        if event_time is not None:
            moved = f", event_time = {self._d.greatest}(coalesce(event_time, 0), ?)"
            params.append(event_time)
        with self._use() as sql:
            row = sql.one(
                f"UPDATE kec_partitions SET next_offset = ?, next_aseq = next_aseq + ?{moved} "
                "WHERE topic = ? AND partition = ? AND epoch = ? AND coalesce(next_offset, ?) = ? "
                "RETURNING next_aseq",
                (*params, tp[0], tp[1], epoch, first_offset, first_offset),
            )
            if row is None:
                raise _refused(sql, tp, epoch, first_offset)
            first_aseq = int(row[0]) - len(actions)
            if events or actions:
                if encoded is None or not encoded.of(events, actions):
                    encoded = Encoded(events, actions)
                sql.execute(
                    "INSERT INTO kec_batches (topic, partition, first_offset, next_offset, "
                    "first_aseq, n_actions, n_events, stored_at, events, actions) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        tp[0], tp[1], first_offset, next_offset, first_aseq, len(actions),
                        len(events), time.time(), encoded.events_blob, encoded.actions_blob,
                    ),
                )  # fmt: skip
            self._rules.update(a.rule for a in actions)
        return first_aseq

    def finish(self) -> None:
        """Last statements of the transaction: per-rule counts, one statement."""
        if self._rules:
            with self._use() as sql:
                sql.executemany(
                    "INSERT INTO kec_rule_counts (rule, n) VALUES (?, ?) "
                    "ON CONFLICT (rule) DO UPDATE SET n = kec_rule_counts.n + excluded.n",
                    sorted(self._rules.items()),
                )
        if self.failed is not None:
            raise self.failed


_PARKED_COLUMNS = (
    "topic, partition, aseq, action_id, action, state, attempts, next_attempt_at, last_error"
)


def _parked(row: Sequence[Any]) -> Parked:
    topic, partition, aseq, _aid, action, state, attempts, next_at, error = row
    return Parked(
        (topic, partition), aseq, decode_action(action), Parking(state), attempts,
        float(next_at), error,
    )  # fmt: skip


def _parked_row(p: Parked, now: float) -> tuple[Any, ...]:
    return (
        p.tp[0], p.tp[1], p.aseq, p.action.action_id, encode_action(p.action), p.state.value,
        p.attempts, p.next_attempt_at, p.last_error, now,
    )  # fmt: skip


# Numbered per action: one more than the action's attempts kept so far (a few rows).
_INSERT_ATTEMPT = (
    "INSERT INTO kec_attempts (topic, partition, aseq, action_id, n, at, target, outcome, "
    "detail) SELECT ?, ?, ?, ?, coalesce((SELECT max(n) FROM kec_attempts WHERE "
    "action_id = ?), 0) + 1, ?, ?, ?, ?"
)
MARK_INTERVAL = 1.0  # seconds between two settle marks of a partition (lineage)
MAX_DETAIL = 500  # characters of an error or answer kept in an attempt row
LINEAGE_CAPS = {"kec_attempts": 200_000, "kec_settled": 500_000}  # rows kept at most


def _tried_row(tp: TP, t: Tried) -> tuple[Any, ...]:
    detail = t.detail[:MAX_DETAIL] if t.detail else None
    return (*tp, t.aseq, t.action_id, t.action_id, t.at, t.target, t.outcome, detail)


_UPSERT_PARKED = (
    f"INSERT INTO kec_parked ({_PARKED_COLUMNS}, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (topic, partition, aseq) DO UPDATE SET state = excluded.state, "
    "attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, "
    "last_error = excluded.last_error, parked_at = excluded.parked_at"
)


class SqlStore(CheckpointStore):
    """The checkpoint store over a :class:`Dialect`; nothing connects before ``open()``."""

    def __init__(self, dialect: Dialect) -> None:
        self._d = dialect
        self._opened = False
        self._lock = threading.Lock()
        self.lineage = True
        self._marks: dict[TP, tuple[float, int]] = {}  # last settle mark: (when, upto)
        # Steps recorded at once by concurrent callers share a transaction and its fsync.
        self.steps: GroupCommit[tuple[str, str], str] = GroupCommit(self._put_steps)
        # Steps looked up at once (before each is polled) share a query the same way.
        self.step_reads: GroupCommit[str, str | None] = GroupCommit(self._get_steps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._d.describe()})"

    @property
    def shared_write_lock(self) -> bool:
        return self._d.shared_write_lock

    @property
    def dialect(self) -> Dialect:
        return self._d

    def open(self) -> None:
        with self._lock:
            if not self._opened:
                self._d.open()
                self._opened = True

    def close(self) -> None:
        self.steps.close()  # the steps queued before close are written first
        self.step_reads.close()
        with self._lock:
            self._opened = False
            self._d.close()

    # -- the pipeline (PipelineStore) -----------------------------------------------------

    def claim(self, owner: str, partitions: Iterable[TP]) -> dict[TP, Claim]:
        claims: dict[TP, Claim] = {}
        now = time.time()
        with self._d.transaction(Role.PIPELINE, "claiming partitions") as sql:
            for topic, partition in sorted(set(partitions)):  # one order: no deadlocks
                row = sql.one(
                    "INSERT INTO kec_partitions (topic, partition, owner, epoch, next_offset, "
                    "next_aseq, watermark, claimed_at) VALUES (?, ?, ?, 1, NULL, 0, 0, ?) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET "
                    "epoch = kec_partitions.epoch + 1, owner = excluded.owner, "
                    "claimed_at = excluded.claimed_at RETURNING epoch, next_offset, "
                    "next_aseq, watermark, topic_id, stopped, generation",
                    (topic, partition, owner, now),
                )
                claims[(topic, partition)] = Claim(*row)
        return claims

    @contextlib.contextmanager
    def batch(self) -> Iterator[BatchTransaction]:
        with self._d.transaction(Role.PIPELINE, "committing a batch") as sql:
            tx = _Batch(sql, self._d)
            try:
                yield tx
                tx.finish()
            finally:
                tx.closed = True

    def mark_partition(
        self,
        tp: TP,
        epoch: int,
        *,
        topic_id: str | None = None,
        stopped: str | None = None,
        event_time: int | None = None,
    ) -> bool:
        sets: list[str] = []
        params: list[Any] = []
        if topic_id is not None:
            sets.append("topic_id = ?")
            params.append(topic_id)
        if stopped is not None:
            sets.append("stopped = ?")
            params.append(stopped)
        if event_time is not None:
            sets.append(f"event_time = {self._d.greatest}(coalesce(event_time, 0), ?)")
            params.append(event_time)
        if not sets:
            return True
        with self._d.transaction(Role.PIPELINE, "marking a partition") as sql:
            row = sql.one(
                f"UPDATE kec_partitions SET {', '.join(sets)} "
                "WHERE topic = ? AND partition = ? AND epoch = ? RETURNING epoch",
                (*params, *tp, epoch),
            )
        return row is not None

    # -- the dispatcher (DispatchStore) ---------------------------------------------------

    def pending(self, tp: TP) -> Pending:
        with self._d.reading(Role.DISPATCH, "reading pending actions") as sql:
            row = sql.one(
                "SELECT watermark, next_aseq, done_above FROM kec_partitions "
                "WHERE topic = ? AND partition = ?",
                tp,
            )
            if row is None:
                return Pending()
            watermark, end, done_text = row
            found = Pending(watermark=watermark, end=end)
            parked = sql.all(
                f"SELECT {_PARKED_COLUMNS} FROM kec_parked "
                "WHERE topic = ? AND partition = ? ORDER BY aseq",
                tp,
            )
            # The batch holding the watermark (the last one starting at or below it),
            # then every later one; by action number, which never goes backwards (offsets
            # may, after an operator's reset).
            batches = sql.all(
                "SELECT first_aseq, actions FROM kec_batches WHERE topic = ? AND partition = ? "
                "AND n_actions > 0 AND first_aseq >= coalesce((SELECT first_aseq "
                "FROM kec_batches WHERE topic = ? AND partition = ? AND first_aseq <= ? "
                "AND n_actions > 0 ORDER BY first_aseq DESC LIMIT 1), 0) ORDER BY first_aseq",
                (*tp, *tp, watermark),
            )
        rows = [_parked(row) for row in parked]
        has_row = {p.aseq for p in rows}
        done = _spans(done_text)
        found.parked = [p for p in rows if p.state is not Parking.DEAD]
        for first, blob in batches:
            for i, action in enumerate(decode_actions(blob)):
                aseq = first + i
                if aseq >= watermark and aseq not in has_row and not _within(aseq, done):
                    found.queued.append(Queued(tp, aseq, action))
        return found

    def settle(self, rounds: Mapping[TP, Settlement]) -> set[TP]:
        """Also writes lineage, when on: the attempts the dispatcher reported
        (``Settlement.tried``, numbered per action here) and, at most once a second per
        partition, a mark of how far its settled actions reach (see
        :data:`~checkpoint.migrate.V5_CHANGES`)."""
        fenced: set[TP] = set()
        if not rounds:
            return fenced
        now = time.time()
        lineage = self.lineage
        with self._d.transaction(Role.DISPATCH, "settling delivered actions") as sql:
            for tp, s in sorted(rounds.items()):
                row = sql.one(
                    f"UPDATE kec_partitions SET watermark = {self._d.greatest}(watermark, ?), "
                    "done_above = ? WHERE topic = ? AND partition = ? AND epoch = ? "
                    "RETURNING epoch, watermark",
                    (s.watermark, _spans_text(s.done), tp[0], tp[1], s.epoch),
                )
                if row is None:
                    fenced.add(tp)
                    continue
                if lineage:
                    self._mark_settled(sql, tp, int(row[1]), now)
                    if s.tried:
                        sql.executemany(_INSERT_ATTEMPT, [_tried_row(tp, t) for t in s.tried])
                if s.unpark:
                    sql.execute(
                        "DELETE FROM kec_parked WHERE topic = ? AND partition = ? "
                        f"AND aseq IN (SELECT c0 FROM {self._d.rows(('int',))})",
                        [*tp, *self._d.rows_params([[a] for a in s.unpark], ("int",))],
                    )
                if s.park:
                    sql.executemany(_UPSERT_PARKED, [_parked_row(p, now) for p in s.park])
        return fenced

    def _mark_settled(self, sql: Sql, tp: TP, watermark: int, now: float) -> None:
        last_at, last_upto = self._marks.get(tp, (0.0, -1))
        if watermark > last_upto and now - last_at >= MARK_INTERVAL:
            sql.execute(
                "INSERT INTO kec_settled (topic, partition, upto, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (topic, partition, upto) DO NOTHING",
                (*tp, watermark, now),
            )
            self._marks[tp] = (now, watermark)

    def due_retries(self, partitions: Iterable[TP], now: float, limit: int = 1000) -> list[Parked]:
        tps = [[t, p] for t, p in sorted(set(partitions))]
        if not tps:
            return []
        types = ("text", "int")
        with self._d.reading(Role.DISPATCH, "reading due retries") as sql:
            rows = sql.all(
                f"SELECT {', '.join('k.' + c for c in _PARKED_COLUMNS.split(', '))} "
                f"FROM kec_parked k JOIN {self._d.rows(types)} "
                "ON k.topic = r.c0 AND k.partition = r.c1 "
                "WHERE k.state = 'retry' AND k.next_attempt_at <= ? "
                "ORDER BY k.next_attempt_at LIMIT ?",
                [*self._d.rows_params(tps, types), now, limit],
            )
        return [_parked(row) for row in rows]

    def epochs(self, partitions: Iterable[TP]) -> dict[TP, int]:
        tps = [[t, p] for t, p in sorted(set(partitions))]
        if not tps:
            return {}
        types = ("text", "int")
        with self._d.reading(Role.DISPATCH, "reading owner epochs") as sql:
            rows = sql.all(
                f"SELECT k.topic, k.partition, k.epoch FROM kec_partitions k "
                f"JOIN {self._d.rows(types)} ON k.topic = r.c0 AND k.partition = r.c1",
                self._d.rows_params(tps, types),
            )
        return {(t, p): e for t, p, e in rows}

    # -- where partitions stand (PartitionsView), the operator's reset (OperationsStore) ---

    def next_offsets(self, topic: str | None = None) -> dict[TP, int]:
        sql_text = (
            "SELECT topic, partition, next_offset FROM kec_partitions WHERE next_offset IS NOT NULL"
        )
        with self._d.reading(Role.OPS, "reading next offsets") as sql:
            if topic is None:
                rows = sql.all(sql_text)
            else:
                rows = sql.all(sql_text + " AND topic = ?", (topic,))
        return {(t, p): o for t, p, o in rows}

    def partitions(self) -> list[PartitionInfo]:
        with self._d.reading(Role.OPS, "reading partitions") as sql:
            rows = sql.all(
                f"SELECT {_PARTITION_COLUMNS} FROM kec_partitions ORDER BY topic, partition"
            )
        return [_info(row) for row in rows]

    def reset_partition(
        self, tp: TP, next_offset: int, topic_id: str | None, *, force: bool = False
    ) -> PartitionInfo:
        with self._d.transaction(Role.OPS, "resetting a partition") as sql:
            row = sql.one(
                f"SELECT {_PARTITION_COLUMNS} FROM kec_partitions "
                "WHERE topic = ? AND partition = ?",
                tp,
            )
            if row is None:
                raise CheckpointError(f"{tp[0]}[{tp[1]}]: the store knows no such partition")
            before = _info(row)
            if before.stopped is None and not force:
                raise CheckpointError(
                    f"{tp[0]}[{tp[1]}] is not stopped (next offset {before.next_offset}); "
                    "reset a running partition only with --force"
                )
            sql.execute(
                "UPDATE kec_partitions SET next_offset = ?, topic_id = ?, stopped = NULL, "
                "generation = generation + 1 WHERE topic = ? AND partition = ?",
                (next_offset, topic_id, *tp),
            )
        return before

    # -- events --------------------------------------------------------------------------

    def get_event(self, event_id: str, namespace: str | None = None) -> Event | None:
        with self._d.reading(Role.OPS, "reading an event") as sql:
            coordinates = parse_coordinates(event_id)
            if coordinates:
                topic, partition, offset = coordinates
            else:
                where = "id = ?" + (" AND ns = ?" if namespace is not None else "")
                params = (event_id,) if namespace is None else (event_id, namespace)
                row = sql.one(
                    f"SELECT topic, partition, off FROM kec_event_ids WHERE {where}", params
                )
                if row is None:
                    return None
                topic, partition, offset = row
            batch = sql.one(
                "SELECT events FROM kec_batches WHERE topic = ? AND partition = ? "
                "AND first_offset <= ? AND next_offset > ? AND n_events > 0 "
                "ORDER BY first_offset DESC LIMIT 1",
                (topic, partition, offset, offset),
            )
        if batch is None:
            return None
        for event in decode_events(batch[0], topic, partition):
            if event.offset == offset and (coordinates or event.event_id == event_id):
                return event
        return None

    def count_events(self) -> int:
        with self._d.reading(Role.OPS, "counting events") as sql:
            return int(sql.one("SELECT coalesce(sum(n_events), 0) FROM kec_batches")[0])

    def iter_events(self) -> Iterator[Event]:
        # Keyset pages, so no connection is held while the caller consumes the iterator.
        after = 0
        while True:
            with self._d.reading(Role.OPS, "reading events") as sql:
                rows = sql.all(
                    "SELECT seq, topic, partition, events FROM kec_batches "
                    "WHERE seq > ? AND n_events > 0 ORDER BY seq LIMIT ?",
                    (after, _ITER_CHUNK),
                )
            for _, topic, partition, blob in rows:
                yield from decode_events(blob, topic, partition)
            if len(rows) < _ITER_CHUNK:
                return
            after = rows[-1][0]

    def read_rule_state(self, keys: Sequence[str]) -> dict[str, str]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        with self._d.reading(Role.OPS, "reading rule state") as sql:
            rows = sql.all(
                "SELECT key, value FROM kec_rule_state "
                f"WHERE key IN (SELECT c0 FROM {self._d.rows(('text',))})",
                self._d.rows_params([[k] for k in wanted], ("text",)),
            )
        return {k: v for k, v in rows}

    def read_rule_state_range(
        self, prefix: str, limit: int, after: str | None = None
    ) -> list[tuple[str, str]]:
        # A range on the primary key (C collation in PostgreSQL, binary in SQLite: both
        # code-point order): keys >= prefix and below its successor, the prefix with its
        # last character that can grow grown (no successor: no upper bound).
        if limit <= 0:
            return []
        stem = prefix.rstrip("\U0010ffff")
        high = None
        if stem:
            grown = ord(stem[-1]) + 1
            high = stem[:-1] + chr(0xE000 if 0xD800 <= grown < 0xE000 else grown)
        low, above = (after, ">") if after is not None and after >= prefix else (prefix, ">=")
        where = f"key {above} ?" + (" AND key < ?" if high is not None else "")
        params = [low, *([high] if high is not None else []), limit]
        with self._d.reading(Role.OPS, "reading rule state") as sql:
            rows = sql.all(
                f"SELECT key, value FROM kec_rule_state WHERE {where} ORDER BY key LIMIT ?",
                params,
            )
        return [(k, v) for k, v in rows]

    # -- actions, for the tools (OperationsStore) -----------------------------------------

    def count_actions(self, state: ActionState) -> int:
        with self._d.reading(Role.OPS, "counting actions") as sql:
            marks = sql.all(
                "SELECT topic, partition, next_aseq, watermark, done_above FROM kec_partitions"
            )
            parked = sql.all("SELECT topic, partition, aseq, state FROM kec_parked")
        total = sum(int(row[2]) for row in marks)
        mark = {(t, p): (w, _spans(d)) for t, p, _, w, d in marks}
        dead: int = sum(1 for *_, st in parked if st == Parking.DEAD.value)
        waiting = len(parked) - dead
        # Unsettled numbers above each watermark, less those in settled spans (the parts
        # above the watermark: a span below it says nothing new) or with rows.
        above: int = sum(
            n - w - sum(max(0, b - max(a, w)) for a, b in _spans(d)) for _, _, n, w, d in marks
        )
        for t, p, aseq, _ in parked:
            watermark, done = mark.get((t, p), (0, ()))
            if aseq >= watermark and not _within(aseq, done):
                above -= 1
        pending = above + waiting
        if state is ActionState.PENDING:
            return pending
        if state is ActionState.DEAD:
            return dead
        return total - pending - dead

    def count_actions_by_rule(self) -> dict[str, int]:
        with self._d.reading(Role.OPS, "counting actions by rule") as sql:
            rows = sql.all("SELECT rule, n FROM kec_rule_counts ORDER BY rule")
        return {str(rule): int(n) for rule, n in rows}

    def list_actions(self, state: ActionState, limit: int = 1000) -> list[OutboxEntry]:
        with self._d.reading(Role.OPS, "listing actions") as sql:
            if state is ActionState.DEAD:
                rows = sql.all(
                    f"SELECT {_PARKED_COLUMNS} FROM kec_parked WHERE state = 'dead' "
                    "ORDER BY parked_at, topic, partition, aseq LIMIT ?",
                    (limit,),
                )
                return [_entry(_parked(r), ActionState.DEAD) for r in rows]
            marks = sql.all("SELECT topic, partition, watermark, done_above FROM kec_partitions")
        found: list[OutboxEntry] = []
        for topic, partition, watermark, done in sorted(marks):
            tp = (topic, partition)
            if state is ActionState.PENDING:
                pending = self.pending(tp)
                found.extend(_entry(p, ActionState.PENDING) for p in pending.parked)
                found.extend(
                    OutboxEntry(q.aseq, q.action, ActionState.PENDING, 0, 0.0, None, tp)
                    for q in pending.queued
                )
            else:
                found.extend(self._done(tp, watermark, _spans(done), limit - len(found)))
            if len(found) >= limit:
                break
        return found[:limit]

    def _done(self, tp: TP, watermark: int, spans: Sequence[Span], limit: int) -> list[OutboxEntry]:
        with self._d.reading(Role.OPS, "listing done actions") as sql:
            parked = {
                aseq
                for (aseq,) in sql.all(
                    "SELECT aseq FROM kec_parked WHERE topic = ? AND partition = ?", tp
                )
            }
            batches = sql.all(
                "SELECT first_aseq, actions FROM kec_batches WHERE topic = ? AND partition = ? "
                "AND n_actions > 0 ORDER BY first_aseq",
                tp,
            )
        done: list[OutboxEntry] = []
        for first, blob in batches:
            for i, action in enumerate(decode_actions(blob)):
                settled = first + i < watermark or _within(first + i, spans)
                if settled and first + i not in parked and len(done) < limit:
                    done.append(OutboxEntry(first + i, action, ActionState.DONE, 0, 0.0, None, tp))
        return done

    # -- lineage (OperationsStore) ---------------------------------------------------------

    def batch_at(self, tp: TP, offset: int) -> StoredBatch | None:
        return self._batch_holding(
            tp, offset, "first_offset <= ? AND next_offset > ? AND n_events > 0", "first_offset"
        )

    def batch_of_action(self, tp: TP, aseq: int) -> StoredBatch | None:
        return self._batch_holding(
            tp, aseq, "first_aseq <= ? AND first_aseq + n_actions > ?", "first_aseq"
        )

    def _batch_holding(self, tp: TP, at: int, span: str, order: str) -> StoredBatch | None:
        """The newest batch of ``tp`` whose ``span`` (two placeholders, both ``at``) holds
        ``at``, by ``order``."""
        with self._d.reading(Role.OPS, "reading a batch") as sql:
            row = sql.one(
                f"SELECT {_BATCH_COLUMNS} FROM kec_batches WHERE topic = ? AND partition = ? "
                f"AND {span} ORDER BY {order} DESC LIMIT 1",
                (*tp, at, at),
            )
        return _stored_batch(row) if row is not None else None

    def recent_batches(self, limit: int, before_seq: int | None = None) -> list[StoredBatch]:
        below = "AND seq < ? " if before_seq is not None else ""
        params = [before_seq, limit] if before_seq is not None else [limit]
        with self._d.reading(Role.OPS, "reading recent batches") as sql:
            rows = sql.all(
                f"SELECT {_BATCH_COLUMNS} FROM kec_batches WHERE n_events > 0 {below}"
                "ORDER BY seq DESC LIMIT ?",
                params,
            )
        return [_stored_batch(row) for row in rows]

    def action_lineage(self, actions: Sequence[tuple[TP, int, str]]) -> dict[str, ActionLineage]:
        if not actions:
            return {}
        ids = [[aid] for _, _, aid in actions]
        with self._d.reading(Role.OPS, "reading lineage") as sql:
            marks = {
                (t, p): (int(w), _spans(d))
                for t, p, w, d in sql.all(
                    "SELECT topic, partition, watermark, done_above FROM kec_partitions"
                )
            }
            parked = {
                str(aid): (state, last_error)
                for aid, state, last_error in sql.all(
                    "SELECT action_id, state, last_error FROM kec_parked WHERE action_id IN "
                    f"(SELECT c0 FROM {self._d.rows(('text',))})",
                    self._d.rows_params(ids, ("text",)),
                )
            }
            tried: dict[str, list[Attempt]] = {}
            for aid, n, at, target, outcome, detail in sql.all(
                "SELECT action_id, n, at, target, outcome, detail FROM kec_attempts WHERE "
                f"action_id IN (SELECT c0 FROM {self._d.rows(('text',))}) ORDER BY seq",
                self._d.rows_params(ids, ("text",)),
            ):
                tried.setdefault(str(aid), []).append(Attempt(n, at, target, outcome, detail))
            settled: dict[str, float | None] = {}
            for tp, aseq, aid in actions:
                mark = sql.one(
                    "SELECT min(at) FROM kec_settled WHERE topic = ? AND partition = ? "
                    "AND upto > ?",
                    (*tp, aseq),
                )
                settled[aid] = float(mark[0]) if mark is not None and mark[0] is not None else None
        found: dict[str, ActionLineage] = {}
        for tp, aseq, aid in actions:
            watermark, done = marks.get(tp, (0, ()))
            row = parked.get(aid)
            if row is not None and row[0] == Parking.DEAD.value:
                state = ActionState.DEAD
            elif row is not None:
                state = ActionState.PENDING
            elif aseq < watermark or _within(aseq, done):
                state = ActionState.DONE
            else:
                state = ActionState.PENDING
            found[aid] = ActionLineage(
                state,
                tuple(tried.get(aid, ())),
                settled[aid] if state is ActionState.DONE else None,
                row[1] if row is not None else None,
            )
        return found

    def find_action(self, action_id: str, scan: int) -> tuple[TP, int] | None:
        with self._d.reading(Role.OPS, "finding an action") as sql:
            for table in ("kec_parked", "kec_attempts"):
                row = sql.one(
                    f"SELECT topic, partition, aseq FROM {table} WHERE action_id = ? LIMIT 1",
                    (action_id,),
                )
                if row is not None:
                    return (row[0], row[1]), int(row[2])
        before: int | None = None
        while scan > 0:
            chunk = min(scan, _ITER_CHUNK)
            with self._d.reading(Role.OPS, "finding an action") as sql:
                rows = sql.all(
                    "SELECT seq, topic, partition, first_aseq, actions FROM kec_batches "
                    f"WHERE n_actions > 0{' AND seq < ?' if before is not None else ''} "
                    "ORDER BY seq DESC LIMIT ?",
                    [*([before] if before is not None else []), chunk],
                )
            for _, topic, partition, first, blob in rows:
                for i, action in enumerate(decode_actions(blob)):
                    if action.action_id == action_id:
                        return (topic, partition), first + i
            if len(rows) < chunk:
                return None
            before = rows[-1][0]
            scan -= chunk
        return None

    def replay_dead(self, action_ids: Sequence[str] | None = None) -> int:
        replay = (
            "UPDATE kec_parked SET state = 'retry', attempts = 0, next_attempt_at = 0 "
            "WHERE state = 'dead'"
        )
        with self._d.transaction(Role.OPS, "replaying dead actions") as sql:
            if action_ids is None:
                return sql.execute(replay).rowcount
            if not action_ids:
                return 0
            return sql.execute(
                f"{replay} AND action_id IN (SELECT c0 FROM {self._d.rows(('text',))})",
                self._d.rows_params([[a] for a in action_ids], ("text",)),
            ).rowcount

    def checkpointed_ids(self, tp: TP, first_offset: int, next_offset: int) -> dict[int, str]:
        with self._d.reading(Role.OPS, "reading checkpointed event ids") as sql:
            blobs = sql.all(
                "SELECT events FROM kec_batches WHERE topic = ? AND partition = ? "
                "AND next_offset > ? AND first_offset < ? AND n_events > 0 ORDER BY seq",
                (*tp, first_offset, next_offset),
            )
        ids: dict[int, str] = {}
        for (blob,) in blobs:  # oldest first: a later batch of the same offset wins
            ids.update(
                (offset, eid)
                for offset, eid in decode_event_ids(blob, *tp)
                if first_offset <= offset < next_offset
            )
        return ids

    def requeue(
        self, tp: TP, actions: Sequence[Action], first_offset: int, next_offset: int
    ) -> int:
        with self._d.transaction(Role.OPS, "queueing replayed actions") as sql:
            known = {
                a.action_id
                for (blob,) in sql.all(
                    "SELECT actions FROM kec_batches WHERE topic = ? AND partition = ? "
                    "AND next_offset > ? AND first_offset < ?",
                    (*tp, first_offset, next_offset),
                )
                for a in decode_actions(blob)
            }
            fresh = {a.action_id: a for a in actions if a.action_id not in known}
            if fresh:
                parked = {
                    aid
                    for (aid,) in sql.all(
                        "SELECT action_id FROM kec_parked "
                        f"WHERE action_id IN (SELECT c0 FROM {self._d.rows(('text',))})",
                        self._d.rows_params([[a] for a in fresh], ("text",)),
                    )
                }
                for aid in parked:
                    del fresh[aid]
            if not fresh:
                return 0
            sql.execute(
                "INSERT INTO kec_partitions (topic, partition, owner, epoch, next_offset, "
                "next_aseq, watermark, claimed_at) VALUES (?, ?, 'nobody', 0, NULL, 0, 0, 0) "
                "ON CONFLICT (topic, partition) DO NOTHING",
                tp,
            )
            (end,) = sql.one(
                "UPDATE kec_partitions SET next_aseq = next_aseq + ? "
                "WHERE topic = ? AND partition = ? RETURNING next_aseq",
                (len(fresh), *tp),
            )
            first = int(end) - len(fresh)
            now = time.time()
            sql.executemany(
                _UPSERT_PARKED,
                [
                    _parked_row(Parked(tp, first + i, a, Parking.RETRY), now)
                    for i, a in enumerate(fresh.values())
                ],
            )
            sql.executemany(
                "INSERT INTO kec_rule_counts (rule, n) VALUES (?, ?) "
                "ON CONFLICT (rule) DO UPDATE SET n = kec_rule_counts.n + excluded.n",
                sorted(Counter(a.rule for a in fresh.values()).items()),
            )
        return len(fresh)

    def list_dead_records(self, limit: int = 1000) -> list[DeadRecord]:
        with self._d.reading(Role.OPS, "listing dead records") as sql:
            rows = sql.all(
                'SELECT topic, partition, "offset", error, error_class, key, value '
                "FROM kec_dead_records ORDER BY seq LIMIT ?",
                (limit,),
            )
        return [
            DeadRecord(t, p, o, err, cls, _opt_bytes(k), _opt_bytes(v))
            for t, p, o, err, cls, k, v in rows
        ]

    # -- retention -----------------------------------------------------------------------

    def prune(self, before: float, limit: int = 10_000, lateness: float = 300.0) -> int:
        with self._d.transaction(Role.OPS, "pruning") as sql:
            # Batches: old, and every action in them settled (below the watermark).
            old = sql.all(
                "SELECT b.seq, b.topic, b.partition, b.events FROM kec_batches b "
                "JOIN kec_partitions p ON b.topic = p.topic AND b.partition = p.partition "
                "WHERE b.stored_at < ? AND b.first_aseq + b.n_actions <= p.watermark "
                "ORDER BY b.seq LIMIT ?",
                (before, limit),
            )
            ids = [
                [e.event_id, e.namespace]
                for _, topic, partition, blob in old
                for e in decode_events(blob, topic, partition)
                if e.explicit_id
            ]
            types = ("text", "text")
            if ids:
                sql.execute(
                    f"DELETE FROM kec_event_ids WHERE (id, ns) IN "
                    f"(SELECT c0, c1 FROM {self._d.rows(types)})",
                    self._d.rows_params(ids, types),
                )
            if old:
                sql.execute(
                    "DELETE FROM kec_batches "
                    f"WHERE seq IN (SELECT c0 FROM {self._d.rows(('int',))})",
                    self._d.rows_params([[row[0]] for row in old], ("int",)),
                )
            gone = len(old)
            gone += self._prune_lineage(sql, before, limit)
            for table, key, column in (
                ("kec_dead_records", "seq", "stored_at"),
                ("kec_steps", "step_id", "stored_at"),
                ("kec_parked", "action_id", "parked_at"),
            ):
                extra = " AND state = 'dead'" if table == "kec_parked" else ""
                gone += sql.execute(
                    f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} "
                    f"WHERE {column} < ?{extra} LIMIT ?)",
                    (before, limit),
                ).rowcount
            # Expired rule state by event time: the least event time of the partitions,
            # a partition that was never checkpointed counting as 0.
            (watermark,) = sql.one(
                "SELECT coalesce(min(coalesce(event_time, 0)), 0) FROM kec_partitions"
            )
            expired_before = int(watermark) / 1000 - lateness
            gone += sql.execute(
                "DELETE FROM kec_rule_state WHERE key IN (SELECT key FROM kec_rule_state "
                "WHERE expires_at < ? OR updated_at < ? LIMIT ?)",
                (expired_before, before, limit),
            ).rowcount
        return gone

    def _prune_lineage(self, sql: Sql, before: float, limit: int) -> int:
        """Lineage older than the retention, and beyond :data:`LINEAGE_CAPS` rows (with or
        without a retention: lineage must not grow for ever), oldest first."""
        gone = 0
        for table, order in (("kec_attempts", "seq"), ("kec_settled", "at")):
            key = "seq" if table == "kec_attempts" else "topic, partition, upto"
            (count,) = sql.one(f"SELECT count(*) FROM {table}")
            excess = max(0, int(count) - LINEAGE_CAPS[table])
            gone += sql.execute(
                f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} "
                f"WHERE at < ? ORDER BY {order} LIMIT ?)",
                (before, limit),
            ).rowcount
            if excess:
                gone += sql.execute(
                    f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} "
                    f"ORDER BY {order} LIMIT ?)",
                    (min(excess, limit),),
                ).rowcount
        return gone

    # -- durable steps -------------------------------------------------------------------

    def get_step(self, step_id: str) -> Event | None:
        with self._d.reading(Role.OPS, "reading a step") as sql:
            row = sql.one("SELECT event FROM kec_steps WHERE step_id = ?", (step_id,))
        return Event.from_json(row[0]) if row else None

    async def get_step_async(self, step_id: str) -> Event | None:
        """As :meth:`get_step`, read by one reader thread with every step asked for
        meanwhile in one query: steps awaited together (Ray's ``wait_for_event`` in many
        coroutines) neither take a pool thread each nor queue one by one for the store's
        reader connection."""
        text = await self.step_reads.submit_async(step_id)
        return Event.from_json(text) if text is not None else None

    def put_step(self, step_id: str, event: Event) -> Event:
        """Group commit (:mod:`checkpoint.group_commit`): steps that callers in other
        threads record meanwhile go in the same transaction; each returns once it is
        durable."""
        return Event.from_json(self.steps.submit((step_id, event.to_json())))

    async def put_step_async(self, step_id: str, event: Event) -> Event:
        """As :meth:`put_step`, its group written by the group commit's writer thread: no
        thread waits per step, so every step queued during a transaction joins the next."""
        return Event.from_json(await self.steps.submit_async((step_id, event.to_json())))

    def _get_steps(self, step_ids: Sequence[str]) -> list[str | None]:
        """Each step's stored event JSON (None: not recorded), read in queries of up to
        :data:`_STEPS_PER_QUERY` ids."""
        found: dict[str, str] = {}
        wanted = list(dict.fromkeys(step_ids))
        with self._d.reading(Role.OPS, "reading steps") as sql:
            for start in range(0, len(wanted), _STEPS_PER_QUERY):
                chunk = wanted[start : start + _STEPS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                for step_id, text in sql.all(
                    f"SELECT step_id, event FROM kec_steps WHERE step_id IN ({marks})", chunk
                ):
                    found[str(step_id)] = str(text)
        return [found.get(step_id) for step_id in step_ids]

    def _put_steps(self, steps: Sequence[tuple[str, str]]) -> list[str]:
        """Record ``(step id, event JSON)`` pairs in one transaction, the first writer of
        a step winning; each step's stored JSON."""
        now = time.time()
        with self._d.transaction(Role.OPS, "recording steps") as sql:
            for step_id, text in steps:
                sql.execute(
                    "INSERT INTO kec_steps (step_id, event, stored_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (step_id) DO NOTHING",
                    (step_id, text, now),
                )
            stored = []
            for step_id, _ in steps:
                row = sql.one("SELECT event FROM kec_steps WHERE step_id = ?", (step_id,))
                if row is None:  # pragma: no cover - the row was just written
                    raise CheckpointError(f"step {step_id!r} vanished after it was recorded")
                stored.append(str(row[0]))
        return stored


_STEPS_PER_QUERY = 500  # well under SQLite's and PostgreSQL's limits on parameters

_PARTITION_COLUMNS = (
    "topic, partition, owner, epoch, next_offset, next_aseq, watermark, "
    "done_above, event_time, topic_id, stopped, generation"
)


def _info(row: Sequence[Any]) -> PartitionInfo:
    t, p, owner, epoch, nxt, aseq, mark, done, event_time, topic_id, stopped, gen = row
    return PartitionInfo(
        (t, p), owner, epoch, nxt, aseq, mark, _spans(done),
        event_time, topic_id, stopped, gen,
    )  # fmt: skip


def _spans(text: str | None) -> tuple[Span, ...]:
    return tuple((a, b) for a, b in json.loads(text)) if text else ()


def _spans_text(spans: Sequence[Span]) -> str | None:
    return json.dumps([list(s) for s in spans], separators=(",", ":")) if spans else None


def _within(aseq: int, spans: Sequence[Span]) -> bool:
    i = bisect.bisect_right(spans, (aseq, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= aseq < spans[i][1]


def _entry(p: Parked, state: ActionState) -> OutboxEntry:
    return OutboxEntry(p.aseq, p.action, state, p.attempts, p.next_attempt_at, p.last_error, p.tp)


def _opt_bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)
