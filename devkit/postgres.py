"""A real PostgreSQL server for development and tests (see docs/architecture.md).

Where the server comes from, in order (:func:`provide_postgres`; ``KEC_POSTGRES=external|
docker|local`` forces one, see :mod:`devkit.containers`):

1. ``PG_DSN`` is set: that server, untouched.
2. A Docker engine answers and has the project's PostgreSQL image (``make images``): a
   container, started with testcontainers. An engine without the image, or a container
   that fails to start, falls back to 3 with one log line.
3. Otherwise: a throwaway cluster from Debian's ``postgresql`` package
   (:class:`DevPostgres`): ``initdb`` in a scratch folder, the server on a free loopback
   port with trust authentication. ``initdb`` refuses to run as root, so as root both run
   as the ``postgres`` system user, which owns the scratch folder.

Every failure to start names its cause (no server binaries, no ``postgres`` user, initdb
failed, port in use, server exited, timeout) in a :class:`~devkit.errors.DevPostgresError`;
nothing waits without a bound. The server is stopped with ``pg_ctl stop -m immediate`` on
:meth:`DevPostgres.close` and at interpreter exit, and (Linux) receives SIGQUIT, its
immediate-shutdown signal, from the kernel when the starting process dies, so no server
outlives its owner.

:func:`scratch_database` gives a test (or a benchmark) a database of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pwd
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from devkit import containers
from devkit.errors import DevPostgresError, DockerUnavailable
from devkit.project import postgres_image
from devkit.server import LocalServer, alive, free_port, poll_until

log = logging.getLogger(__name__)
SERVER_USER = "postgres"  # the system user that runs the server when we are root


@dataclass(frozen=True)
class PostgresServer:
    """Where a PostgreSQL server answers (as a superuser) and what it is."""

    dsn: str
    kind: str  # "external", "testcontainers" or "local"
    version: str
    why: str = ""  # why this source was chosen, in a few words

    def describe(self) -> str:
        """A one-line summary without credentials."""
        info = conninfo_to_dict(self.dsn)
        where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
        return f"PostgreSQL {self.version} ({self.kind}) at {where}"


def find_bindir() -> Path:
    """The folder with ``initdb``, ``postgres`` and ``pg_ctl``: ``KEC_PG_BINDIR``, else the
    newest ``/usr/lib/postgresql/*/bin`` (Debian's layout)."""
    override = os.environ.get("KEC_PG_BINDIR")
    candidates = (
        [Path(override)]
        if override
        else sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)],
            reverse=True,
        )
    )
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "postgres", "pg_ctl")):
            return bindir
    where = override or "/usr/lib/postgresql/*/bin"
    raise DevPostgresError(
        f"PostgreSQL server binaries (initdb, postgres, pg_ctl) not found in {where}: "
        "install them (apt-get install postgresql), run 'make test' which installs them, "
        "or point PG_DSN at a running server"
    )


