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

A transaction left open by a client that stopped answering (a process frozen by SIGSTOP
or a VM pause, a host cut off) would keep its row and advisory locks for as long as the
server keeps the connection: every other instance's claim of those partitions, and every
transaction on those keys, would wait for it, and the whole group with them. So each
session sets ``idle_in_transaction_session_timeout``
(:data:`IDLE_TRANSACTION_TIMEOUT`): the server ends a transaction idle that long, its
locks go, and the frozen client, if it ever wakes, finds its connection closed, its
transaction undone (nothing of it was durable) and its partitions fenced. The client
sends TCP keepalives and bounds unacknowledged writes (``tcp_user_timeout``) so that a
server that vanished from the network is noticed too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg.conninfo

from checkpoint.base import SCHEMA_VERSION
from checkpoint.migrate import create_or_migrate
from checkpoint.sql import Cursor, Dialect, Role, Sql, SqlStore
from kec.errors import CheckpointError, StoreCorrupt, StoreInUse, StoreMissing, StoreRefused

APPLICATION = "kafka-event-connector"
# Each connection says which schema version its code writes, so a migration can see
# connections of older versions (pg_stat_activity) and refuse to run under them.
CLIENT_NAME = f"{APPLICATION}/v{SCHEMA_VERSION}"
_SCHEMA_LOCK = 0x4B45435F534348  # advisory lock serialising schema creation and migration
# Seconds a transaction may sit idle (its client sending nothing) before the server ends
# it: well above the longest pause between two statements of one transaction (the rules
# evaluated for a batch), below Kafka's default session timeout (45 s), after which the
# frozen client's partitions are claimed by others.
IDLE_TRANSACTION_TIMEOUT = 30.0
# libpq's TCP settings, unless the DSN gives its own: a dead peer is found in about 25 s
# when idle, and a request unacknowledged for 30 s ends the connection.
_TCP: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms
}
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


# What the server or libpq says when the settings, not the moment, are wrong; and the
# setting to look at. Matched on libpq's words (its errors carry no code before login).
_REFUSALS = (
    ("password authentication failed", "the password of the DSN's user (checkpoint.dsn)"),
    ("no password supplied", "the DSN's password (checkpoint.dsn): the server asks for one"),
    ("does not match host name", "the DSN's host: the server's certificate names another"),
    ("certificate verify failed", "sslrootcert in checkpoint.dsn: it does not trust the "
     "server's certificate"),
    ("root certificate file", "sslrootcert in checkpoint.dsn (the CA file to verify the "
     "server with)"),
    ("no encryption", "sslmode in checkpoint.dsn: the server accepts TLS only "
     "(sslmode=verify-full with sslrootcert)"),
    ("no pg_hba.conf entry", "the server's pg_hba.conf: it lets no such connection in"),
)  # fmt: skip


@contextlib.contextmanager
def _errors(doing: str) -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as exc:
        text = str(exc)
        for words, look_at in _REFUSALS:
            if words in text:
                last = text.strip().splitlines()[0].rsplit("failed: ", 1)[-1]
                raise StoreRefused(f"postgres store refused: {last}; check {look_at}") from exc
        raise CheckpointError(f"postgres store: {doing} failed: {exc}") from exc
    except psycopg.Error as exc:
        raise CheckpointError(f"postgres store: {doing} failed: {exc}") from exc


class PostgresDialect(Dialect):
    greatest = "greatest"
    types = _TYPES

    def __init__(
        self,
        dsn: str,
        *,
        connect_timeout: int = 10,
        application_name: str = CLIENT_NAME,
        create: bool = True,
        idle_transaction_timeout: float = IDLE_TRANSACTION_TIMEOUT,
    ) -> None:
        self._dsn = dsn
        self._may_create = create  # False: tools that read a store must not make one
        self._connect_timeout = connect_timeout
        self._idle_ms = max(1, int(idle_transaction_timeout * 1000))
        given = psycopg.conninfo.conninfo_to_dict(dsn)  # the DSN's own settings win
        self._tcp: dict[str, Any] = {k: v for k, v in _TCP.items() if k not in given}
        self._application_name = application_name
        self._sessions = {role: _Session(self, role) for role in Role}

    def describe(self) -> str:
        return "the PostgreSQL store"  # never the DSN: it may hold a password

    def connect(self) -> Connection:
        """A new connection with the settings every session relies on."""
        with _errors("connecting"):
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,  # transactions are explicit: conn.transaction()
                connect_timeout=self._connect_timeout,
                application_name=self._application_name,
                **self._tcp,
            )
            try:
                conn.execute("SET synchronous_commit = on")
                conn.execute(f"SET idle_in_transaction_session_timeout = {self._idle_ms}")
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
            create_or_migrate(_PostgresSql(conn), self)

    # -- the schema (checkpoint.migrate) -------------------------------------------------

    def stored_version(self, sql: Sql) -> int:
        row = sql.one("SELECT to_regclass('kec_meta') IS NOT NULL")
        if not (row and row[0]):
            found = sql.one(
                "SELECT string_agg(tablename, ', ' ORDER BY tablename) FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename LIKE ?",
                ("kec\\_%",),
            )
            if found and found[0]:
                raise StoreCorrupt(
                    f"the database has tables {found[0]} but no kec_meta: not a "
                    "kafka-event-connector store, or a damaged one; refusing to touch it"
                )
            if not self._may_create:
                raise StoreMissing("the database has no kafka-event-connector checkpoint tables")
            return 0
        meta: dict[str, str] = dict(sql.all("SELECT key, value FROM kec_meta"))
        version_text = meta.get("schema_version", "")
        if meta.get("application") != APPLICATION or not version_text.isdigit():
            raise StoreCorrupt(
                f"kec_meta does not describe a {APPLICATION} checkpoint store ({meta!r}); "
                "refusing to touch it"
            )
        return int(version_text)

    def refuse_older_users(self, sql: Sql, version: int) -> None:
        # A migration rewrites tables that instances of the older version would go on
        # writing (and lose rows of): refuse while any of them is connected. Newer ones
        # wait on the schema lock this transaction holds.
        older = sql.all(
            "SELECT application_name, coalesce(host(client_addr), 'local'), pid "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND application_name LIKE ? "
            "AND application_name <> ? ORDER BY pid",
            (f"{APPLICATION}%", CLIENT_NAME),
        )
        if older:
            who = ", ".join(f"{name} from {addr} (backend pid {pid})" for name, addr, pid in older)
            raise StoreInUse(
                f"the store's schema must move from version {version} to {SCHEMA_VERSION}, but "
                f"{len(older)} connection(s) of an older version still use it: {who}. Stop "
                "every older connector and tool, then start this version again"
            )

    def record_version(self, sql: Sql) -> None:
        sql.execute(
            "CREATE TABLE IF NOT EXISTS kec_meta (key text PRIMARY KEY, value text NOT NULL)"
        )
        sql.execute(
            "INSERT INTO kec_meta (key, value) VALUES ('application', ?), "
            "('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (APPLICATION, str(SCHEMA_VERSION)),
        )

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
