"""devkit.server.LocalServer's life cycle, with a small Python child as the server.

The broker and PostgreSQL run on this base (their own tests: tests/integration/
test_devbroker.py, test_devpostgres.py); here each way a start can end is driven on purpose.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.errors import DevkitError
from devkit.server import LocalServer, alive, free_port, poll_until, port_taken
from tests.support import wait_for

# Listens on the port it is given once the scratch folder has a file "go" (so a test
# decides when it is ready); with "--bind-error" it prints what a server says about a
# taken port and exits 1.
CHILD = """
import os, socket, sys, time
port, scratch = int(sys.argv[1]), sys.argv[2]
print("child started", flush=True)
if "--bind-error" in sys.argv:
    print("FATAL: could not bind: Address already in use", flush=True)
    sys.exit(1)
while not os.path.exists(os.path.join(scratch, "go")):
    time.sleep(0.02)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen()
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""


class FakeError(DevkitError):
    pass


class Child(LocalServer[str]):
    error = FakeError
    what = "the child"
    not_ready = "the child did not listen"

    def __init__(self, *, args: tuple[str, ...] = (), go: bool = True, timeout: float = 30):
        super().__init__(start_timeout=timeout)
        self.port: int | None = None
        self._args = args
        self._go = go
        self.pids: set[int] = set()  # every child started, as seen while waiting for it

    def _start(self) -> None:
        self._check_free({"port": self.port})
        self.port = self.port or free_port()
        scratch = self._scratch_dir("kec-test-server-")
        if self._go:
            (scratch / "go").touch()
        argv = [sys.executable, "-c", CHILD, str(self.port), str(scratch), *self._args]
        self._launch(argv, log=scratch / "child.log")

    def _ready(self) -> bool:
        assert self.port is not None and self._proc is not None
        self.pids.add(self._proc.pid)
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _log_files(self) -> list[Path]:
        assert self._scratch is not None
        return [self._scratch / "child.log"]

    def _ports(self) -> list[int | None]:
        return [self.port]

    def _describe(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid


def test_start_waits_until_ready_and_close_stops_and_cleans_up() -> None:
    server = Child()
    with server:
        assert server.start() == f"127.0.0.1:{server.port}"  # running: left as it is
        pid, scratch = server.pid, server.workdir
        assert scratch is not None and port_taken(server.port or 0)
        assert "listening" in (scratch / "child.log").read_text()
    assert not alive(pid)
    assert not scratch.exists()
    server.close()  # idempotent


def test_a_child_that_exits_names_the_taken_port_with_its_log_tail() -> None:
    server = Child(args=("--bind-error",))
    with pytest.raises(FakeError) as failed:
        server.start()
    message = str(failed.value)
    assert message.startswith(f"port {server.port} on 127.0.0.1 is already in use; last log")
    assert "child started" in message and "could not bind" in message
    assert server.workdir is None  # closed: its scratch folder is gone


def test_not_ready_in_time_is_an_error_and_leaves_no_child() -> None:
    server = Child(go=False, timeout=1.0)
    with pytest.raises(FakeError, match=r"the child did not listen within 1s; last log lines:"):
        server.start()
    assert server.workdir is None
    assert len(server.pids) == 1 and all(not alive(pid) for pid in server.pids)


def test_a_port_asked_for_and_taken_is_named_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = Child()
        server.port = taken.getsockname()[1]
        with pytest.raises(FakeError, match=rf"^port {server.port} on 127.0.0.1 is already"):
            server.start()
    assert server.workdir is None


def test_kill_keeps_the_folder_and_start_brings_the_same_server_back() -> None:
    server = Child()
    try:
        address = server.start()
        first, scratch = server.pid, server.workdir
        server.kill()
        assert not alive(first) and scratch is not None and scratch.exists()
        assert server.start() == address
        assert server.pid != first and server.workdir == scratch
    finally:
        server.close()
    assert scratch is not None and not scratch.exists()


def test_the_child_dies_with_the_thread_that_started_it(tmp_path: Path) -> None:
    # The owner, a process of its own, starts a child server and is SIGKILLed: no close(),
    # no atexit; the kernel's parent-death signal stops the child.
    owner_code = (
        "import sys\n"
        f"sys.path[:0] = [{str(Path(__file__).resolve().parents[2])!r}]\n"
        "from tests.unit.test_devkit_server import Child\n"
        "server = Child(); server.start()\n"
        "print(server.pid, server.workdir, flush=True)\n"
        "sys.stdin.read()\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    scratch: Path | None = None
    try:
        assert owner.stdout is not None
        pid, folder = owner.stdout.readline().split()
        child, scratch = int(pid), Path(folder)
        assert alive(child)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=30)
        wait_for(lambda: not alive(child), timeout=30, what="the orphaned child to exit")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=30)
        for stream in (owner.stdin, owner.stdout):
            if stream is not None:
                stream.close()
        if scratch is not None and scratch.name.startswith("kec-test-server-"):
            shutil.rmtree(scratch, ignore_errors=True)  # its owner died before removing it


def test_poll_until_is_bounded_and_stops_on_check() -> None:
    calls: list[int] = []
    assert not poll_until(lambda: calls.append(1) is not None, timeout=0.3, interval=0.05)
    assert 2 <= len(calls) <= 8
    assert poll_until(lambda: len(calls) > 0, timeout=0.3)

    def exited() -> None:
        raise FakeError("gone")

    with pytest.raises(FakeError, match="gone"):
        poll_until(lambda: False, timeout=5, check=exited)