class DevPostgres(LocalServer[PostgresServer]):
    """A throwaway PostgreSQL cluster in a scratch folder, as a child process.

    ``start()`` runs initdb, starts the server and returns once it accepts a connection;
    ``close()`` stops it (``pg_ctl stop -m immediate``) and removes the folder. The life
    cycle is :class:`~devkit.server.LocalServer`'s: call ``start()`` from a thread that
    outlives the server, as the kernel's parent-death signal follows the starting thread.

    ``kill()`` crashes the server (for tests of what a store outage does) and keeps its
    folder; ``start()`` then brings the same cluster back on the same port, through
    PostgreSQL's crash recovery.
    """

    error = DevPostgresError
    what = "the PostgreSQL server"
    not_ready = "PostgreSQL did not accept connections"
    bind_failures = ("could not bind", "Address already in use")
    death_signal = signal.SIGQUIT  # the postmaster's immediate shutdown
    stop_timeout = 15.0

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 60.0,
        tls: bool = False,
    ) -> None:
        """``tls``: also the setting production asks for, TLS with SCRAM passwords: the
        server presents a certificate for localhost and 127.0.0.1 signed by :attr:`ca`,
        and every user but ``postgres`` (trusted on loopback, for the fixtures) must come
        over TLS with a SCRAM-SHA-256 password (:meth:`create_user`); plain TCP is refused
        to them."""
        super().__init__(start_timeout=start_timeout)
        self._bindir = bindir
        self._port = port
        self._tls = tls
        self._account: pwd.struct_passwd | None = None
        self._version = "unknown"

    @property
    def dsn(self) -> str:
        if self._proc is None or self._port is None:
            raise DevPostgresError("the dev PostgreSQL server is not running")
        return f"postgresql://postgres@127.0.0.1:{self._port}/postgres"

    @property
    def ca(self) -> Path:
        """The CA certificate that signed the server's (``tls`` only)."""
        if not self._tls or self._scratch is None:
            raise DevPostgresError("the dev PostgreSQL server runs without TLS")
        return self._scratch / "tls" / "ca.pem"

    def create_user(self, name: str, password: str, *, database: str | None = None) -> None:
        """A login role with a SCRAM-SHA-256 password, and ``database`` owned by it."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            if database is not None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(name)
                    )
                )

    def server(self) -> PostgresServer:
        return PostgresServer(self.dsn, "local", self._version)

    def _describe(self) -> PostgresServer:
        return self.server()

    def _ports(self) -> list[int | None]:
        return [self._port]

    def _log_files(self) -> list[Path]:
        assert self._scratch is not None
        return [self._scratch / "postgres.log"]

    def _start(self) -> None:
        bindir = self._bindir or find_bindir()
        self._check_free({"port": self._port})
        if self._scratch is None:  # else killed: the same cluster again
            self._port = self._port or free_port()
            self._account = self._server_account()
            made = self._scratch_dir("kec-pg-")
            if self._account is not None:
                os.chown(made, self._account.pw_uid, self._account.pw_gid)
            try:
                self._initdb(bindir)
                if self._tls:
                    self._secure()
            except BaseException:
                self.close()
                raise
        scratch = self._scratch
        assert scratch is not None
        cmd = [
            str(bindir / "postgres"), "-D", str(scratch / "data"),
            "-p", str(self._port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={scratch}",
            "-c", "max_connections=60",
            "-c", "shared_buffers=64MB",
            "-c", "logging_collector=off",
        ]  # fmt: skip
        if self._tls:
            tls = scratch / "tls"
            cmd += [
                "-c", "ssl=on",
                "-c", f"ssl_cert_file={tls / 'broker.pem'}",
                "-c", f"ssl_key_file={tls / 'broker.key'}",
                "-c", "password_encryption=scram-sha-256",
            ]  # fmt: skip
        self._launch(cmd, log=scratch / "postgres.log", cwd=scratch, account=self._account)

    @staticmethod
    def _server_account() -> pwd.struct_passwd | None:
        """The account to run as: ``postgres`` when we are root, else ourselves (None)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise DevPostgresError(
                f"running as root, and initdb refuses root, but there is no {SERVER_USER!r} "
                "system user to run the server as (the Debian postgresql package creates it)"
            ) from None

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the server account, output captured."""
        acct = self._account
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False,
            cwd=self._scratch,
            user=acct.pw_uid if acct else None,
            group=acct.pw_gid if acct else None,
            extra_groups=[] if acct else None,
        )  # fmt: skip

    def _initdb(self, bindir: Path) -> None:
        assert self._scratch is not None
        cmd = [
            str(bindir / "initdb"), "-D", str(self._scratch / "data"), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync",
        ]  # fmt: skip
        try:
            done = self._run(cmd, timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise DevPostgresError("initdb did not finish within 120s") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise DevPostgresError(f"initdb failed (exit {done.returncode}):\n{tail}")

    def _secure(self) -> None:
        """Certificates for the session (devkit.security's), owned by the server account
        (PostgreSQL refuses a key others may read), and the access rules of ``tls``."""
        from devkit.security import material

        assert self._scratch is not None
        made = material(self._scratch / "tls")
        acct = self._account
        for path in (made.folder, *made.folder.iterdir()):
            if acct is not None:
                os.chown(path, acct.pw_uid, acct.pw_gid)
        os.chmod(made.broker_key, 0o600)
        hba = self._scratch / "data" / "pg_hba.conf"
        hba.write_text(
            "# devkit: postgres is trusted on loopback (fixtures); everyone else comes over\n"
            "# TLS with a SCRAM password, and never in plain TCP.\n"
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        if acct is not None:
            os.chown(hba, acct.pw_uid, acct.pw_gid)

    def _ready(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                self._version = str(row[0]) if row else "unknown"
        except psycopg.OperationalError as exc:  # not accepting connections yet
            self._last_error = str(exc)
            return False
        return True

    def _crash(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the server and its backends at once, as a power cut would stop them (no
        shutdown checkpoint, connections dropped mid-transaction). Linux only (it reads
        /proc)."""
        # Backends run in sessions of their own, so a process group is not enough: the
        # postmaster is frozen first (it forks no more), then it and its children die.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)
        children = _children(proc.pid)
        for pid in [*children, proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # A backend still attached to the shared memory would make the next start refuse.
        poll_until(lambda: not any(alive(pid) for pid in children), timeout=10, interval=0.05)

    def _request_stop(self, proc: subprocess.Popen[bytes]) -> None:
        """``pg_ctl stop -m immediate``: the postmaster and its backends, at once."""
        assert self._scratch is not None
        bindir = self._bindir or find_bindir()
        data = str(self._scratch / "data")
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._run(
                [str(bindir / "pg_ctl"), "stop", "-D", data, "-m", "immediate", "-w", "-t", "15"],
                timeout=30,
            )


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


@contextlib.contextmanager
def provide_postgres(*, start_timeout: float = 60.0) -> Iterator[PostgresServer]:
    """Yield a running PostgreSQL chosen as the module docstring says; stop what was started."""
    try:
        choice = containers.choose("postgres", postgres_image)
    except DockerUnavailable as exc:
        raise DevPostgresError(str(exc)) from exc
    if choice.source == "external":
        external = os.environ["PG_DSN"]
        yield PostgresServer(external, "external", _server_version(external), choice.reason)
        return
    why = choice.reason
    if choice.source == "docker":
        container = containers.PostgresContainer(choice.image, start_timeout=max(start_timeout, 90))
        failed = containers.start_or_fall_back(container, choice, "a local server")
        if failed is None:
            try:
                dsn = container.dsn
                yield PostgresServer(dsn, "testcontainers", _server_version(dsn), why)
            finally:
                container.close()
            return
        why = failed
    log.info("PostgreSQL: a local server (%s)", why)
    with DevPostgres(start_timeout=start_timeout) as server:
        yield dataclasses.replace(server.server(), why=why)


def _server_version(dsn: str) -> str:
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        raise DevPostgresError(f"PostgreSQL at PG_DSN does not answer: {exc}") from exc
    return str(row[0]) if row else "unknown"


def database_url(dsn: str, dbname: str) -> str:
    """``dsn`` (a URL or ``key=value`` string) pointed at another database, as a URL."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    params.pop("dbname", None)
    user, password = params.pop("user", ""), params.pop("password", "")
    host, port = params.pop("host", ""), params.pop("port", "")
    netloc = ""
    if user:
        netloc = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + "@"
    elif password:
        params["password"] = password
    if host and not host.startswith("/") and "," not in host:
        netloc += f"[{host}]" if ":" in host else host
        netloc += f":{port}" if port else ""
    else:  # a socket folder or a host list only fits in the query string
        params.update({k: v for k, v in (("host", host), ("port", port)) if v})
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


@contextlib.contextmanager
def scratch_database(dsn: str, *, prefix: str = "kec_") -> Iterator[str]:
    """Create a uniquely named database on the server ``dsn`` reaches; yield its URL; drop it."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            # WITH (FORCE) (PostgreSQL 13+) ends sessions a failed test left behind.
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            ))  # fmt: skip
