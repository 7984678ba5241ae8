"""A fault-injecting TCP proxy on loopback: delay, blackhole, refuse, reset.

:class:`Proxy` listens on ``127.0.0.1:<port>`` and forwards every connection to one
upstream address. Each connection is two asyncio tasks pumping bytes, one per direction,
on an event loop of the proxy's own in a background thread; the methods below are plain
synchronous calls, safe from any thread, and take effect before they return.

Faults (all off at start; :meth:`Proxy.heal` turns them all off again):

* :meth:`~Proxy.delay` ``(seconds)``: every chunk waits that long before it is forwarded,
  in both directions (per chunk, in order: a bulk transfer slows down accordingly).
* :meth:`~Proxy.blackhole` ``(True)``: connections are accepted but nothing is forwarded.
  Bytes are *held*, not dropped: a new connection is not connected upstream and an open
  one stops reading, until ``blackhole(False)``, when everything held goes on in order,
  as TCP retransmits across a network partition that heals. Clients see time-outs.
* :meth:`~Proxy.refuse` ``(True)``: new connections are reset (RST) as soon as accepted.
* :meth:`~Proxy.reset_all`: every open connection is reset now, both its sides.

An upstream that cannot be reached resets the client's connection; an upstream reset is
passed on to the client as a reset. :class:`tests.nemesis.pg.PgProxy` adds PostgreSQL's
lost COMMIT acknowledgement. ``python -m tests.nemesis`` runs a proxy as a process of its
own, controlled through :class:`RemoteProxy`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Address = tuple[str, int]

CHUNK = 65536
CONNECT_TIMEOUT = 10.0  # upstream connect, once not blackholed
CALL_TIMEOUT = 10.0  # a control call waiting for the proxy's loop
ROOT = Path(__file__).resolve().parents[2]


class ProtocolViolation(Exception):
    """A session could not follow the bytes it is meant to understand: the connection is
    reset rather than forwarded blindly."""


class Session:
    """What one connection does with the bytes it pumps; this one forwards them as is.

    Both methods return the bytes to forward and whether to reset the connection right
    after forwarding them. They run on the proxy's loop, one chunk at a time per direction.
    """

    def from_client(self, data: bytes) -> tuple[bytes, bool]:
        return data, False

    def from_server(self, data: bytes) -> tuple[bytes, bool]:
        return data, False


def rst(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Conn:
    """One proxied connection: the client's side and, once connected, the upstream's."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self._closed = False

    def closed(self) -> bool:  # a method: awaits between checks do not narrow it
        return self._closed

    def reset(self) -> None:
        """Reset both sides now; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        rst(self.client)
        if self.server is not None:
            rst(self.server)


class Proxy:
    """A TCP proxy from ``listen`` (default ``127.0.0.1``, a free port) to ``upstream``.

    ``start()`` binds and returns once the proxy accepts connections; ``port`` and
    ``address`` then say where. ``stop()`` resets every open connection and ends the
    loop's thread. Also a context manager (start on enter, stop on exit). ``upstream``
    may be reassigned: connections made afterwards go to the new address.
    """

    def __init__(self, upstream: Address, *, listen: Address = ("127.0.0.1", 0)) -> None:
        self.upstream = upstream
        self._listen = listen
        self._port: int | None = None
        self._delay = 0.0
        self._blackholed = False
        self._refusing = False
        self._counts = {"accepted": 0, "refused": 0, "reset": 0, "upstream_failed": 0}
        self._conns: set[Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._flowing: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main(ready)), name="nemesis-proxy", daemon=True
        )
        self._thread.start()
        try:
            self._port = ready.result(timeout=CALL_TIMEOUT)
        except BaseException:
            self._thread.join(timeout=CALL_TIMEOUT)
            self._thread = None
            raise
        log.info("nemesis proxy %s -> %s:%d", self.address, *self.upstream)
        return self

    def stop(self) -> None:
        """Reset every open connection, stop listening, end the thread; idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=CALL_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the nemesis proxy's thread did not stop")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` where clients connect."""
        return f"{self._listen[0]}:{self.port}"

    # --- faults ----------------------------------------------------------------------

    def delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before forwarding it (0: no delay)."""
        if not seconds >= 0:
            raise ValueError(f"delay must be >= 0 seconds, not {seconds!r}")
        self._call(lambda: setattr(self, "_delay", float(seconds)))

    def blackhole(self, on: bool = True) -> None:
        """Accept connections but forward nothing (bytes held) / forward again."""
        self._call(lambda: self._set_blackhole(on))

    def refuse(self, on: bool = True) -> None:
        """Reset new connections as soon as they are accepted / accept them again."""
        self._call(lambda: setattr(self, "_refusing", bool(on)))

    def reset_all(self) -> int:
        """Reset every open connection (both sides) now; return how many."""
        return self._call(self._reset_all)

    def heal(self) -> None:
        """Turn every fault off (delay 0, no blackhole, no refusal)."""

        def heal() -> None:
            self._delay = 0.0
            self._refusing = False
            self._set_blackhole(False)
            self._heal_more()

        self._call(heal)

    def stats(self) -> dict[str, Any]:
        """Counters (accepted, refused, reset, upstream_failed, open) and the faults on."""
        return self._call(self._stats)

    # --- for subclasses --------------------------------------------------------------

    def session(self, conn: Conn) -> Session:
        """The session for a new connection (runs on the loop)."""
        return Session()

    def _heal_more(self) -> None:
        """Subclasses turn their own faults off here (runs on the loop)."""

    def _stats(self) -> dict[str, Any]:
        return {
            **self._counts,
            "open": len(self._conns),
            "delay": self._delay,
            "blackhole": self._blackholed,
            "refuse": self._refusing,
        }

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the proxy's loop and return its result (directly if not running)."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop closed meanwhile
            return fn()
        return done.result(timeout=CALL_TIMEOUT)

    # --- the loop --------------------------------------------------------------------

    def _set_blackhole(self, on: bool) -> None:
        self._blackholed = bool(on)
        if self._flowing is not None:
            if on:
                self._flowing.clear()
            else:
                self._flowing.set()

    def _reset_all(self) -> int:
        conns = [conn for conn in self._conns if not conn.closed()]
        for conn in conns:
            conn.reset()
        self._counts["reset"] += len(conns)
        return len(conns)

    async def _main(self, ready: concurrent.futures.Future[int]) -> None:
        self._flowing, self._stopping = asyncio.Event(), asyncio.Event()
        self._set_blackhole(self._blackholed)
        try:
            server = await asyncio.start_server(self._handle, *self._listen)
        except OSError as exc:
            ready.set_exception(exc)
            return
        self._loop = asyncio.get_running_loop()
        ready.set_result(server.sockets[0].getsockname()[1])
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for conn in list(self._conns):
                conn.reset()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()
            self._loop = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._counts["accepted"] += 1
        if self._refusing:
            self._counts["refused"] += 1
            rst(writer)
            return
        task = asyncio.current_task()
        assert task is not None and self._flowing is not None
        conn = Conn(writer)
        self._conns.add(conn)
        self._tasks.add(task)
        try:
            await self._flowing.wait()  # a blackhole holds new connections here
            if conn.closed():
                return
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except (OSError, TimeoutError) as exc:
                self._counts["upstream_failed"] += 1
                log.info("upstream %s:%d unreachable (%s): client reset", *self.upstream, exc)
                conn.reset()
                return
            conn.server = up_writer
            if conn.closed():  # reset while connecting
                rst(up_writer)
                return
            session = self.session(conn)
            await asyncio.gather(
                self._pump(conn, reader, up_writer, session.from_client),
                self._pump(conn, up_reader, writer, session.from_server),
            )
        except asyncio.CancelledError:
            # Cancelled by stop(): end normally, or asyncio's stream callback (3.11) logs
            # the cancellation of a connection handler as an error.
            return
        finally:
            self._conns.discard(conn)
            self._tasks.discard(task)
            for side in (conn.client, conn.server):
                if side is not None:
                    side.close()

    async def _pump(
        self,
        conn: Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transform: Callable[[bytes], tuple[bytes, bool]],
    ) -> None:
        assert self._flowing is not None
        try:
            while not conn.closed():
                data = await reader.read(CHUNK)
                if not data:
                    if not conn.closed() and writer.can_write_eof():
                        writer.write_eof()  # half-close, as the sender did
                    return
                out, reset = transform(data)
                if self._delay > 0:
                    await asyncio.sleep(self._delay)
                await self._flowing.wait()
                if conn.closed():
                    return
                if out:
                    writer.write(out)
                    await writer.drain()
                if reset:
                    conn.reset()
        except ProtocolViolation as exc:
            log.warning("nemesis proxy: %s; connection reset", exc)
            conn.reset()
        except OSError:  # ConnectionResetError among them: pass the reset on
            conn.reset()
        except Exception:  # a bug in a session: say so, and do not leave the client hanging
            log.exception("nemesis proxy: session failed; connection reset")
            conn.reset()


# --- a proxy in a process of its own ---------------------------------------------------


class ControlError(RuntimeError):
    """The proxy process refused a control request or did not answer."""


class RemoteProxy:
    """A proxy running as ``python -m tests.nemesis`` in a child process, with the same
    methods as :class:`Proxy` (and :class:`~tests.nemesis.pg.PgProxy` with ``pg=True``).

    Each call is one JSON line over a TCP connection to the child's control port. The
    child exits on :meth:`stop`, or when this process dies (it watches its stdin).
    """

    def __init__(self, proc: subprocess.Popen[bytes], port: int, control: Address) -> None:
        self._proc = proc
        self.port = port
        self._control = control

    @classmethod
    def spawn(
        cls, upstream: Address, *, pg: bool = False, start_timeout: float = 30.0
    ) -> RemoteProxy:
        cmd = [
            sys.executable,
            "-m",
            "tests.nemesis",
            "--upstream",
            f"{upstream[0]}:{upstream[1]}",
            "--control",
            "127.0.0.1:0",
            "--exit-on-stdin-eof",
        ]
        if pg:
            cmd.append("--pg")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], start_timeout)
        line = proc.stdout.readline() if ready else b""
        if not line:
            proc.kill()
            proc.wait(timeout=CALL_TIMEOUT)
            raise ControlError(
                f"the nemesis proxy process did not start in {start_timeout:.0f}s "
                f"(exit code {proc.returncode})"
            )
        ports = json.loads(line)
        return cls(proc, int(ports["port"]), ("127.0.0.1", int(ports["control"])))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _send(self, op: str, **args: Any) -> Any:
        request = json.dumps({"op": op, "args": args}).encode() + b"\n"
        try:
            with socket.create_connection(self._control, timeout=CALL_TIMEOUT) as sock:
                sock.sendall(request)
                with sock.makefile("rb") as answers:
                    line = answers.readline()
        except OSError as exc:
            raise ControlError(f"nemesis control {op}: {exc}") from exc
        if not line:
            raise ControlError(f"nemesis control {op}: no answer")
        answer = json.loads(line)
        if not answer["ok"]:
            raise ControlError(f"nemesis control {op}: {answer['error']}")
        return answer["result"]

    def delay(self, seconds: float) -> None:
        self._send("delay", seconds=seconds)

    def blackhole(self, on: bool = True) -> None:
        self._send("blackhole", on=on)

    def refuse(self, on: bool = True) -> None:
        self._send("refuse", on=on)

    def reset_all(self) -> int:
        return int(self._send("reset_all"))

    def heal(self) -> None:
        self._send("heal")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._send("stats")
        return result

    def swallow_commit_acks(
        self, n: int | None = None, *, probability: float | None = None, seed: int | None = None
    ) -> None:
        self._send("swallow_commit_acks", n=n, probability=probability, seed=seed)

    @property
    def swallowed(self) -> int:
        return int(self.stats()["swallowed"])

    def statements(self) -> list[tuple[str, str]]:
        return [(kind, sql) for kind, sql in self._send("statements")]

    def stop(self) -> int:
        """Stop the child and return its exit code (0 when it stopped as asked)."""
        if self._proc.poll() is None:
            with contextlib.suppress(ControlError):
                self._send("stop")
            try:
                self._proc.wait(timeout=CALL_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=CALL_TIMEOUT)
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()
        return self._proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
