"""The life cycle every local development server shares (the Kafka broker, PostgreSQL).

A :class:`LocalServer` is one server run as a child process of this one:

* ``start()`` prepares it (a subclass's :meth:`~LocalServer._start`) and launches it in a
  session of its own, its output in a log file in its scratch folder, then waits until it
  serves (:meth:`~LocalServer._ready`), with a bound. A child that exits meanwhile, or is
  not ready in time, is the subclass's error, naming the cause (a taken port when the log
  says so) with the last lines of its logs; the child is stopped first.
* It dies with its owner: the kernel sends it :attr:`~LocalServer.death_signal` when the
  thread that started it dies (Linux), and :meth:`~LocalServer.close` runs at interpreter
  exit. Start it from a thread that outlives it.
* ``close()`` stops it (:meth:`~LocalServer._request_stop`, then SIGKILL to its process
  group after :attr:`~LocalServer.stop_timeout`) and removes a scratch folder it made;
  it can be called more than once.
* ``kill()`` crashes it, as a power cut would, and keeps its data and ports: ``start()``
  then brings the same server back through its own recovery (for tests of outages).

Nothing happens in a constructor. Waits here poll a condition with a bound
(:func:`poll_until`); so do the containers of :mod:`devkit.containers`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Generic, Self, TypeVar

from devkit.errors import DevkitError

_PR_SET_PDEATHSIG = 1

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_taken(port: int) -> bool:
    """Whether a server listens on ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a server binds: connections of a server that just stopped (TIME_WAIT) do not
        # make the port taken, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def poll_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    check: Callable[[], None] = lambda: None,
    interval: float = 0.1,
) -> bool:
    """Ask ``ready`` every ``interval`` seconds until it says yes (True) or ``timeout``
    seconds have passed (False). ``check`` runs before each question and raises when
    waiting longer is pointless (the server exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        if ready():
            return True
        time.sleep(interval)
    return False


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, its memory released, does not). Linux: it
    reads /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn`` that asks the kernel to send ``sig`` to the child when the thread
    that started it dies. It runs in the child after any switch of user (which would clear
    the request) and before exec."""

    def request() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return request


class LocalServer(Generic[T]):
    """A development server as a child process; ``T`` says where it answers.

    Subclasses set the class attributes and implement :meth:`_start` (prepare, then
    :meth:`_launch`), :meth:`_ready`, :meth:`_log_files`, :meth:`_ports` and
    :meth:`_describe`; they may refine :meth:`_request_stop` and :meth:`_crash`.
    """

    error: ClassVar[type[DevkitError]] = DevkitError
    what: ClassVar[str] = "the server"  # as in "<what> exited with code 1"
    not_ready: ClassVar[str] = "the server did not answer"  # "<not_ready> within 60s"
    bind_failures: ClassVar[tuple[str, ...]] = ("Address already in use",)  # log phrases
    death_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, *, start_timeout: float) -> None:
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._scratch: Path | None = None
        self._owns_scratch = False
        self._last_error = ""  # why the last readiness check failed, if it says
        self._exit_registered = False

    # -- what a subclass says ---------------------------------------------------------

    def _start(self) -> None:
        """Prepare the server (ports, scratch folder, files) and :meth:`_launch` it."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether the server serves now."""
        raise NotImplementedError

    def _log_files(self) -> list[Path]:
        """The files its output goes to, in the order their tails are shown."""
        raise NotImplementedError

    def _ports(self) -> list[int | None]:
        """The loopback ports it listens on."""
        raise NotImplementedError

    def _describe(self) -> T:
        """Where the running server answers, and what it is."""
        raise NotImplementedError

    # -- the life cycle ---------------------------------------------------------------

    @property
    def workdir(self) -> Path | None:
        """The scratch folder (data, logs) while the server exists."""
        return self._scratch

    def start(self) -> T:
        """Start the server (a killed one comes back with its data); once it serves, say
        where. A running server is left as it is."""
        if self._proc is None:
            self._start()
        return self._describe()

    def _check_free(self, ports: dict[str, int | None]) -> None:
        """Fail, naming it, when a port asked for by name is taken already."""
        for name, port in ports.items():
            if port is not None and port_taken(port):
                raise self.error(f"{name} {port} on 127.0.0.1 is already in use")

    def _scratch_dir(self, prefix: str, workdir: Path | None = None) -> Path:
        """The server's folder: the one it had (killed, started again), else ``workdir``
        (kept on close), else a new temporary folder (removed on close)."""
        if self._scratch is None:
            if workdir is None:
                self._scratch = Path(tempfile.mkdtemp(prefix=prefix))
                self._owns_scratch = True
            else:
                workdir.mkdir(parents=True, exist_ok=True)
                self._scratch = workdir
        return self._scratch

    def _launch(
        self,
        argv: list[str],
        *,
        log: Path,
        cwd: Path | None = None,
        account: pwd.struct_passwd | None = None,
    ) -> None:
        """Run ``argv`` (as ``account`` when given), its output in ``log``, and wait until
        it is ready; a failure closes the server and raises :attr:`error`."""
        out = open(log, "wb")  # noqa: SIM115 - owned by the child
        try:
            self._proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=die_with_parent(self.death_signal),
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )
        finally:
            out.close()
        if not self._exit_registered:
            atexit.register(self.close)
            self._exit_registered = True
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None

        def exited() -> None:
            if proc.poll() is not None:
                raise self.error(self._exit_reason(proc.returncode))

        self._last_error = ""
        if not poll_until(self._ready, timeout=self._start_timeout, check=exited):
            last = f" (last error: {self._last_error})" if self._last_error else ""
            raise self.error(
                f"{self.not_ready} within {self._start_timeout:.0f}s{last}; "
                f"last log lines:\n{self._log_tail()}"
            )

    def _exit_reason(self, code: int) -> str:
        tail = self._log_tail()
        if any(phrase in tail for phrase in self.bind_failures):
            ports = " or ".join(str(port) for port in self._ports())
            cause = f"port {ports} on 127.0.0.1 is already in use"
        else:
            cause = f"{self.what} exited with code {code}"
        return f"{cause}; last log lines:\n{tail}"

    def _log_tail(self, lines: int = 20) -> str:
        text: list[str] = []
        for path in self._log_files() if self._scratch is not None else []:
            if path.exists():
                text.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(text[-lines:])

    def kill(self) -> None:
        """Crash the server (no clean shutdown) and keep its data and ports for
        :meth:`start`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self._crash(proc)

    def _crash(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and remove a scratch folder it made; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self._request_stop(proc)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._cleanup()

    def _request_stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Ask the server to stop; :meth:`close` waits :attr:`stop_timeout` for it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    def _cleanup(self) -> None:
        if self._owns_scratch and self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
