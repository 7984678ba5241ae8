"""The shared checkpoint store: PostgreSQL through psycopg 3 (docs/architecture.md).

Several connector instances in one consumer group share it. Each batch is one transaction
committed with ``synchronous_commit=on`` (the commit returns once the WAL is flushed).

Bulk writes: the batch's events (and actions) are ``COPY``-ed in binary into a temporary
staging table, then moved with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING
RETURNING``, which skips known ids and names the new ones in the same statement (measured
a quarter faster than one ``INSERT ... SELECT FROM unnest(arrays)``). Smaller array
parameters travel in binary (``%b``): psycopg dumps those ten times faster than text.

Fencing (docs/architecture.md): ``kec_partition_owners`` holds each partition's owner epoch.
:meth:`PostgresStore.claim_partitions` bumps it; a batch reads its partitions' epochs
``FOR SHARE`` inside its own transaction, so a claim racing with it either commits first
(and the batch sees the new epoch and raises :class:`~kec.errors.Fenced`) or waits
until the batch has committed. Rows are always locked in (topic, partition) order, so two
instances cannot deadlock on them.

Threads: one connection per role, each behind a lock: *pipeline* (batches and claims,
from the poll thread) and *ops* (dispatch and queries). A broken connection is replaced on
its next use. Tables carry a ``kec_`` prefix and live in the connection's current schema;
``kec_meta`` records the application and the schema version.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg

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
    OUTBOX_COLUMNS,
    action_row,
    encode_headers,
    event_from_row,
    outbox_entry_from_row,
    time_cut,
    unique_by_id,
)
from kec.action import Action
from kec.errors import CheckpointError, Fenced, SchemaTooNew, StoreCorrupt
from kec.event import Event

APPLICATION = "kafka-event-connector"
_SCHEMA_LOCK = 0x4B45435F534348  # advisory lock serialising schema creation and migration
Connection = psycopg.Connection[tuple[Any, ...]]

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE kec_meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE kec_events (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id text COLLATE "C" NOT NULL UNIQUE,
            key text NOT NULL,
            value bytea NOT NULL,
            value_is_text boolean NOT NULL,
            namespace text NOT NULL,
            sender text, context text, event_type text,
            create_time bigint NOT NULL,
            headers text, topic text, partition integer, "offset" bigint)""",
        """CREATE TABLE kec_next_offsets (
            topic text NOT NULL, partition integer NOT NULL, next_offset bigint NOT NULL,
            PRIMARY KEY (topic, partition))""",
        """CREATE TABLE kec_partition_owners (
            topic text NOT NULL, partition integer NOT NULL,
            owner text NOT NULL, epoch bigint NOT NULL,
            claimed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition))""",
        """CREATE TABLE kec_outbox (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            action_id text COLLATE "C" NOT NULL UNIQUE,
            rule text NOT NULL, kind text NOT NULL, target text NOT NULL,
            namespace text NOT NULL, event_ids text NOT NULL, event_key text NOT NULL,
            workflow text, task text, context text, payload text,
            state text NOT NULL DEFAULT 'pending',
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at double precision NOT NULL DEFAULT 0,
            last_error text)""",
        "CREATE INDEX kec_outbox_state_seq ON kec_outbox (state, seq)",
        "CREATE TABLE kec_rule_state (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE kec_dead_records (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            topic text NOT NULL, partition integer NOT NULL, "offset" bigint NOT NULL,
            error text NOT NULL, error_class text NOT NULL, key bytea, value bytea,
            UNIQUE (topic, partition, "offset"))""",
        "CREATE TABLE kec_steps (step_id text PRIMARY KEY, event text NOT NULL)",
    ),
    # When each event was stored and each action queued, for retention (prune); rows of a
    # version-1 store count from the upgrade. New rows get the time of their transaction.
    2: (
        "ALTER TABLE kec_events ADD COLUMN stored_at double precision NOT NULL "
        "DEFAULT extract(epoch FROM now())",
        "ALTER TABLE kec_outbox ADD COLUMN queued_at double precision NOT NULL "
        "DEFAULT extract(epoch FROM now())",
    ),
}
assert max(_MIGRATIONS) == SCHEMA_VERSION, "every schema version needs a migration step"

_EVENT_TYPES = (
    "text", "text", "bytea", "bool", "text", "text", "text", "text", "int8", "text", "text",
    "int4", "int8",
)  # fmt: skip
_EVENT_SQL_COLUMNS = (
    "event_id, key, value, value_is_text, namespace, sender, context, event_type, "
    'create_time, headers, topic, partition, "offset"'
)
# Staging tables: temporary, per pipeline connection, emptied by every commit.
_STAGE_EVENT_COLUMNS = ", ".join(
    f"{name} {kind}"
    for name, kind in zip(_EVENT_SQL_COLUMNS.split(", "), _EVENT_TYPES, strict=True)
)
_STAGE_ACTION_COLUMNS = ", ".join(f"{name} text" for name in ACTION_COLUMNS)
_STAGE_TABLES = (
    f"CREATE TEMP TABLE IF NOT EXISTS kec_stage_events (ord int4, {_STAGE_EVENT_COLUMNS}) "
    "ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE IF NOT EXISTS kec_stage_actions (ord int4, {_STAGE_ACTION_COLUMNS}) "
    "ON COMMIT DELETE ROWS",
)
_COPY_EVENTS = f"COPY kec_stage_events (ord, {_EVENT_SQL_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_ACTIONS = (
    f"COPY kec_stage_actions (ord, {', '.join(ACTION_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)
# Staged rows are moved (DELETE ... RETURNING), so a second call in the same batch starts
# from an empty staging table.
_INSERT_EVENTS = f"""
    WITH staged AS (DELETE FROM kec_stage_events RETURNING *)
    INSERT INTO kec_events ({_EVENT_SQL_COLUMNS})
    SELECT {_EVENT_SQL_COLUMNS} FROM staged ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id"""
_INSERT_ACTIONS = f"""
    WITH staged AS (DELETE FROM kec_stage_actions RETURNING *)
    INSERT INTO kec_outbox ({", ".join(ACTION_COLUMNS)})
    SELECT {", ".join(ACTION_COLUMNS)} FROM staged ORDER BY ord
    ON CONFLICT (action_id) DO NOTHING"""
_SELECT_OUTBOX = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM kec_outbox"
_SELECT_EVENT = f"SELECT {_EVENT_SQL_COLUMNS} FROM kec_events"
_ITER_CHUNK = 1000


def _time_cut(conn: Connection, table: str, column: str, when: float) -> int:
    """:func:`~checkpoint.rows.time_cut` of ``table`` by its time ``column``."""
    row = conn.execute(f"SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM {table}")
    first, last = row.fetchone() or (0, 0)
    probe = f"SELECT seq, {column} FROM {table} WHERE seq >= %s ORDER BY seq LIMIT 1"

    def at(seq: int) -> tuple[int, float] | None:
        found = conn.execute(probe, (seq,)).fetchone()
        return None if found is None else (int(found[0]), float(found[1]))

    return time_cut(int(first), int(last), at, when)


def _pg_event_row(e: Event) -> tuple[Any, ...]:
    # bytea plus a flag rather than text: a str value may hold NUL, which text cannot.
    text = isinstance(e.value, str)
    value = e.value.encode("utf-8", "surrogatepass") if isinstance(e.value, str) else e.value
    return (
        e.event_id, e.key, value, text, e.namespace, e.sender, e.context, e.event_type,
        e.create_time, encode_headers(e.headers), e.topic, e.partition, e.offset,
    )  # fmt: skip


def _event_from_pg(row: Sequence[Any]) -> Event:
    value = bytes(row[2])
    decoded = value.decode("utf-8", "surrogatepass") if row[3] else value
    return event_from_row((row[0], row[1], decoded, *row[4:]))


def _opt_bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def _columns(rows: Iterable[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows to one list per column: the arrays ``unnest`` takes."""
    return [list(col) for col in zip(*rows, strict=True)]


