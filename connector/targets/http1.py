"""An HTTP/1.1 client on one event loop: many POSTs in flight over keep-alive connections.

The webhook target's transport. One asyncio event loop, in a thread of its own, holds up
to ``max_connections`` connections to one origin; each carries one request at a time
(no pipelining) and goes back to the pool when its answer has been read, unless the
server said it closes. Callers in other threads hand over a list of requests with
:meth:`Http1Pool.post_all` and get one answer (or one exception) per request, in order;
:meth:`Http1Pool.post_all_then` hands the answers to a callback instead, on the loop's
thread, so that no caller's thread waits for them.

Why not threads or a general-purpose client: a thread per request in flight costs a
context switch per request and one stack each, and the general-purpose async clients
spend several times the Python per request that this one does; at thousands of requests
a second with a 10 ms receiver, in-flight requests are hundreds and Python per request is
what limits (bench/RESULTS.md). For the same reason each connection is an
``asyncio.Protocol`` that parses its answer as the bytes arrive and settles the request
from the loop's callback: no task, stream or awaited future per request.

HTTP/2 where a TLS server offers it (``http2=True``): the pool then offers ``h2`` in the
handshake (ALPN), and a connection on which the server chose it carries many requests at
once (:mod:`connector.targets.http2`). Until the first connection has said which protocol
the server speaks, the other requests wait for it rather than open connections of their
own.

What it does not do, on purpose: redirects (the webhook target refuses 3xx), cookies,
proxies, compression, ``Expect: 100-continue``, HTTP/2 without TLS.

Reading an answer: the status line and headers (64 KiB at most), then a body delimited
by ``Content-Length``, by chunked transfer coding, or by the end of the connection. At
most ``max_body + 1`` bytes of a body are read; the rest of a larger one is never
loaded, and its connection is closed rather than drained.

A kept-alive connection the server closed while it was idle is noticed (end of stream
before any byte of the answer) and the request is sent once more on a new connection, as
browsers do; the caller's requests must therefore be safe to repeat (the webhook's carry
an idempotency key).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from connector.targets.http2 import MAX_STREAMS, H2Connection, request_headers
from connector.targets.httpwire import ConnectTimeout, ProtocolError, Request, Response
from kec.resource import Resource

__all__ = ["Answers", "ConnectTimeout", "HttpPool", "ProtocolError", "Request", "Response"]

log = logging.getLogger(__name__)

_HEAD_LIMIT = 64 * 1024  # bytes of status line and headers at most


def header_block(headers: Mapping[str, str]) -> bytes:
    """Header lines as sent; refuses a name or value that could split the request."""
    lines = []
    for name, value in headers.items():
        if not name or any(c in name for c in ":\r\n \t") or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (a dependency except on Windows), else
    asyncio's: most of the pool's Python per request is the loop's own work, and uvloop
    made row (g) of the benchmark 18% faster (bench/RESULTS.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


Answers = list[Response | BaseException]


class _Batch:
    """One ``post_all`` or ``post_all_then`` call: its answers, in order, and the caller's
    future or callback."""

    __slots__ = ("answers", "done", "future", "left", "waiting")

    def __init__(
        self,
        size: int,
        waiting: set[_Batch],
        done: Callable[[Answers], None] | None = None,
    ) -> None:
        self.answers: list[Response | BaseException | None] = [None] * size
        self.left = size
        self.done = done
        self.future: concurrent.futures.Future[Answers] | None = (
            concurrent.futures.Future() if done is None else None
        )
        self.waiting = waiting  # the pool's unanswered batches, for close()
        waiting.add(self)

    def settle(self, index: int, answer: Response | BaseException) -> None:
        self.answers[index] = answer
        self.left -= 1
        if self.left:
            return
        self.waiting.discard(self)
        answers: Answers = self.answers  # type: ignore[assignment]  # all set now
        if self.future is not None:
            self.future.set_result(answers)
            return
        assert self.done is not None
        try:
            self.done(answers)
        except Exception:  # the caller's bug must not stop the loop answering the others
            log.exception("an HTTP answer callback failed")

    def abandon(self, answer: BaseException) -> None:
        """Give ``answer`` to every request still unanswered (the pool is closing)."""
        for index, got in enumerate(self.answers):
            if got is None and self.left:
                self.settle(index, answer)


class _Call:
    """One request of a batch: as bytes ready to write on an HTTP/1.1 connection, and as
    given (an HTTP/2 connection sends its headers and body apart)."""

    __slots__ = ("batch", "data", "index", "request", "resent")

    def __init__(self, data: bytes, batch: _Batch, index: int, request: Request) -> None:
        self.data, self.batch, self.index, self.request = data, batch, index, request
        self.resent = 0  # times an HTTP/2 server refused it unprocessed

    def settle(self, answer: Response | BaseException) -> None:
        self.batch.settle(self.index, answer)


# Where a connection's reader is in the answer.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _TO_EOF = range(7)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer as bytes arrive.

    A protocol rather than a stream reader and a task per request: the answer is parsed in
    ``data_received`` and settles the request there, so a request costs a write and a
    parse, not a task, its futures and the stream's. Its deadline is a number the pool's
    sweep reads, not a timer of its own (uvloop makes a libuv timer of each)."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.call: _Call | None = None
        self.used = False  # answered a request before: it may have gone stale while idle
        self.lost = False
        self.counted = True  # in the pool's count of connections open or opening
        self.deadline = 0.0  # loop time by which the current request must be answered
        self.buffer = bytearray()
        self.got = False  # a byte of the current answer has arrived
        self.state = _HEAD
        self.head: tuple[int, str, Mapping[str, str], bool] = (0, "", {}, False)
        self.need = 0  # _LENGTH: body bytes to read; _CHUNK_DATA: left of the chunk
        self.cut = False  # _LENGTH: the body is longer than the pool keeps
        self.body = bytearray()
        self.h2: H2Connection | None = None  # what the connection became if ALPN chose h2

    # -- the pool's side -----------------------------------------------------------------

    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def send(self, call: _Call) -> None:
        assert self.transport is not None
        self.call, self.got, self.state = call, False, _HEAD
        self.deadline = self.pool.io_loop.time() + self.pool.timeout
        self.transport.write(call.data)

    def abort(self, answer: BaseException) -> None:
        """End the connection now; the request on it, if any, gets ``answer``."""
        call = self._take_call()
        if self.transport is not None:
            self.transport.abort()
        if call is not None:
            call.settle(answer)

    def _take_call(self) -> _Call | None:
        call, self.call = self.call, None
        return call

    def timed_out(self) -> None:
        self.abort(TimeoutError(f"no answer within {self.pool.timeout:g}s"))

    # -- the loop's callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        if self.pool.offers_h2:  # here, before any byte of the server's reaches this one
            tls = transport.get_extra_info("ssl_object")
            if tls is not None and tls.selected_alpn_protocol() == "h2":
                self.h2 = self.pool.h2_connection(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.call is None:  # bytes nobody asked for: the connection cannot be trusted
            self.pool.drop(self)
            return
        self.got = True
        self.buffer += data
        try:
            self._parse()
        except ProtocolError as exc:
            call = self._take_call()
            self.pool.drop(self)
            if call is not None:
                call.settle(exc)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles what is open

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        call = self._take_call()
        stale = call is not None and self.state == _HEAD and not self.got
        if call is not None and stale and self.used:
            self.pool.resend(self, call)  # closed by the server while idle: a new connection
            return
        self.pool.drop(self)
        if call is None:
            return
        if stale:
            call.settle(ConnectionResetError("the server closed the connection unanswered"))
        elif self.state == _TO_EOF:
            status, reason, headers, _ = self.head
            call.settle(Response(status, reason, headers, bytes(self.buffer), True))
        elif self.state == _HEAD:
            call.settle(ProtocolError("the answer ended inside its headers"))
        else:
            call.settle(ProtocolError("the answer ended inside its body"))

    # -- reading an answer ---------------------------------------------------------------

    def _parse(self) -> None:
        buf, limit = self.buffer, self.pool.max_body + 1
        while True:
            state = self.state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0 or end + 4 > _HEAD_LIMIT:
                    if len(buf) > _HEAD_LIMIT:
                        raise ProtocolError(f"answer headers longer than {_HEAD_LIMIT} bytes")
                    return
                head = bytes(buf[: end + 4])
                del buf[: end + 4]
                status, reason, version, headers = _parse_head(head)
                if 100 <= status < 200 and status != 101:
                    continue  # an interim answer; the final one follows
                connection = headers.get("connection", "").lower()
                close = "close" in connection or (
                    version == "HTTP/1.0" and "keep-alive" not in connection
                )
                self.head = (status, reason, headers, close)
                if status in (204, 304) or 100 <= status < 200:
                    self._done(b"", close)
                    return
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self.body = bytearray()
                    self.state = _CHUNK_SIZE
                    continue
                length = headers.get("content-length")
                if length is None:
                    self.state = _TO_EOF
                    continue
                try:
                    size = int(length)
                except ValueError:
                    raise ProtocolError(f"bad Content-Length {length!r}") from None
                self.need, self.cut, self.state = min(size, limit), size >= limit, _LENGTH
            elif state == _LENGTH:
                if len(buf) < self.need:
                    return
                body = bytes(buf[: self.need])
                del buf[: self.need]
                self._done(body, self.head[3] or self.cut)
                return
            elif state in (_CHUNK_SIZE, _TRAILERS):
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _HEAD_LIMIT:
                        raise ProtocolError("malformed chunked body")
                    return
                line = bytes(buf[:end])
                del buf[: end + 2]
                if state == _TRAILERS:
                    if not line:
                        self._done(bytes(self.body), self.head[3])
                        return
                    continue  # a trailer, ignored
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {line[:40]!r}") from None
                self.need, self.state = size, _CHUNK_DATA if size else _TRAILERS
            elif state == _CHUNK_DATA:
                take = min(self.need, len(buf), limit - len(self.body))
                self.body += buf[:take]
                del buf[:take]
                self.need -= take
                if len(self.body) >= limit:
                    self._done(bytes(self.body), True)  # cut: the rest is never read
                    return
                if self.need:
                    return
                self.state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ProtocolError("malformed chunked body")
                del buf[:2]
                self.state = _CHUNK_SIZE
            else:  # _TO_EOF: the body ends with the connection (connection_lost)
                if len(buf) >= limit:
                    self._done(bytes(buf[:limit]), True)
                return

    def _done(self, body: bytes, close: bool) -> None:
        call = self._take_call()
        status, reason, headers, _ = self.head
        self.state, self.used = _HEAD, True
        # Bytes past the answer were never asked for (no pipelining): do not reuse.
        close = close or bool(self.buffer)
        self.pool.release(self, keep=not close)
        if call is not None:
            call.settle(Response(status, reason, headers, body, close))


class HttpPool(Resource):
    """POSTs to ``https?://host:port/path``; ``open()`` starts the loop's thread."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | None,
        timeout: float,
        max_connections: int,
        max_body: int,
        name: str = "http",
        http2: bool = False,
    ) -> None:
        """``headers``: sent with every request (``Content-Length`` is the pool's, and so
        is ``Host`` unless they give one). ``timeout`` bounds connecting, and then sending
        a request and reading its answer. ``http2``: offer HTTP/2 to a TLS server (its
        ``max_connections`` requests in flight then share connections of up to
        :data:`~connector.targets.http2.MAX_STREAMS` each)."""
        self._host, self._port, self._ssl = host, port, ssl_context
        default_port = 443 if ssl_context is not None else 80
        authority = host if ":" not in host else f"[{host}]"
        if port != default_port:
            authority += f":{port}"
        if not any(header.lower() == "host" for header in headers):
            headers = {"Host": authority, **headers}
        self._head = f"POST {path} HTTP/1.1\r\n".encode("latin-1") + header_block(headers)
        # Which protocol the server speaks: known at once without TLS or without the
        # offer, else from the first connection's handshake (None until then).
        self.offers_h2 = http2 and ssl_context is not None
        self._protocol: str | None = None if self.offers_h2 else "http/1.1"
        self.h2_headers: list[tuple[str, str]] = []
        self._h2: list[H2Connection] = []
        self._max_h2 = 1  # HTTP/2 connections at most
        self.h2_streams = max_connections  # streams a connection carries at most
        if self.offers_h2:
            assert ssl_context is not None
            ssl_context.set_alpn_protocols(["h2", "http/1.1"])
            given = next(v for k, v in headers.items() if k.lower() == "host")
            self.h2_headers = request_headers(given, path, dict(headers))
            self.h2_streams = min(max_connections, MAX_STREAMS)
            self._max_h2 = -(-max_connections // self.h2_streams)
        self.timeout = timeout
        self.max_body = max_body
        self._max_connections = max_connections
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self.io_loop: asyncio.AbstractEventLoop  # set by open()
        self._thread: threading.Thread | None = None
        self._waiting: set[_Batch] = set()  # unanswered, across threads (set ops are atomic)
        # The loop's only:
        self._idle: list[_Connection] = []  # LIFO, the warmest first
        self._connections: set[_Connection | H2Connection] = set()  # connected, idle or busy
        self._open = 0  # connections open or opening, at most max_connections
        self._queue: collections.deque[_Call] = collections.deque()  # for a connection
        self._connecting: set[asyncio.Task[None]] = set()
        self._closing = False
        self._sweep_every = max(0.005, min(timeout / 10, 0.25))

    # -- life cycle ----------------------------------------------------------------------

    def open(self) -> None:
        if self._loop is not None:
            return
        loop = _new_loop()
        self._closing = False
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"kec-{self._name}-loop", daemon=True
        )
        # The loop's own reference: ``_loop`` goes None when close() begins, while the
        # loop still runs callbacks that connect and send.
        self.io_loop = self._loop = loop
        self._thread.start()
        loop.call_soon_threadsafe(self._sweep)

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def shut() -> None:
            # Requests in flight or waiting end now (their callers get an error, not a hang).
            self._closing = True
            aborted = ConnectionAbortedError("the HTTP pool was closed")
            for task in self._connecting:
                task.cancel()
            await asyncio.gather(*self._connecting, return_exceptions=True)
            while self._queue:
                self._queue.popleft().settle(aborted)
            for conn in list(self._connections):
                conn.abort(aborted)
            self._idle.clear()
            self._h2.clear()

        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
        for batch in list(self._waiting):  # handed over after the loop stopped
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                batch.abandon(ConnectionAbortedError("the HTTP pool was closed"))

    def _sweep(self) -> None:
        """Time out the requests past their deadline, then again in ``_sweep_every``:
        a request's timeout fires up to a tenth of it late (a quarter second at most)."""
        if self._closing:
            return
        now = self.io_loop.time()
        late = [
            c
            for c in self._connections
            if isinstance(c, _Connection) and c.call is not None and c.deadline <= now
        ]
        for conn in late:
            conn.timed_out()
        for h2conn in list(self._h2):
            h2conn.expire(now)
        self.io_loop.call_later(self._sweep_every, self._sweep)

    # -- requests ------------------------------------------------------------------------

    def post_all(self, requests: Sequence[Request]) -> Answers:
        """Send ``requests`` at once (up to ``max_connections`` in flight; the rest wait
        for a connection) and return each one's answer or exception, in their order.
        Called from any thread but the loop's."""
        batch = _Batch(len(requests), self._waiting)
        self._hand_over(batch, requests)
        assert batch.future is not None
        return batch.future.result()  # closing the pool answers what it leaves

    def post_all_then(self, requests: Sequence[Request], done: Callable[[Answers], None]) -> None:
        """:meth:`post_all` without waiting: ``done`` gets the answers, once, from the
        loop's thread (from this one when none of the requests could be sent, and from
        :meth:`close`'s when the pool closes under them). ``done`` must be quick: the
        loop answers nothing else meanwhile."""
        self._hand_over(_Batch(len(requests), self._waiting, done), requests)

    def _hand_over(self, batch: _Batch, requests: Sequence[Request]) -> None:
        loop = self._loop
        if loop is None:
            batch.waiting.discard(batch)
            raise RuntimeError("the HTTP pool is not open")
        calls = []
        for index, request in enumerate(requests):
            try:
                data = b"".join((
                    self._head,
                    header_block(request.headers),
                    b"Content-Length: %d\r\n\r\n" % len(request.body),
                    request.body,
                ))  # fmt: skip
            except ValueError as exc:
                batch.settle(index, exc)
                continue
            calls.append(_Call(data, batch, index, request))
        if not calls:
            return
        try:
            loop.call_soon_threadsafe(self._submit_all, calls)
        except RuntimeError:  # the loop closed meanwhile
            batch.abandon(ConnectionAbortedError("the HTTP pool was closed"))

    def _submit_all(self, calls: list[_Call]) -> None:
        for call in calls:
            self._submit(call)

    def _submit(self, call: _Call) -> None:
        if self._closing:
            call.settle(ConnectionAbortedError("the HTTP pool was closed"))
            return
        if self._protocol == "h2" or (self._protocol is None and self._open):
            # HTTP/2, or not known yet while the first connection is being made.
            self._queue.append(call)
            self._pump()
            return
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                conn.send(call)
                return
            self.drop(conn, pump=False)
        if self._open < self._max_connections:
            self._connect(call)
        else:
            self._queue.append(call)

    def _pump(self) -> None:
        """Hand waiting requests to idle connections (HTTP/2: connections with a stream
        free), or to new ones while there is room."""
        queue = self._queue
        if self._protocol == "http/1.1":
            while queue and (self._idle or self._open < self._max_connections):
                self._submit(queue.popleft())
            return
        while queue and not self._closing:
            if self._protocol is None:  # not known yet: one connection at a time tells
                if self._open:
                    return
                self._connect(queue.popleft())
                continue
            if sum(len(c.streams) for c in self._h2) >= self._max_connections:
                return  # as many in flight as HTTP/1.1 would have
            conn = next((c for c in self._h2 if c.room() > 0), None)
            if conn is not None:
                conn.send(queue.popleft())
            elif self._open - sum(not c.usable() for c in self._h2) < self._max_h2:
                self._connect(queue.popleft())  # one going away does not count
            else:
                return

    def _connect(self, call: _Call) -> None:
        self._open += 1
        task = self.io_loop.create_task(self._connected(call))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connected(self, call: _Call) -> None:
        loop = self.io_loop
        try:
            async with asyncio.timeout(self.timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )  # fmt: skip
        except BaseException as exc:
            self._open -= 1
            if isinstance(exc, asyncio.CancelledError):
                call.settle(ConnectionAbortedError("the HTTP pool was closed"))
                raise
            if isinstance(exc, TimeoutError):
                exc = ConnectTimeout(f"no connection within {self.timeout:g}s")
            call.settle(exc)
            if self._protocol != "http/1.1" and not any(c.usable() for c in self._h2):
                # The requests waiting for this connection (the first, or the only HTTP/2
                # one) fail with it, rather than one connection attempt after another.
                while self._queue:
                    self._queue.popleft().settle(exc)
            self._pump()
            return
        deciding = self._protocol is None
        h2conn = conn.h2
        if h2conn is not None:  # the server chose HTTP/2 (see _Connection.connection_made)
            self._protocol = "h2"
            if not h2conn.usable():  # closed, or going away, before it was ever used
                self.drop(h2conn, pump=False)
                call.settle(ConnectionResetError("the server closed the new connection"))
                self._pump()
                return
            self._connections.add(h2conn)
            self._h2.append(h2conn)
            if self._closing:
                h2conn.abort(ConnectionAbortedError("the HTTP pool was closed"))
                return
            h2conn.send(call)
            self._pump()
            return
        if deciding:
            self._protocol = "http/1.1"
        self._connections.add(conn)
        if self._closing:  # closed while connecting
            conn.abort(ConnectionAbortedError("the HTTP pool was closed"))
            return
        conn.send(call)
        if deciding:
            self._pump()  # the requests that waited for the answer

    def release(self, conn: _Connection, *, keep: bool) -> None:
        """``conn`` answered its request: the next waiting request, idle, or closed."""
        if not keep or self._closing or not conn.usable():
            self.drop(conn)
        elif self._queue:
            conn.send(self._queue.popleft())
        else:
            self._idle.append(conn)

    def drop(self, conn: _Connection | H2Connection, *, pump: bool = True) -> None:
        """Close ``conn`` and free its place (once)."""
        self._connections.discard(conn)
        if conn in self._h2:
            self._h2.remove(conn)
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.close()
        if conn.counted:
            conn.counted = False
            self._open -= 1
            if pump:
                self._pump()

    def resend(self, conn: _Connection, call: _Call) -> None:
        """``conn`` went stale under ``call``: send it once more, on a new connection."""
        self.drop(conn, pump=False)
        if self._closing:
            call.settle(ConnectionAbortedError("the HTTP pool was closed"))
            return
        self._connect(call)
        self._pump()

    # -- HTTP/2 (connector/targets/http2.py) ---------------------------------------------

    def h2_connection(self, transport: asyncio.Transport) -> H2Connection:
        """The HTTP/2 protocol that takes ``transport`` over (its handshake chose h2)."""
        conn = H2Connection(self, transport)
        transport.set_protocol(conn)
        conn.start()
        return conn

    def h2_room(self) -> None:
        """A stream of an HTTP/2 connection is free (or its server allows more): send
        what waits."""
        if self._queue:
            self._pump()

    def h2_resend(self, call: _Call) -> None:
        """The server did not process ``call`` (refused, or going away): send it again,
        at the front of the queue, a few times at most."""
        call.resent += 1
        if call.resent > _MAX_RESENDS or self._closing:
            call.settle(ConnectionResetError("the server refused the request unprocessed"))
            return
        self._queue.appendleft(call)
        self.io_loop.call_soon(self._pump)  # after the event being handled


_MAX_RESENDS = 3


def _parse_head(head: bytes) -> tuple[int, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"malformed header line {line[:80]!r}")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), parts[2] if len(parts) > 2 else "", parts[0], headers
