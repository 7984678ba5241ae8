"""The embedded checkpoint store: one SQLite file (the SQLite dialect of checkpoint.sql).

Durability: WAL journal with ``synchronous=FULL``, so every commit is fsynced before
``COMMIT`` returns, and one ``BEGIN IMMEDIATE`` transaction per batch, so a batch costs one
fsync however many events it holds.

Threads: two connections, each behind its own lock. The *writer* runs batches,
settlements and every other write (``BEGIN IMMEDIATE`` takes SQLite's write lock up
front, so a transaction never fails half-way on a read-to-write upgrade, and two
instances never interleave); the *reader* answers queries and, under WAL, reads the last
committed state without waiting for a write in progress. :class:`MemoryStore` is the same
on one in-memory connection (tests: nothing is durable).

One connector per file: SQLite serialises writers but cannot fence a second connector on
the same file, so a store opened ``exclusive`` (``event-connector run``) takes an
exclusive lock on ``FILE.lock`` (``flock``) for as long as it is open, and refuses to
open when another process holds it, naming that process. Tools (``status``, ``dlq``,
``replay``) open it without the lock, beside a running connector. Several connector
instances share a PostgreSQL store instead.

Identity of the file: ``PRAGMA application_id`` marks it as ours and ``PRAGMA
user_version`` holds the schema version. Random bytes or somebody else's database raise
:class:`~kec.errors.StoreCorrupt`, a newer version :class:`~kec.errors.SchemaTooNew`;
neither is ever recreated or overwritten. An empty or missing file becomes a new store
(opened with ``create=False``, as the tools do, it raises :class:`~kec.errors.StoreMissing`
instead and nothing is created), and an older schema is migrated in one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from checkpoint.base import SCHEMA_VERSION
from checkpoint.migrate import create_or_migrate, judge
from checkpoint.sql import Cursor, Dialect, Role, Sql, SqlStore
from kec.errors import CheckpointError, StoreCorrupt, StoreInUse, StoreLocked, StoreMissing
from kec.jsontext import dumps

APPLICATION_ID = 0x4B454331  # "KEC1": marks the file as a kafka-event-connector store

_TYPES = {
    "text": "TEXT",
    "int": "INTEGER",
    "real": "REAL",
    "blob": "BLOB",
    "seq": "INTEGER PRIMARY KEY",
    "without_rowid": " WITHOUT ROWID",
}

_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def _translate(exc: sqlite3.Error, where: str, doing: str) -> CheckpointError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreCorrupt(f"{where} is damaged or not a database ({exc}) while {doing}")
    return CheckpointError(f"sqlite store {where}: {doing} failed: {exc}")


class _SqliteSql(Sql):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn.executemany(sql, rows)


class SqliteDialect(Dialect):
    """SQLite: a file (writer and reader connections) or ``:memory:`` (one connection)."""

    greatest = "max"
    types = _TYPES

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        cache_mib: int = 16,
        checkpoint_pages: int = 10_000,
        exclusive: bool = False,
        create: bool = True,
    ) -> None:
        self.memory = str(path) == ":memory:"
        self._exclusive = exclusive and not self.memory
        self._may_create = create  # False: tools that read a store must not make one
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._cache_mib = cache_mib
        self._checkpoint_pages = checkpoint_pages
        self._wlock = threading.Lock()
        self._rlock = self._wlock if self.memory else threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock_file: int | None = None  # held while an exclusive store is open
        self._migration_lock: int | None = None  # held while a migration runs
        self._writer_thread: int | None = None

    def describe(self) -> str:
        return ":memory:" if self.memory else repr(str(self.path))

    @property
    def shared_write_lock(self) -> bool:
        # Opened without the file lock: the processes of one instance, or tools, write
        # too; a running connector alone holds it (exclusive).
        return not self.memory and not self._exclusive

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        with self._wlock:
            if self._writer is not None:
                return
            if not self.memory and not self._may_create and not self.path.is_file():
                raise StoreMissing(f"no checkpoint store at {self.path.absolute()}")
            if not self.memory:
                with self._errors("opening"):
                    self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._exclusive:
                self._lock_file = self._take_file_lock()
            try:
                with self._errors("opening"):
                    writer = self._connect()
                try:
                    with self._errors("opening"):
                        self._check_and_migrate(writer)
                        reader = writer if self.memory else self._connect()
                        if not self.memory:
                            reader.execute("PRAGMA query_only = ON")
                except BaseException:
                    writer.close()
                    raise
            except BaseException:
                self._release_file_lock()
                raise
            self._writer, self._reader = writer, reader

    def close(self) -> None:
        with self._wlock:
            for conn in {id(c): c for c in (self._reader, self._writer) if c}.values():
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._writer = self._reader = None
            self._release_file_lock()

    def _take_file_lock(
        self,
        why: str = "one connector per SQLite store (stop it, or share a PostgreSQL store "
        "between instances)",
        error: type[CheckpointError] = StoreLocked,
    ) -> int:
        lock_path = Path(f"{self.path}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise error(f"{self.path} is in use by {holder}: {why}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        return fd

    def _release_file_lock(self) -> None:
        fd, self._lock_file = self._lock_file, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: BEGIN/COMMIT are ours; the locks make cross-thread use safe.
        return sqlite3.connect(
            self.path if not self.memory else ":memory:",
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )

    def _check_and_migrate(self, conn: sqlite3.Connection) -> None:
        # Read-only checks first: nothing may be written to a file that is not ours, nor to
        # a store this version cannot use.
        sql = _SqliteSql(conn)
        version = judge(self.stored_version(sql), str(self.path))
        try:
            conn.execute("SELECT '[1]'->>0")  # row sources need the JSON operators
        except sqlite3.OperationalError as exc:
            raise CheckpointError(
                f"SQLite {sqlite3.sqlite_version} lacks the JSON operators this store needs "
                "(built in since SQLite 3.38)"
            ) from exc
        if not self.memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise CheckpointError(f"{self.path}: cannot use WAL journal mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA cache_size = -{self._cache_mib * 1024}")
            # A larger WAL between checkpoints: index pages dirtied by many batches are
            # copied back to the file once per checkpoint rather than nearly every batch.
            conn.execute(f"PRAGMA wal_autocheckpoint = {self._checkpoint_pages}")
            conn.execute(f"PRAGMA journal_size_limit = {self._checkpoint_pages * 4096 * 2}")
        if version == SCHEMA_VERSION:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")  # checked again under the write lock
            try:
                create_or_migrate(sql, self)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            lock, self._migration_lock = self._migration_lock, None
            if lock is not None:
                os.close(lock)

    # -- the schema (checkpoint.migrate) -------------------------------------------------

    def stored_version(self, sql: Sql) -> int:
        app_id = sql.one("PRAGMA application_id")[0]
        version = sql.one("PRAGMA user_version")[0]
        objects = sql.one("SELECT count(*) FROM sqlite_master")[0]
        if app_id == 0 and version == 0 and objects == 0:  # an empty or new file
            if not self._may_create and not self.memory:
                raise StoreMissing(f"{self.path.absolute()} is empty: not a checkpoint store")
            return 0
        if app_id != APPLICATION_ID or version < 1:
            raise StoreCorrupt(
                f"{self.path} is a SQLite database but not a kafka-event-connector "
                f"checkpoint store (application_id={app_id:#x}, user_version={version}, "
                f"{objects} schema objects); refusing to use or modify it"
            )
        return int(version)

    def refuse_older_users(self, sql: Sql, version: int) -> None:
        # A migration rewrites tables that a connector of the older version would go on
        # writing: it needs the file's connector lock (held already by an exclusive open).
        if self.memory or self._lock_file is not None or self._migration_lock is not None:
            return
        self._migration_lock = self._take_file_lock(
            why=f"its schema must move from version {version} to {SCHEMA_VERSION}: stop "
            "the older connector first",
            error=StoreInUse,
        )

    def record_version(self, sql: Sql) -> None:
        sql.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        sql.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self.describe(), doing) from exc

    @contextlib.contextmanager
    def transaction(self, role: Role, doing: str) -> Iterator[Sql]:
        if self._writer_thread == threading.get_ident():
            # The lock is not re-entrant: writing from inside one's own transaction
            # would deadlock, so say so instead.
            raise CheckpointError("store written to from inside this thread's own transaction")
        with self._wlock:
            conn = self._writer
            if conn is None:
                raise CheckpointError(f"the sqlite store {self.describe()} is not open")
            self._writer_thread = threading.get_ident()
            try:
                with self._errors(doing):
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield _SqliteSql(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            with contextlib.suppress(sqlite3.Error):
                                conn.execute("ROLLBACK")
                        raise
            finally:
                self._writer_thread = None

    @contextlib.contextmanager
    def reading(self, role: Role, doing: str) -> Iterator[Sql]:
        if self.memory and self._writer_thread == threading.get_ident():
            raise CheckpointError("store read from inside this thread's own transaction")
        with self._rlock, self._errors(doing):
            if self._reader is None:
                raise CheckpointError(f"the sqlite store {self.describe()} is not open")
            yield _SqliteSql(self._reader)

    # -- SQL forms -----------------------------------------------------------------------

    def rows(self, types: Sequence[str], alias: str = "r") -> str:
        columns = ", ".join(f"value->>{i} AS c{i}" for i in range(len(types)))
        return f"(SELECT {columns} FROM json_each(?)) AS {alias}"

    def rows_params(self, rows: Sequence[Sequence[Any]], types: Sequence[str]) -> list[Any]:
        # kec.jsontext: orjson's speed (a batch's rule-state keys and values go through
        # here, twice for a correlation rule), json's text wherever orjson cannot write it.
        return [dumps([list(r) for r in rows])]

    def lock_keys(self, sql: Sql, keys: Sequence[str]) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the database's one write lock."""


class SqliteStore(SqlStore):
    """A checkpoint store in one SQLite file; nothing touches the file before ``open()``."""

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(SqliteDialect(path, **options))
        self._path = Path(path)

    @property
    def path(self) -> Path:
        return self._path


class MemoryStore(SqlStore):
    """SQLite in memory, for tests: the same store, nothing durable, one connection."""

    def __init__(self) -> None:
        super().__init__(SqliteDialect(":memory:"))
