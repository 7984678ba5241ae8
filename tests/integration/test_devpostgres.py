"""The local PostgreSQL's failure modes name their cause, and no server outlives its owner."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from devkit.errors import DevPostgresError
from devkit.postgres import DevPostgres, database_url, find_bindir, scratch_database
from devkit.server import alive
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]

needs_local_postgres = pytest.mark.skipif(
    not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
    reason="the local cluster path needs Debian's postgresql package (make installs it)",
)


def test_missing_binaries_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEC_PG_BINDIR", str(tmp_path))
    with pytest.raises(DevPostgresError, match=r"apt-get install postgresql"):
        find_bindir()
    with pytest.raises(DevPostgresError, match="not found"):
        DevPostgres().start()


@needs_local_postgres
def test_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DevPostgresError, match=rf"port {port} .*already in use"):
            DevPostgres(port=port).start()


@needs_local_postgres
def test_close_stops_the_server_and_removes_its_folder() -> None:
    server = DevPostgres()
    server.start()
    dsn = server.dsn
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time() IS NOT NULL").fetchone()
        assert row == (True,)
    scratch = server.workdir
    assert scratch is not None and (scratch / "data" / "postmaster.pid").exists()
    pid = int((scratch / "data" / "postmaster.pid").read_text().split()[0])
    server.close()
    server.close()
    assert not alive(pid)
    assert not scratch.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)


_OWNER_SCRIPT = textwrap.dedent(
    """
    import sys
    from devkit.postgres import DevPostgres

    server = DevPostgres()
    server.start()
    print(server.workdir, flush=True)
    sys.stdin.read()  # until killed
    """
)


@needs_local_postgres
def test_server_dies_with_the_process_that_started_it() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    scratch: Path | None = None
    try:
        assert owner.stdout is not None
        scratch = Path(owner.stdout.readline().strip())
        pid = int((scratch / "data" / "postmaster.pid").read_text().split()[0])
        owner.kill()  # SIGKILL: no atexit, no close()
        owner.wait(timeout=30)
        wait_for(lambda: not alive(pid), timeout=30, what="the orphaned postmaster to exit")
    finally:
        if owner.poll() is None:
            owner.send_signal(signal.SIGKILL)
            owner.wait(timeout=30)
        if owner.stdin is not None:
            owner.stdin.close()
        if owner.stdout is not None:
            owner.stdout.close()
        if scratch is not None and scratch.name.startswith("kec-pg-"):
            shutil.rmtree(scratch, ignore_errors=True)


def test_database_url_rewrites_urls_and_keyword_dsns() -> None:
    assert (
        database_url("postgresql://u:p%40ss@db.example:6543/postgres?sslmode=require", "kec_x")
        == "postgresql://u:p%40ss@db.example:6543/kec_x?sslmode=require"
    )
    assert (
        database_url("host=/run/postgresql user=app dbname=postgres", "kec_y")
        == "postgresql://app@/kec_y?host=%2Frun%2Fpostgresql"
    )


def test_scratch_database_is_fresh_and_dropped(pg_dsn: str) -> None:
    with scratch_database(pg_dsn) as url, psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None and row[0].startswith("kec_")
        name = row[0]
    with psycopg.connect(pg_dsn) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert found is None


@needs_local_postgres
def test_a_killed_server_comes_back_on_its_port_with_its_data() -> None:
    server = DevPostgres()
    server.start()
    try:
        dsn = server.dsn
        with psycopg.connect(dsn, autocommit=True) as setup:
            setup.execute("CREATE TABLE kept (n int)")
            setup.execute("INSERT INTO kept VALUES (1)")
        held = psycopg.connect(dsn, autocommit=True)
        backend = held.info.backend_pid
        server.kill()
        assert not alive(backend), "the backends die with the postmaster"
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        held.close()
        server.start()
        assert server.dsn == dsn
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
    finally:
        server.close()
