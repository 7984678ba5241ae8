"""The embedded checkpoint store: one SQLite file (docs/architecture.md, "The checkpoint store").

Durability: WAL journal with ``synchronous=FULL``, so every commit is fsynced before
``COMMIT`` returns, and one ``BEGIN IMMEDIATE`` transaction per batch, so a batch costs one
fsync however many events it holds.

Threads: two connections, each behind its own lock. The *writer* runs batches and every
other write (``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so a transaction never
fails half-way on a read-to-write upgrade); the *reader* answers queries, and under WAL it
reads the last committed state without waiting for a batch in progress. SQLite allows one
writer at a time anyway, so a second writer connection would only add lock polling.

Identity of the file: ``PRAGMA application_id`` marks it as ours and ``PRAGMA
user_version`` holds the schema version. :meth:`SqliteStore.open` inspects both before it
writes a byte: random bytes or somebody else's database raise
:class:`~kec.errors.StoreCorrupt`, a newer version raises
:class:`~kec.errors.SchemaTooNew`; neither is ever recreated or overwritten. An
empty or missing file becomes a new store, and an older schema is migrated in one
transaction.

Ids are looked up through an index on a 32-bit hash of the id (:func:`id_hash`), not on
the id text: ids are random (uuid4, sha256), so every insert into an id index lands on a
random page, and a compact index means fewer pages dirtied and written to the WAL per
batch (measured: half the commit time of a ``UNIQUE`` text index). Hash collisions only
cost an extra row compared: every query also matches the id itself. Dedup therefore runs
as one probe of the batch's hashes, then plain inserts, inside the write transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from checkpoint.base import (
    SCHEMA_VERSION,
    ActionState,
    BatchTransaction,
    CheckpointStore,
    DeadRecord,
    OutboxEntry,
    TopicPartition,
)
from checkpoint.rows import (
    ACTION_COLUMNS,
    EVENT_COLUMNS,
    OUTBOX_COLUMNS,
    action_row,
    event_from_row,
    event_row,
    outbox_entry_from_row,
    time_cut,
    unique_by_id,
)
from kec.action import Action
from kec.errors import CheckpointError, Fenced, SchemaTooNew, StoreCorrupt
from kec.event import Event

APPLICATION_ID = 0x4B454331  # "KEC1": marks the file as a kafka-event-connector store

# Schema steps: _MIGRATIONS[v] takes a store from version v-1 to v.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id_hash INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,  -- BLOB affinity: str stays TEXT, bytes stays BLOB
            namespace TEXT NOT NULL,
            sender TEXT, context TEXT, event_type TEXT,
            create_time INTEGER NOT NULL,
            headers TEXT, topic TEXT, partition INTEGER, "offset" INTEGER)""",
        "CREATE INDEX events_id_hash ON events (id_hash)",
        """CREATE TABLE next_offsets (
            topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
            PRIMARY KEY (topic, partition)) WITHOUT ROWID""",
        """CREATE TABLE partition_owners (
            topic TEXT NOT NULL, partition INTEGER NOT NULL,
            owner TEXT NOT NULL, epoch INTEGER NOT NULL,
            PRIMARY KEY (topic, partition)) WITHOUT ROWID""",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,
            id_hash INTEGER NOT NULL,
            action_id TEXT NOT NULL,
            rule TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
            namespace TEXT NOT NULL, event_ids TEXT NOT NULL, event_key TEXT NOT NULL,
            workflow TEXT, task TEXT, context TEXT, payload TEXT,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            last_error TEXT)""",
        "CREATE INDEX outbox_id_hash ON outbox (id_hash)",
        "CREATE INDEX outbox_state_seq ON outbox (state, seq)",
        """CREATE TABLE rule_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)
            WITHOUT ROWID""",
        """CREATE TABLE dead_records (
            seq INTEGER PRIMARY KEY,
            topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
            error TEXT NOT NULL, error_class TEXT NOT NULL, key BLOB, value BLOB,
            UNIQUE (topic, partition, "offset"))""",
        "CREATE TABLE steps (step_id TEXT PRIMARY KEY, event TEXT NOT NULL) WITHOUT ROWID",
    ),
    # When each event was stored and each action queued, for retention (prune). Rows of a
    # version-1 store have no such time: their age counts from the upgrade.
    2: (
        "ALTER TABLE events ADD COLUMN stored_at REAL NOT NULL DEFAULT 0",
        "UPDATE events SET stored_at = unixepoch()",
        "ALTER TABLE outbox ADD COLUMN queued_at REAL NOT NULL DEFAULT 0",
        "UPDATE outbox SET queued_at = unixepoch()",
    ),
}
assert max(_MIGRATIONS) == SCHEMA_VERSION, "every schema version needs a migration step"

_INSERT_EVENTS = (
    f"INSERT INTO events (id_hash, {', '.join(EVENT_COLUMNS)}, stored_at) "
    f"VALUES ({', '.join('?' * (2 + len(EVENT_COLUMNS)))})"
)
_INSERT_ACTIONS = (
    f"INSERT INTO outbox (id_hash, {', '.join(ACTION_COLUMNS)}, queued_at) "
    f"VALUES ({', '.join('?' * (2 + len(ACTION_COLUMNS)))})"
)
# The ids stored under any of the hashes in a JSON array (one probe per hash).
_KNOWN_EVENTS = "SELECT event_id FROM json_each(?) JOIN events ON id_hash = json_each.value"
_KNOWN_ACTIONS = "SELECT action_id FROM json_each(?) JOIN outbox ON id_hash = json_each.value"
_BY_ACTION_ID = "id_hash = ? AND action_id = ?"
_SELECT_OUTBOX = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox"
_SELECT_EVENT = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
_UPSERT_OFFSET = (
    "INSERT INTO next_offsets (topic, partition, next_offset) VALUES (?, ?, ?) "
    "ON CONFLICT (topic, partition) DO UPDATE "
    "SET next_offset = max(next_offset, excluded.next_offset)"
)
_ITER_CHUNK = 1000
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _time_cut(conn: sqlite3.Connection, table: str, column: str, when: float) -> int:
    """:func:`~checkpoint.rows.time_cut` of ``table`` by its time ``column``."""
    first, last = conn.execute(
        f"SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM {table}"
    ).fetchone()
    probe = f"SELECT seq, {column} FROM {table} WHERE seq >= ? ORDER BY seq LIMIT 1"

    def at(seq: int) -> tuple[int, float] | None:
        row = conn.execute(probe, (seq,)).fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    return time_cut(int(first), int(last), at, when)


def id_hash(an_id: str) -> int:
    """The indexed stand-in for an id: CRC-32 of its UTF-8, shifted into a signed 32-bit
    range so SQLite stores it in 4 bytes. Part of the schema: never change it within a
    schema version."""
    return zlib.crc32(an_id.encode("utf-8", "surrogatepass")) - 0x80000000


def _translate(exc: sqlite3.Error, path: Path, doing: str) -> CheckpointError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreCorrupt(f"{path} is damaged or not a database ({exc}) while {doing}")
    return CheckpointError(f"sqlite store {path}: {doing} failed: {exc}")


class SqliteStore(CheckpointStore):
    """A checkpoint store in one SQLite file; nothing touches the file before ``open()``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        cache_mib: int = 16,
        checkpoint_pages: int = 10_000,
    ) -> None:
        self._path = Path(path)
        self._busy_timeout = busy_timeout
        self._cache_mib = cache_mib
        self._checkpoint_pages = checkpoint_pages
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._writer_thread: int | None = None  # thread inside batch() or another write

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        with self._wlock, self._rlock:
            if self._writer is not None:
                return
            with self._errors("opening"):
                self._path.parent.mkdir(parents=True, exist_ok=True)
                writer = self._connect()
            try:
                with self._errors("opening"):
                    self._check_and_migrate(writer)
                    reader = self._connect()
                    reader.execute("PRAGMA query_only = ON")
            except BaseException:
                writer.close()
                raise
            self._writer, self._reader = writer, reader

    def close(self) -> None:
        with self._wlock, self._rlock:
            for conn in (self._reader, self._writer):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
            self._writer = self._reader = None

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; the locks make
        # cross-thread use safe.
        return sqlite3.connect(
            self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )

    def _inspect(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        return app_id, version, objects

    def _check_and_migrate(self, conn: sqlite3.Connection) -> None:
        # Read-only checks first: nothing may be written to a file that is not ours.
        version = self._check_identity(*self._inspect(conn))
        try:
            conn.execute("SELECT json_valid('[]')")  # the dedup probe needs json_each
        except sqlite3.OperationalError as exc:
            raise CheckpointError(
                f"SQLite {sqlite3.sqlite_version} lacks the JSON functions this store needs "
                "(built in since SQLite 3.38)"
            ) from exc
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise CheckpointError(f"{self._path}: cannot use WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA cache_size = -{self._cache_mib * 1024}")
        # A WAL of ~40 MB between checkpoints (default 4 MB): the random id-index pages
        # that every batch dirties are then copied back to the file once per checkpoint
        # instead of nearly once per batch (about 2x the throughput past 100k events, measured).
        conn.execute(f"PRAGMA wal_autocheckpoint = {self._checkpoint_pages}")
        conn.execute(f"PRAGMA journal_size_limit = {self._checkpoint_pages * 4096 * 2}")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Checked again under the write lock: another process may have migrated.
            version = self._check_identity(*self._inspect(conn))
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_identity(self, app_id: int, version: int, objects: int) -> int:
        if app_id == 0 and version == 0 and objects == 0:
            return 0  # an empty or new file
        if app_id != APPLICATION_ID or version < 1:
            raise StoreCorrupt(
                f"{self._path} is a SQLite database but not a kafka-event-connector "
                f"checkpoint store (application_id={app_id:#x}, user_version={version}, "
                f"{objects} schema objects); refusing to use or modify it"
            )
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self._path} has checkpoint schema version {version}; this version of "
                f"kafka-event-connector knows up to {SCHEMA_VERSION}. Upgrade the connector."
            )
        return version

    # -- connection access ---------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self._path, doing) from exc

    @contextlib.contextmanager
    def _write_conn(self) -> Iterator[sqlite3.Connection]:
        if self._writer_thread == threading.get_ident():
            # The lock is not re-entrant: calling the store from inside one's own batch
            # block would deadlock, so say so instead.
            raise CheckpointError("store written to from inside this thread's own batch()")
        with self._wlock:
            if self._writer is None:
                raise CheckpointError(f"{self!r} is not open")
            self._writer_thread = threading.get_ident()
            try:
                yield self._writer
            finally:
                self._writer_thread = None

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A write transaction on the writer: committed (fsynced) or rolled back."""
        with self._write_conn() as conn, self._errors(doing):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read_conn(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._rlock, self._errors(doing):
            if self._reader is None:
                raise CheckpointError(f"{self!r} is not open")
            yield self._reader

    # -- the batch -----------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[BatchTransaction]:
        with self._transaction("committing a batch") as conn:
            tx = _SqliteBatch(conn, self._path)
            try:
                yield tx
                tx.raise_if_failed()
            finally:
                tx.closed = True

    # -- offsets and ownership -----------------------------------------------------------

    def next_offsets(self, topic: str | None = None) -> dict[TopicPartition, int]:
        sql = "SELECT topic, partition, next_offset FROM next_offsets"
        with self._read_conn("reading next offsets") as conn:
            if topic is None:
                rows = conn.execute(sql).fetchall()
            else:
                rows = conn.execute(sql + " WHERE topic = ?", (topic,)).fetchall()
        return {(t, p): o for t, p, o in rows}

    def claim_partitions(
        self, owner: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        claimed: dict[TopicPartition, int] = {}
        with self._transaction("claiming partitions") as conn:
            for topic, part in sorted(set(partitions)):
                (epoch,) = conn.execute(
                    "INSERT INTO partition_owners (topic, partition, owner, epoch) "
                    "VALUES (?, ?, ?, 1) ON CONFLICT (topic, partition) DO UPDATE "
                    "SET epoch = epoch + 1, owner = excluded.owner RETURNING epoch",
                    (topic, part, owner),
                ).fetchone()
                claimed[(topic, part)] = epoch
        return claimed

    # -- events --------------------------------------------------------------------------

    def get_event(self, event_id: str) -> Event | None:
        with self._read_conn("reading an event") as conn:
            row = conn.execute(
                _SELECT_EVENT + " WHERE id_hash = ? AND event_id = ?",
                (id_hash(event_id), event_id),
            ).fetchone()
        return event_from_row(row) if row else None

    def count_events(self) -> int:
        with self._read_conn("counting events") as conn:
            count: int = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return count

    def iter_events(self) -> Iterator[Event]:
        # Keyset pages, so no lock is held while the caller consumes the iterator.
        after = 0
        while True:
            with self._read_conn("reading events") as conn:
                rows = conn.execute(
                    f"SELECT seq, {', '.join(EVENT_COLUMNS)} FROM events "
                    "WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, _ITER_CHUNK),
                ).fetchall()
            for row in rows:
                yield event_from_row(row[1:])
            if len(rows) < _ITER_CHUNK:
                return
            after = rows[-1][0]

    # -- outbox --------------------------------------------------------------------------

    def due_actions(self, now: float, limit: int) -> list[OutboxEntry]:
        with self._read_conn("reading due actions") as conn:
            rows = conn.execute(
                _SELECT_OUTBOX + " WHERE state = 'pending' AND next_attempt_at <= ? "
                "ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [outbox_entry_from_row(r) for r in rows]

    def count_actions(self, state: ActionState) -> int:
        with self._read_conn("counting actions") as conn:
            count: int = conn.execute(
                "SELECT count(*) FROM outbox WHERE state = ?", (state.value,)
            ).fetchone()[0]
        return count

    def count_actions_by_rule(self) -> dict[str, int]:
        with self._read_conn("counting actions by rule") as conn:
            rows = conn.execute("SELECT rule, count(*) FROM outbox GROUP BY rule").fetchall()
        return {rule: count for rule, count in rows}

    def mark_done(self, action_ids: Sequence[str]) -> None:
        if not action_ids:
            return
        with self._transaction("marking actions done") as conn:
            conn.executemany(
                f"UPDATE outbox SET state = 'done' WHERE {_BY_ACTION_ID} AND state = 'pending'",
                [(id_hash(aid), aid) for aid in action_ids],
            )

    def mark_retry(self, action_id: str, next_attempt_at: float, error: str) -> None:
        with self._transaction("scheduling a retry") as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
                f"WHERE {_BY_ACTION_ID} AND state = 'pending'",
                (next_attempt_at, error, id_hash(action_id), action_id),
            )

    def mark_dead(self, action_id: str, error: str) -> None:
        with self._transaction("marking an action dead") as conn:
            conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ? "
                f"WHERE {_BY_ACTION_ID} AND state = 'pending'",
                (error, id_hash(action_id), action_id),
            )

    def list_actions(self, state: ActionState, limit: int = 1000) -> list[OutboxEntry]:
        with self._read_conn("listing actions") as conn:
            rows = conn.execute(
                _SELECT_OUTBOX + " WHERE state = ? ORDER BY seq LIMIT ?", (state.value, limit)
            ).fetchall()
        return [outbox_entry_from_row(r) for r in rows]

    def replay_dead(self, action_ids: Sequence[str] | None = None) -> int:
        replay = (
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0 "
            "WHERE state = 'dead'"
        )
        with self._transaction("replaying dead actions") as conn:
            if action_ids is None:
                return conn.execute(replay).rowcount
            cur = conn.executemany(
                f"{replay} AND {_BY_ACTION_ID}", [(id_hash(a), a) for a in action_ids]
            )
            return cur.rowcount

    def prune(self, before: float, limit: int = 10_000) -> int:
        with self._transaction("pruning old events and done actions") as conn:
            # Times grow with seq (rows are stored in time order): the cut is found by
            # bisecting the primary key, not by scanning (or indexing) a time column.
            cut = _time_cut(conn, "events", "stored_at", before)
            events = conn.execute(
                "DELETE FROM events WHERE seq IN "
                "(SELECT seq FROM events WHERE seq < ? ORDER BY seq LIMIT ?)",
                (cut, limit),
            ).rowcount
            cut = _time_cut(conn, "outbox", "queued_at", before)
            actions = conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                "WHERE state = 'done' AND seq < ? ORDER BY seq LIMIT ?)",
                (cut, limit),
            ).rowcount
        return events + actions

    def list_dead_records(self, limit: int = 1000) -> list[DeadRecord]:
        with self._read_conn("listing dead records") as conn:
            rows = conn.execute(
                'SELECT topic, partition, "offset", error, error_class, key, value '
                "FROM dead_records ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [DeadRecord(*row) for row in rows]

    # -- durable steps -------------------------------------------------------------------

    def get_step(self, step_id: str) -> Event | None:
        with self._read_conn("reading a step") as conn:
            row = conn.execute("SELECT event FROM steps WHERE step_id = ?", (step_id,)).fetchone()
        return Event.from_json(row[0]) if row else None

    def put_step(self, step_id: str, event: Event) -> Event:
        with self._transaction("recording a step") as conn:
            conn.execute(
                "INSERT INTO steps (step_id, event) VALUES (?, ?) ON CONFLICT (step_id) DO NOTHING",
                (step_id, event.to_json()),
            )
            (stored,) = conn.execute(
                "SELECT event FROM steps WHERE step_id = ?", (step_id,)
            ).fetchone()
        return Event.from_json(stored)


class _SqliteBatch(BatchTransaction):
    """The writes of one batch inside the writer's ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path
        self.closed = False
        self._failed: CheckpointError | None = None

    @contextlib.contextmanager
    def _use(self, doing: str) -> Iterator[sqlite3.Connection]:
        if self.closed:
            raise CheckpointError("this batch has ended; open a new one")
        try:
            yield self._conn
        except sqlite3.Error as exc:
            self._failed = _translate(exc, self._path, doing)
            raise self._failed from exc
        except Fenced as exc:
            self._failed = exc
            raise

    def raise_if_failed(self) -> None:
        # A failure swallowed inside the block must still cancel the whole batch.
        if self._failed is not None:
            raise self._failed

    def insert_events(self, events: Sequence[Event]) -> list[Event]:
        unique = unique_by_id(events)
        if not unique:
            return []
        hashes = [id_hash(eid) for eid in unique]
        with self._use("inserting events") as conn:
            # Dedup: one probe of the batch's hashes, under the write lock taken by
            # BEGIN IMMEDIATE, so nothing can be inserted between probe and insert.
            known = {r[0] for r in conn.execute(_KNOWN_EVENTS, (_dumps(hashes),))}
            new = [
                (h, e) for h, (eid, e) in zip(hashes, unique.items(), strict=True)
                if eid not in known
            ]  # fmt: skip
            if new:
                now = time.time()
                conn.executemany(_INSERT_EVENTS, [(h, *event_row(e), now) for h, e in new])
        return [e for _, e in new]

    def get_rule_state(self, key: str) -> str | None:
        with self._use("reading rule state") as conn:
            row = conn.execute("SELECT value FROM rule_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put_rule_state(self, key: str, value: str | None) -> None:
        with self._use("writing rule state") as conn:
            if value is None:
                conn.execute("DELETE FROM rule_state WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO rule_state (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def add_actions(self, actions: Sequence[Action]) -> None:
        unique: dict[str, Action] = {}
        for action in actions:
            unique.setdefault(action.action_id, action)  # first occurrence wins
        if not unique:
            return
        hashes = [id_hash(aid) for aid in unique]
        with self._use("queueing actions") as conn:
            known = {r[0] for r in conn.execute(_KNOWN_ACTIONS, (_dumps(hashes),))}
            now = time.time()
            rows = [
                (h, *action_row(a), now)
                for h, (aid, a) in zip(hashes, unique.items(), strict=True)
                if aid not in known
            ]
            if rows:
                conn.executemany(_INSERT_ACTIONS, rows)

    def add_dead_records(self, records: Sequence[DeadRecord]) -> None:
        if not records:
            return
        with self._use("recording dead records") as conn:
            conn.executemany(
                'INSERT INTO dead_records (topic, partition, "offset", error, error_class, '
                "key, value) VALUES (?, ?, ?, ?, ?, ?, ?) "
                'ON CONFLICT (topic, partition, "offset") DO NOTHING',
                [
                    (r.topic, r.partition, r.offset, r.error, r.error_class, r.key, r.value)
                    for r in records
                ],
            )

    def set_next_offsets(
        self,
        offsets: Mapping[TopicPartition, int],
        epochs: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        with self._use("recording next offsets") as conn:
            for (topic, part), epoch in (epochs or {}).items():
                row = conn.execute(
                    "SELECT owner, epoch FROM partition_owners WHERE topic = ? AND partition = ?",
                    (topic, part),
                ).fetchone()
                owner, current = row if row else ("nobody", 0)
                if current != epoch:
                    raise Fenced(
                        f"{topic}[{part}]: epoch {epoch} is stale; {owner} owns it at "
                        f"epoch {current}",
                        ((topic, part),),
                    )
            conn.executemany(_UPSERT_OFFSET, [(t, p, o) for (t, p), o in offsets.items()])
