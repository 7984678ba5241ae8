"""The shared checkpoint store: PostgreSQL through psycopg 3 (the PostgreSQL dialect).

Several connector instances in one consumer group share it. Each transaction is committed
with ``synchronous_commit=on`` (the commit returns once the WAL is flushed).

Connections: one per role (:class:`~checkpoint.sql.Role`), each behind a lock: the
pipeline's batches and claims, the dispatcher's settlements, and the tools. A broken
connection is replaced on its next use. Tables carry a ``kec_`` prefix and live in the
connection's current schema; ``kec_meta`` records the application and the schema
version.

Rule state shared by several partitions is serialised with transaction-scoped advisory
locks taken on the sorted keys before they are read, so two owners completing the same
``all_of`` set take turns and neither update is lost.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from checkpoint.base import SCHEMA_VERSION
from checkpoint.migrate import TABLES, V4_CHANGES, V2Contents, write_v3
from checkpoint.records import action_from_row, decode_headers
from checkpoint.sql import Cursor, Dialect, Role, Sql, SqlStore
from kec.errors import CheckpointError, SchemaTooNew, StoreCorrupt, StoreInUse, StoreMissing
from kec.event import Event

APPLICATION = "kafka-event-connector"
# Each connection says which schema version its code writes, so a migration can see
# connections of older versions (pg_stat_activity) and refuse to run under them.
CLIENT_NAME = f"{APPLICATION}/v{SCHEMA_VERSION}"
_SCHEMA_LOCK = 0x4B45435F534348  # advisory lock serialising schema creation and migration
Connection = psycopg.Connection[tuple[Any, ...]]

_TYPES = {
    "text": 'text COLLATE "C"',
    "int": "bigint",
    "real": "double precision",
    "blob": "bytea",
    "seq": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "without_rowid": "",
}
_ARRAYS = {"text": "text[]", "int": "int8[]", "real": "float8[]"}

# Version 1 and 2 tables, kept so that old stores can be walked up to version 3.
_OLD: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE kec_meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE kec_events (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id text COLLATE "C" NOT NULL UNIQUE, key text NOT NULL,
            value bytea NOT NULL, value_is_text boolean NOT NULL, namespace text NOT NULL,
            sender text, context text, event_type text, create_time bigint NOT NULL,
            headers text, topic text, partition integer, "offset" bigint)""",
        """CREATE TABLE kec_next_offsets (
            topic text NOT NULL, partition integer NOT NULL, next_offset bigint NOT NULL,
            PRIMARY KEY (topic, partition))""",
        """CREATE TABLE kec_partition_owners (
            topic text NOT NULL, partition integer NOT NULL,
            owner text NOT NULL, epoch bigint NOT NULL,
            claimed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (topic, partition))""",
        """CREATE TABLE kec_outbox (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            action_id text COLLATE "C" NOT NULL UNIQUE,
            rule text NOT NULL, kind text NOT NULL, target text NOT NULL,
            namespace text NOT NULL, event_ids text NOT NULL, event_key text NOT NULL,
            workflow text, task text, context text, payload text,
            state text NOT NULL DEFAULT 'pending', attempts integer NOT NULL DEFAULT 0,
            next_attempt_at double precision NOT NULL DEFAULT 0, last_error text)""",
        "CREATE INDEX kec_outbox_state_seq ON kec_outbox (state, seq)",
        "CREATE TABLE kec_rule_state (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE kec_dead_records (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            topic text NOT NULL, partition integer NOT NULL, "offset" bigint NOT NULL,
            error text NOT NULL, error_class text NOT NULL, key bytea, value bytea,
            UNIQUE (topic, partition, "offset"))""",
        "CREATE TABLE kec_steps (step_id text PRIMARY KEY, event text NOT NULL)",
    ),
    2: (
        "ALTER TABLE kec_events ADD COLUMN stored_at double precision NOT NULL "
        "DEFAULT extract(epoch FROM now())",
        "ALTER TABLE kec_outbox ADD COLUMN queued_at double precision NOT NULL "
        "DEFAULT extract(epoch FROM now())",
    ),
}
_V2_TABLES = ("kec_events", "kec_next_offsets", "kec_partition_owners", "kec_outbox",
              "kec_rule_state", "kec_dead_records", "kec_steps")  # fmt: skip


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


class _PostgresSql(Sql):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)


class _Session:
    """One connection for one role, behind a lock; replaced when it broke."""

    def __init__(self, dialect: PostgresDialect, role: Role) -> None:
        self._dialect = dialect
        self._role = role
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._holder: int | None = None
        self.is_open = False

    def close(self) -> None:
        with self._lock:
            conn, self._conn, self.is_open = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    @contextlib.contextmanager
    def use(self) -> Iterator[Connection]:
        if self._holder == threading.get_ident():
            raise CheckpointError(
                f"the {self._role.value} connection is in use by this thread's transaction"
            )
        with self._lock:
            if not self.is_open:
                raise CheckpointError("the postgres store is not open")
            conn = self._conn
            if conn is None or conn.broken or conn.closed:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    self._conn = None
                conn = self._conn = self._dialect.connect()
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


class PostgresDialect(Dialect):
    greatest = "greatest"

    def __init__(
        self,
        dsn: str,
        *,
        connect_timeout: int = 10,
        application_name: str = CLIENT_NAME,
        create: bool = True,
    ) -> None:
        self._dsn = dsn
        self._may_create = create  # False: tools that read a store must not make one
        self._connect_timeout = connect_timeout
        self._application_name = application_name
        self._sessions = {role: _Session(self, role) for role in Role}

    def describe(self) -> str:
        return "postgresql"  # never the DSN: it may hold a password

    def connect(self) -> Connection:
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
            except BaseException:
                conn.close()
                raise
        return conn

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        for session in self._sessions.values():
            session.is_open = True
        try:
            with self._sessions[Role.OPS].use() as conn, _errors("checking the schema"):
                self._check_and_migrate(conn)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()

    def _check_and_migrate(self, conn: Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            version = self._stored_version(conn)
            if version == 0 and not self._may_create:
                raise StoreMissing("the database has no kafka-event-connector checkpoint tables")
            if version == SCHEMA_VERSION:
                return
            if version == 0:
                conn.execute(_OLD[1][0])  # kec_meta
                self._create(conn)
            else:
                self._refuse_older_clients(conn, version)
            if 0 < version < 3:
                for step in range(version + 1, 3):
                    for statement in _OLD[step]:
                        conn.execute(statement)
                old = self._read_v2(conn)
                for table in _V2_TABLES:
                    conn.execute(f"DROP TABLE {table}")
                self._create(conn)
                write_v3(_PostgresSql(conn), old)
            elif version == 3:
                for statement in V4_CHANGES:
                    conn.execute(statement.format(**_TYPES))
            conn.execute(
                "INSERT INTO kec_meta (key, value) VALUES ('application', %s), "
                "('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (APPLICATION, str(SCHEMA_VERSION)),
            )

    @staticmethod
    def _create(conn: Connection) -> None:
        for statement in TABLES:
            conn.execute(statement.format(**_TYPES))

    @staticmethod
    def _refuse_older_clients(conn: Connection, version: int) -> None:
        """A migration rewrites tables that instances of the older version would go on
        writing (and lose rows of): refuse while any of them is connected."""
        older = conn.execute(
            "SELECT application_name, coalesce(host(client_addr), 'local'), pid "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND application_name LIKE %s "
            "AND application_name <> %s ORDER BY pid",
            (f"{APPLICATION}%", CLIENT_NAME),
        ).fetchall()
        if older:
            who = ", ".join(f"{name} from {addr} (backend pid {pid})" for name, addr, pid in older)
            raise StoreInUse(
                f"the store's schema must move from version {version} to {SCHEMA_VERSION}, but "
                f"{len(older)} connection(s) of an older version still use it: {who}. Stop "
                "every older connector and tool, then start this version again"
            )

    @staticmethod
    def _read_v2(conn: Connection) -> V2Contents:
        old = V2Contents()
        old.offsets = {
            (t, p): o for t, p, o in conn.execute("SELECT * FROM kec_next_offsets").fetchall()
        }
        old.owners = {
            (t, p): (owner, epoch)
            for t, p, owner, epoch in conn.execute(
                "SELECT topic, partition, owner, epoch FROM kec_partition_owners"
            ).fetchall()
        }
        for row in conn.execute(
            "SELECT event_id, key, value, value_is_text, namespace, sender, context, "
            'event_type, create_time, headers, topic, partition, "offset", stored_at '
            "FROM kec_events ORDER BY seq"
        ):
            eid, key, raw, is_text, ns, sender, ctx, etype, ctime, headers = row[:10]
            topic, part, off, at = row[10:]
            value = bytes(raw).decode("utf-8", "surrogatepass") if is_text else bytes(raw)
            event = Event(
                key=key, value=value, namespace=ns, sender=sender, context=ctx,
                event_type=etype, create_time=ctime,
                headers=decode_headers(json.loads(headers) if headers else None),
                topic=topic, partition=part, offset=off, event_id=eid,
            )  # fmt: skip
            old.events.append((event, float(at)))
        for row in conn.execute(
            "SELECT action_id, rule, kind, target, namespace, event_ids, event_key, workflow, "
            "task, context, payload, state, attempts, next_attempt_at, last_error "
            "FROM kec_outbox ORDER BY seq"
        ):
            aid, rule, kind, target, ns, ids, key, wf, task, ctx, payload = row[:11]
            event_ids = json.loads(ids) if ids.startswith("[") else [ids]
            action = action_from_row(
                (aid, rule, kind, target, ns, event_ids, key, wf, task, ctx,
                 json.loads(payload) if payload else None)
            )  # fmt: skip
            old.actions.append((action, row[11], row[12], float(row[13]), row[14]))
        old.rule_state = conn.execute("SELECT key, value FROM kec_rule_state").fetchall()
        old.dead_records = [
            (t, p, o, err, cls, _bytes(k), _bytes(v))
            for t, p, o, err, cls, k, v in conn.execute(
                'SELECT topic, partition, "offset", error, error_class, key, value '
                "FROM kec_dead_records ORDER BY seq"
            ).fetchall()
        ]
        old.steps = conn.execute("SELECT step_id, event FROM kec_steps").fetchall()
        return old

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

    # -- connections ---------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, role: Role, doing: str) -> Iterator[Sql]:
        with self._sessions[role].use() as conn, _errors(doing), conn.transaction():
            yield _PostgresSql(conn)

    @contextlib.contextmanager
    def reading(self, role: Role, doing: str) -> Iterator[Sql]:
        with self._sessions[role].use() as conn, _errors(doing):
            yield _PostgresSql(conn)

    # -- SQL forms -----------------------------------------------------------------------

    def rows(self, types: Sequence[str], alias: str = "r") -> str:
        arrays = ", ".join(f"?::{_ARRAYS[t]}" for t in types)
        columns = ", ".join(f"c{i}" for i in range(len(types)))
        return f"unnest({arrays}) AS {alias}({columns})"

    def rows_params(self, rows: Sequence[Sequence[Any]], types: Sequence[str]) -> list[Any]:
        if not rows:
            return [[] for _ in types]
        return [list(column) for column in zip(*rows, strict=True)]

    def lock_keys(self, sql: Sql, keys: Sequence[str]) -> None:
        # Sorted, so two transactions locking overlapping keys cannot deadlock.
        sql.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
            "FROM unnest(?::text[]) AS k ORDER BY k",
            (sorted(keys),),
        )


class PostgresStore(SqlStore):
    """A checkpoint store in a PostgreSQL database; connects in ``open()``."""

    def __init__(self, dsn: str, **options: Any) -> None:
        super().__init__(PostgresDialect(dsn, **options))

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # never print the DSN: it may hold a password
