"""A PostgreSQL that requires what production ones do (TLS, SCRAM passwords), for the
integration tests: the server, started once per session, and fresh databases on it that a
SCRAM user reaches only with ``sslmode=verify-full``."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from devkit.postgres import DevPostgres

PASSWORD = "scram-pw-4f1c"
USER = "connector"


@pytest.fixture(scope="session")
def secure_pg() -> Iterator[DevPostgres]:
    """``DevPostgres(tls=True)`` with the role ``connector`` (SCRAM) owning database ``kec``."""
    server = DevPostgres(tls=True)
    server.start()
    try:
        server.create_user(USER, PASSWORD, database="kec")
        yield server
    finally:
        server.close()


def tls_url(
    server: DevPostgres, *, password: str = PASSWORD, tls: str | None = None, db: str = "kec"
) -> str:
    """The URL of ``db`` as the SCRAM user, over TLS verified against the session's CA."""
    port = server.dsn.rsplit(":", 1)[1].split("/", 1)[0]
    tls = tls if tls is not None else f"sslmode=verify-full&sslrootcert={server.ca}"
    return f"postgresql://{USER}:{password}@localhost:{port}/{db}?{tls}"


@pytest.fixture
def tls_pg_store_url(secure_pg: DevPostgres) -> Iterator[Callable[[], str]]:
    """Factory: a fresh database owned by the SCRAM user, its verify-full URL; dropped after."""
    made: list[str] = []

    def make() -> str:
        name = f"kec_tls_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(secure_pg.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(USER)
                )
            )
        made.append(name)
        return tls_url(secure_pg, db=name)

    yield make
    with psycopg.connect(secure_pg.dsn, autocommit=True) as admin:
        for name in made:
            with contextlib.suppress(psycopg.Error):
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
