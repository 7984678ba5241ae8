"""Durable checkpoint stores: the contract and its sqlite, postgres and memory backends.

:func:`open_store` picks the backend from a URL; nothing touches a file or a server until
the store's ``open()`` (or ``with store:``)::

    memory://                          MemoryStore (SQLite in memory, tests: nothing durable)
    sqlite:///var/lib/kec/store.db     SqliteStore at /var/lib/kec/store.db
    sqlite://data/store.db             SqliteStore at the relative path data/store.db
    /var/lib/kec/store.db              a plain path: SqliteStore
    postgresql://user@host/db?...      PostgresStore (also postgres://)

Everything after ``sqlite://`` is the path, so three slashes mean an absolute path; four
(SQLAlchemy's spelling of an absolute path) mean the same.
"""

from __future__ import annotations

from checkpoint.base import (
    SCHEMA_VERSION,
    ActionLineage,
    ActionState,
    Attempt,
    BatchTransaction,
    CheckpointStore,
    Claim,
    DeadRecord,
    DispatchStore,
    OperationsStore,
    OutboxEntry,
    Parked,
    Parking,
    PartitionInfo,
    PartitionsView,
    Pending,
    PipelineStore,
    Queued,
    Settlement,
    StepStore,
    StoredBatch,
    Tried,
)
from kec.errors import ConfigError

__all__ = [
    "SCHEMA_VERSION",
    "ActionLineage",
    "ActionState",
    "Attempt",
    "BatchTransaction",
    "CheckpointStore",
    "Claim",
    "DeadRecord",
    "DispatchStore",
    "OperationsStore",
    "OutboxEntry",
    "Parked",
    "Parking",
    "PartitionInfo",
    "PartitionsView",
    "Pending",
    "PipelineStore",
    "Queued",
    "Settlement",
    "StepStore",
    "StoredBatch",
    "Tried",
    "open_store",
]


def open_store(url: str, *, exclusive: bool = False, create: bool = True) -> CheckpointStore:
    """The store a URL names, not yet opened; raises ``ConfigError`` for an unknown scheme.

    ``exclusive``: the store of a running connector. A SQLite file then admits no second
    connector (:class:`~kec.errors.StoreLocked`); tools open it without.
    ``create=False``: tools that read a store. Opening a missing or empty SQLite file, or
    a database without the connector's tables, raises :class:`~kec.errors.StoreMissing`
    and creates nothing.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "sqlite", url
    scheme = scheme.lower()
    if scheme == "memory":
        from checkpoint.sqlite import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        if not rest:
            raise ConfigError(f"checkpoint store URL {url!r} names no file")
        from checkpoint.sqlite import SqliteStore

        if rest.startswith("//"):
            rest = "/" + rest.lstrip("/")
        return SqliteStore(rest, exclusive=exclusive, create=create)
    if scheme in ("postgresql", "postgres"):
        from checkpoint.postgres import PostgresStore

        return PostgresStore(url, create=create)
    raise ConfigError(
        f"checkpoint store URL {url!r}: unknown scheme {scheme!r} "
        "(use memory://, sqlite:///path or postgresql://...)"
    )