class _Session:
    """One connection for one role, behind a lock; replaced when it broke."""

    def __init__(self, store: PostgresStore, role: str, setup: Sequence[str] = ()) -> None:
        self._store = store
        self._role = role
        self._setup = setup  # statements every new connection of this role runs first
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._is_open = False
        self._holder: int | None = None

    def open(self) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = self._store.connect(self._setup)
            self._is_open = True

    def close(self) -> None:
        with self._lock:
            conn, self._conn, self._is_open = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    @contextlib.contextmanager
    def use(self) -> Iterator[Connection]:
        if self._holder == threading.get_ident():
            # The lock is not re-entrant: say so rather than deadlock.
            raise CheckpointError(f"the {self._role} connection is in use by this thread's batch")
        with self._lock:
            if not self._is_open:
                raise CheckpointError("the postgres store is not open")
            conn = self._conn
            if conn is None or conn.broken or conn.closed:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    self._conn = None
                conn = self._conn = self._store.connect(self._setup)
            self._holder = threading.get_ident()
            try:
                yield conn
            finally:
                self._holder = None


@contextlib.contextmanager
def _errors(doing: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise CheckpointError(f"postgres store: {doing} failed: {exc}") from exc


class PostgresStore(CheckpointStore):
    """A checkpoint store in a PostgreSQL database; connects in ``open()``."""

    def __init__(
        self,
        dsn: str,
        *,
        connect_timeout: int = 10,
        application_name: str = APPLICATION,
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._application_name = application_name
        self._pipeline = _Session(self, "pipeline", _STAGE_TABLES)
        self._ops = _Session(self, "ops")

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # never print the DSN: it may hold a password

    def connect(self, setup: Sequence[str] = ()) -> Connection:
        """A new connection with the settings every session relies on."""
        with _errors("connecting"):
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,  # transactions are explicit: conn.transaction()
                connect_timeout=self._connect_timeout,
                application_name=self._application_name,
            )
            try:
                conn.execute("SET synchronous_commit = on")
                for statement in setup:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                raise
        return conn

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self._ops.open()
            with self._ops.use() as conn, _errors("checking the schema"):
                self._check_and_migrate(conn)
            self._pipeline.open()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._pipeline.close()
        self._ops.close()

    def _check_and_migrate(self, conn: Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            version = self._stored_version(conn)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(
                    "INSERT INTO kec_meta (key, value) VALUES ('application', %s), "
                    "('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = "
                    "excluded.value",
                    (APPLICATION, str(SCHEMA_VERSION)),
                )

    def _stored_version(self, conn: Connection) -> int:
        row = conn.execute("SELECT to_regclass('kec_meta') IS NOT NULL").fetchone()
        if not (row and row[0]):
            found = conn.execute(
                "SELECT string_agg(tablename, ', ' ORDER BY tablename) FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename LIKE %s",
                ("kec\\_%",),
            ).fetchone()
            if found and found[0]:
                raise StoreCorrupt(
                    f"the database has tables {found[0]} but no kec_meta: not a "
                    "kafka-event-connector store, or a damaged one; refusing to touch it"
                )
            return 0
        meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM kec_meta").fetchall())
        version_text = meta.get("schema_version", "")
        if meta.get("application") != APPLICATION or not version_text.isdigit():
            raise StoreCorrupt(
                f"kec_meta does not describe a {APPLICATION} checkpoint store ({meta!r}); "
                "refusing to touch it"
            )
        version = int(version_text)
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the database has checkpoint schema version {version}; this version of "
                f"{APPLICATION} knows up to {SCHEMA_VERSION}. Upgrade the connector."
            )
        return version

    # -- the batch -----------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[BatchTransaction]:
        with self._pipeline.use() as conn, _errors("committing a batch"), conn.transaction():
            tx = _PostgresBatch(conn)
            try:
                yield tx
                tx.raise_if_failed()
            finally:
                tx.closed = True

    # -- offsets and ownership -----------------------------------------------------------

    def next_offsets(self, topic: str | None = None) -> dict[TopicPartition, int]:
        with self._ops.use() as conn, _errors("reading next offsets"):
            rows = conn.execute(
                "SELECT topic, partition, next_offset FROM kec_next_offsets "
                "WHERE %(topic)s::text IS NULL OR topic = %(topic)s::text",
                {"topic": topic},
            ).fetchall()
        return {(t, p): o for t, p, o in rows}

    def claim_partitions(
        self, owner: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        topics, parts = _columns(wanted)
        with self._pipeline.use() as conn, _errors("claiming partitions"), conn.transaction():
            rows = conn.execute(
                "INSERT INTO kec_partition_owners (topic, partition, owner, epoch) "
                "SELECT t, p, %s, 1 FROM unnest(%b::text[], %b::int4[]) AS u(t, p) "
                "ORDER BY t, p "
                "ON CONFLICT (topic, partition) DO UPDATE SET "
                "epoch = kec_partition_owners.epoch + 1, owner = excluded.owner, "
                "claimed_at = now() "
                "RETURNING topic, partition, epoch",
                (owner, topics, parts),
            ).fetchall()
        return {(t, p): e for t, p, e in rows}

    # -- events --------------------------------------------------------------------------

    def get_event(self, event_id: str) -> Event | None:
        with self._ops.use() as conn, _errors("reading an event"):
            row = conn.execute(_SELECT_EVENT + " WHERE event_id = %s", (event_id,)).fetchone()
        return _event_from_pg(row) if row else None

    def count_events(self) -> int:
        with self._ops.use() as conn, _errors("counting events"):
            row = conn.execute("SELECT count(*) FROM kec_events").fetchone()
        return int(row[0]) if row else 0

    def iter_events(self) -> Iterator[Event]:
        # Keyset pages, so no lock is held while the caller consumes the iterator.
        after = 0
        while True:
            with self._ops.use() as conn, _errors("reading events"):
                rows = conn.execute(
                    f"SELECT seq, {_EVENT_SQL_COLUMNS} FROM kec_events "
                    "WHERE seq > %s ORDER BY seq LIMIT %s",
                    (after, _ITER_CHUNK),
                ).fetchall()
            for row in rows:
                yield _event_from_pg(row[1:])
            if len(rows) < _ITER_CHUNK:
                return
            after = rows[-1][0]

    # -- outbox --------------------------------------------------------------------------

    def due_actions(self, now: float, limit: int) -> list[OutboxEntry]:
        with self._ops.use() as conn, _errors("reading due actions"):
            rows = conn.execute(
                _SELECT_OUTBOX + " WHERE state = 'pending' AND next_attempt_at <= %s "
                "ORDER BY seq LIMIT %s",
                (now, limit),
            ).fetchall()
        return [outbox_entry_from_row(r) for r in rows]

    def count_actions(self, state: ActionState) -> int:
        with self._ops.use() as conn, _errors("counting actions"):
            row = conn.execute(
                "SELECT count(*) FROM kec_outbox WHERE state = %s", (state.value,)
            ).fetchone()
        return int(row[0]) if row else 0

    def count_actions_by_rule(self) -> dict[str, int]:
        with self._ops.use() as conn, _errors("counting actions by rule"):
            rows = conn.execute("SELECT rule, count(*) FROM kec_outbox GROUP BY rule").fetchall()
        return {str(rule): int(count) for rule, count in rows}

    def mark_done(self, action_ids: Sequence[str]) -> None:
        if not action_ids:
            return
        with self._ops.use() as conn, _errors("marking actions done"):
            conn.execute(
                "UPDATE kec_outbox SET state = 'done' "
                "WHERE action_id = ANY(%b::text[]) AND state = 'pending'",
                (list(action_ids),),
            )

    def mark_retry(self, action_id: str, next_attempt_at: float, error: str) -> None:
        with self._ops.use() as conn, _errors("scheduling a retry"):
            conn.execute(
                "UPDATE kec_outbox SET attempts = attempts + 1, next_attempt_at = %s, "
                "last_error = %s WHERE action_id = %s AND state = 'pending'",
                (next_attempt_at, error, action_id),
            )

    def mark_dead(self, action_id: str, error: str) -> None:
        with self._ops.use() as conn, _errors("marking an action dead"):
            conn.execute(
                "UPDATE kec_outbox SET state = 'dead', attempts = attempts + 1, "
                "last_error = %s WHERE action_id = %s AND state = 'pending'",
                (error, action_id),
            )

    def list_actions(self, state: ActionState, limit: int = 1000) -> list[OutboxEntry]:
        with self._ops.use() as conn, _errors("listing actions"):
            rows = conn.execute(
                _SELECT_OUTBOX + " WHERE state = %s ORDER BY seq LIMIT %s", (state.value, limit)
            ).fetchall()
        return [outbox_entry_from_row(r) for r in rows]

    def replay_dead(self, action_ids: Sequence[str] | None = None) -> int:
        with self._ops.use() as conn, _errors("replaying dead actions"):
            cur = conn.execute(
                "UPDATE kec_outbox SET state = 'pending', attempts = 0, next_attempt_at = 0 "
                "WHERE state = 'dead' "
                "AND (%(ids)s::text[] IS NULL OR action_id = ANY(%(ids)s::text[]))",
                {"ids": None if action_ids is None else list(action_ids)},
            )
        return cur.rowcount

    def prune(self, before: float, limit: int = 10_000) -> int:
        with (
            self._ops.use() as conn,
            _errors("pruning old events and done actions"),
            conn.transaction(),
        ):
            cut = _time_cut(conn, "kec_events", "stored_at", before)
            events = conn.execute(
                "DELETE FROM kec_events WHERE seq IN "
                "(SELECT seq FROM kec_events WHERE seq < %s ORDER BY seq LIMIT %s)",
                (cut, limit),
            ).rowcount
            cut = _time_cut(conn, "kec_outbox", "queued_at", before)
            actions = conn.execute(
                "DELETE FROM kec_outbox WHERE seq IN (SELECT seq FROM kec_outbox "
                "WHERE state = 'done' AND seq < %s ORDER BY seq LIMIT %s)",
                (cut, limit),
            ).rowcount
        return events + actions

    def list_dead_records(self, limit: int = 1000) -> list[DeadRecord]:
        with self._ops.use() as conn, _errors("listing dead records"):
            rows = conn.execute(
                'SELECT topic, partition, "offset", error, error_class, key, value '
                "FROM kec_dead_records ORDER BY seq LIMIT %s",
                (limit,),
            ).fetchall()
        return [
            DeadRecord(t, p, o, err, cls, _opt_bytes(k), _opt_bytes(v))
            for t, p, o, err, cls, k, v in rows
        ]

    # -- durable steps -------------------------------------------------------------------

    def get_step(self, step_id: str) -> Event | None:
        with self._ops.use() as conn, _errors("reading a step"):
            row = conn.execute("SELECT event FROM kec_steps WHERE step_id = %s", (step_id,))
            found = row.fetchone()
        return Event.from_json(found[0]) if found else None

    def put_step(self, step_id: str, event: Event) -> Event:
        with self._ops.use() as conn, _errors("recording a step"), conn.transaction():
            conn.execute(
                "INSERT INTO kec_steps (step_id, event) VALUES (%s, %s) "
                "ON CONFLICT (step_id) DO NOTHING",
                (step_id, event.to_json()),
            )
            row = conn.execute(
                "SELECT event FROM kec_steps WHERE step_id = %s", (step_id,)
            ).fetchone()
        if row is None:  # pragma: no cover - the row was just written
            raise CheckpointError(f"step {step_id!r} vanished after it was recorded")
        return Event.from_json(row[0])


class _PostgresBatch(BatchTransaction):
    """The writes of one batch inside the pipeline connection's transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.closed = False
        self._failed: CheckpointError | None = None

    @contextlib.contextmanager
    def _use(self, doing: str) -> Iterator[Connection]:
        if self.closed:
            raise CheckpointError("this batch has ended; open a new one")
        try:
            yield self._conn
        except psycopg.Error as exc:
            self._failed = CheckpointError(f"postgres store: {doing} failed: {exc}")
            raise self._failed from exc
        except Fenced as exc:
            self._failed = exc
            raise

    def raise_if_failed(self) -> None:
        # A failure swallowed inside the block must still cancel the whole batch (and
        # after a failed statement PostgreSQL would refuse the rest of it anyway).
        if self._failed is not None:
            raise self._failed

    def insert_events(self, events: Sequence[Event]) -> list[Event]:
        unique = unique_by_id(events)
        if not unique:
            return []
        with self._use("inserting events") as conn:
            with conn.cursor() as cur, cur.copy(_COPY_EVENTS) as copy:
                copy.set_types(["int4", *_EVENT_TYPES])
                for ord_, event in enumerate(unique.values()):
                    copy.write_row((ord_, *_pg_event_row(event)))
            inserted = {r[0] for r in conn.execute(_INSERT_EVENTS).fetchall()}
        return [e for eid, e in unique.items() if eid in inserted]

    def get_rule_state(self, key: str) -> str | None:
        with self._use("reading rule state") as conn:
            row = conn.execute("SELECT value FROM kec_rule_state WHERE key = %s", (key,))
            found = row.fetchone()
        return str(found[0]) if found else None

    def put_rule_state(self, key: str, value: str | None) -> None:
        with self._use("writing rule state") as conn:
            if value is None:
                conn.execute("DELETE FROM kec_rule_state WHERE key = %s", (key,))
            else:
                conn.execute(
                    "INSERT INTO kec_rule_state (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def add_actions(self, actions: Sequence[Action]) -> None:
        unique: dict[str, Action] = {}
        for action in actions:
            unique.setdefault(action.action_id, action)  # first occurrence wins
        if not unique:
            return
        with self._use("queueing actions") as conn:
            with conn.cursor() as cur, cur.copy(_COPY_ACTIONS) as copy:
                copy.set_types(["int4"] + ["text"] * len(ACTION_COLUMNS))
                for ord_, action in enumerate(unique.values()):
                    copy.write_row((ord_, *action_row(action)))
            conn.execute(_INSERT_ACTIONS)

    def add_dead_records(self, records: Sequence[DeadRecord]) -> None:
        if not records:
            return
        with self._use("recording dead records") as conn, conn.cursor() as cur:
            cur.executemany(  # pipelined by psycopg; dead records are few
                'INSERT INTO kec_dead_records (topic, partition, "offset", error, error_class, '
                "key, value) VALUES (%s, %s, %s, %s, %s, %s, %s) "
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
            if epochs:
                self._check_epochs(conn, epochs)
            if offsets:
                topics, parts, nexts = _columns((t, p, o) for (t, p), o in offsets.items())
                conn.execute(
                    "INSERT INTO kec_next_offsets (topic, partition, next_offset) "
                    "SELECT * FROM unnest(%b::text[], %b::int4[], %b::int8[]) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = "
                    "greatest(kec_next_offsets.next_offset, excluded.next_offset)",
                    (topics, parts, nexts),
                )

    @staticmethod
    def _check_epochs(conn: Connection, epochs: Mapping[TopicPartition, int]) -> None:
        wanted = sorted(epochs)
        topics, parts = _columns(wanted)
        # FOR SHARE: a concurrent claim waits for this batch to commit, or has committed
        # already and is seen here.
        rows = conn.execute(
            "SELECT o.topic, o.partition, o.owner, o.epoch FROM kec_partition_owners o "
            "JOIN unnest(%b::text[], %b::int4[]) AS u(t, p) ON o.topic = u.t AND "
            "o.partition = u.p ORDER BY o.topic, o.partition FOR SHARE OF o",
            (topics, parts),
        ).fetchall()
        current = {(t, p): (owner, epoch) for t, p, owner, epoch in rows}
        for tp in wanted:
            owner, epoch = current.get(tp, ("nobody", 0))
            if epoch != epochs[tp]:
                raise Fenced(
                    f"{tp[0]}[{tp[1]}]: epoch {epochs[tp]} is stale; {owner} owns it at "
                    f"epoch {epoch}",
                    (tp,),
                )
