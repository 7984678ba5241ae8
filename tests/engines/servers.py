"""Real engine servers for the tests: Temporal's dev server, Airflow 3, Prefect 3.

Each runs from its own venv (:mod:`tests.engines.venvs`) on free loopback ports, with its
state in a temporary folder. Every process a server starts, and every process those
start (Airflow's task supervisors put themselves in process groups of their own), is
found by a marker in its environment, by its working directory in the server's folder,
by its process group, or as a descendant of one found; :meth:`Processes.stop` sends them
SIGTERM and, after a grace period, SIGKILL to the ones still there, so nothing outlives
the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from devkit.server import free_port
from tests.engines.venvs import ensure_venv
from tests.support import ROOT

MARKER = "KEC_ENGINE_SERVER"
EXAMPLES = ROOT / "examples"


class ServerError(RuntimeError):
    """An engine server did not come up; the message holds its log's tail."""


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    pgid: int
    cwd: str
    marked: bool


def _processes(marker: str) -> list[_Proc]:
    """Every live (not zombie) process, with what tells whether it is a server's."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z":
                continue
            environ = (entry / "environ").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError):
            continue
        marked = needle in environ.split(b"\0")
        found.append(_Proc(int(entry.name), int(fields[1]), int(fields[2]), cwd, marked))
    return found


class Processes:
    """The processes of one server: started with a shared marker, stopped all together."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.marker = f"{name}-{uuid.uuid4().hex}"
        self._started: list[subprocess.Popen[bytes]] = []
        self.killed = 0  # how many processes the last stop() had to SIGKILL

    def start(
        self, label: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.log(label), "ab")  # noqa: SIM115 - the child keeps it open
        try:
            proc = subprocess.Popen(
                list(argv),
                env={**env, MARKER: self.marker},
                cwd=cwd or self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: signals reach its children
            )
        finally:
            log.close()
        self._started.append(proc)
        return proc

    def run(self, label: str, argv: Sequence[str], env: Mapping[str, str], timeout: float) -> None:
        proc = self.start(label, argv, env)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            raise ServerError(f"{self.name}: {' '.join(argv)} failed ({code}):\n{self.tail(label)}")

    def log(self, label: str) -> Path:
        return self.workdir / f"{label}.log"

    def tail(self, label: str, lines: int = 40) -> str:
        path = self.log(label)
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        for proc in self._started:
            code = proc.poll()
            if code not in (None, 0):
                raise ServerError(f"{self.name}: {proc.args!r} exited {code}")

    def members(self) -> set[int]:
        """The live processes of this server: marked in their environment, or working in
        its folder, or in the process group or below any of them. (Several are needed:
        Airflow's workers overwrite their environment block with their process title.)"""
        for proc in self._started:
            proc.poll()  # reap our own children so they leave /proc
        table = _processes(self.marker)
        groups = {p.pid for p in self._started}
        root = str(self.workdir)
        found = {
            p.pid
            for p in table
            if p.marked or p.pgid in groups or p.cwd == root or p.cwd.startswith(root + "/")
        }
        grew = True
        while grew:
            below = {p.pid for p in table if p.ppid in found} - found
            found |= below
            grew = bool(below)
        found.discard(os.getpid())
        return found

    def _signal(self, pids: set[int], sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def stop(self, grace: float = 3.0) -> int:
        """End every process of this server; return how many needed SIGKILL. The grace
        is short: a server's state is thrown away, and some of Airflow's and Prefect's
        processes sit out any grace (10 s cost 20 s a run)."""
        known = self.members()
        self._signal(known, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            # Orphans lose their parent link: keep the ones already known.
            alive = self.members() | (known & {p.pid for p in _processes(self.marker)})
            known |= alive
            if not alive:
                break
            time.sleep(0.2)
        left = self.members() | (known & {p.pid for p in _processes(self.marker)})
        self._signal(left, signal.SIGKILL)
        for proc in self._started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.killed = len(left)
        return self.killed

    def alive(self) -> list[int]:
        return sorted(self.members())


def _wait(
    what: str, procs: Processes, label: str, ready: Callable[[], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        procs.check_alive()
        if time.monotonic() > deadline:
            raise ServerError(f"{what} not ready after {timeout}s:\n{procs.tail(label)}")
        time.sleep(0.25)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _get_ok(url: str, **kwargs: object) -> bool:
    try:
        return httpx.get(url, timeout=2, **kwargs).status_code == 200  # type: ignore[arg-type]
    except httpx.HTTPError:
        return False


def _base_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


# -- Temporal -----------------------------------------------------------------------------


@dataclass
class TemporalServer:
    address: str
    namespace: str
    procs: Processes
    started_in: float

    def describe(self) -> str:
        return f"Temporal dev server at {self.address}, ready in {self.started_in:.1f}s"


@contextlib.contextmanager
def temporal_server(workdir: Path) -> Iterator[TemporalServer]:
    begun = time.monotonic()
    venv = ensure_venv("temporal")
    procs = Processes("temporal", workdir)
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    argv = [
        str(venv / "bin" / "temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--headless",
        "--port",
        str(port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
        "--db-filename",
        str(workdir / "temporal.db"),
        "--log-level",
        "warn",
    ]
    try:
        procs.start("server", argv, _base_env(venv))
        _wait("temporal", procs, "server", lambda: _port_open(port), timeout=60)
        yield TemporalServer(f"127.0.0.1:{port}", "default", procs, time.monotonic() - begun)
    finally:
        procs.stop()


# -- Airflow ------------------------------------------------------------------------------


@dataclass
class AirflowServer:
    url: str
    username: str
    password: str
    procs: Processes
    started_in: float

    def describe(self) -> str:
        return f"Airflow 3 at {self.url}, ready in {self.started_in:.1f}s"

    def token(self) -> str:
        reply = httpx.post(
            f"{self.url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        reply.raise_for_status()
        return str(reply.json()["access_token"])


@contextlib.contextmanager
def airflow_server(workdir: Path, dags: Sequence[str]) -> Iterator[AirflowServer]:
    """Airflow's components (API server, scheduler, DAG processor, triggerer) one by one:
    ``airflow standalone`` would also start log servers bound to every interface."""
    begun = time.monotonic()
    venv = ensure_venv("airflow")
    procs = Processes("airflow", workdir)
    home, dag_folder = workdir / "home", workdir / "dags"
    dag_folder.mkdir(parents=True)
    for dag in (EXAMPLES / "airflow").glob("*_dag.py"):
        shutil.copy(dag, dag_folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _base_env(venv) | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dag_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    airflow = str(venv / "bin" / "airflow")
    try:
        procs.run("migrate", [airflow, "db", "migrate"], env, timeout=300)
        procs.start("api-server", [airflow, "api-server"], env)
        procs.start("scheduler", [airflow, "scheduler", "--skip-serve-logs"], env)
        procs.start("dag-processor", [airflow, "dag-processor"], env)
        procs.start("triggerer", [airflow, "triggerer", "--skip-serve-logs"], env)
        passwords = home / "passwords.json"
        _wait("airflow api", procs, "api-server", passwords.exists, timeout=120)
        password = json.loads(passwords.read_text())["admin"]
        server = AirflowServer(url, "admin", password, procs, 0.0)
        _wait(
            "airflow api",
            procs,
            "api-server",
            lambda: _get_ok(f"{url}/api/v2/monitor/health"),
            timeout=120,
        )
        headers = {"Authorization": f"Bearer {server.token()}"}

        def ready() -> bool:
            health = httpx.get(f"{url}/api/v2/monitor/health", timeout=5).json()
            parts = ("scheduler", "triggerer", "dag_processor")
            return all(health[p]["status"] == "healthy" for p in parts) and all(
                _get_ok(f"{url}/api/v2/dags/{dag}", headers=headers) for dag in dags
            )

        _wait("airflow", procs, "scheduler", ready, timeout=180)
        server.started_in = time.monotonic() - begun
        yield server
    finally:
        procs.stop()


# -- Prefect ------------------------------------------------------------------------------


@dataclass
class PrefectServer:
    api_url: str
    procs: Processes
    started_in: float
    env: dict[str, str]
    python: Path

    def describe(self) -> str:
        return f"Prefect 3 at {self.api_url}, ready in {self.started_in:.1f}s"

    def serve(self, label: str, script: Path, deployment: str, timeout: float = 120) -> None:
        """Run ``script`` (a flow that calls ``serve``) until ``deployment`` exists."""
        self.procs.start(label, [str(self.python), str(script)], self.env)
        _wait(
            f"prefect deployment {deployment}",
            self.procs,
            label,
            lambda: _get_ok(f"{self.api_url}/deployments/name/{deployment}"),
            timeout=timeout,
        )


@contextlib.contextmanager
def prefect_server(workdir: Path) -> Iterator[PrefectServer]:
    begun = time.monotonic()
    venv = ensure_venv("prefect")
    procs = Processes("prefect", workdir)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _base_env(venv) | {
        "PREFECT_HOME": str(workdir / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_URL": api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    argv = [str(venv / "bin" / "prefect"), "server", "start", "--host", "127.0.0.1"]
    argv += ["--port", str(port)]
    try:
        procs.start("server", argv, server_env)
        _wait("prefect", procs, "server", lambda: _get_ok(f"{api_url}/health"), timeout=120)
        yield PrefectServer(api_url, procs, time.monotonic() - begun, env, venv / "bin" / "python")
    finally:
        procs.stop()
