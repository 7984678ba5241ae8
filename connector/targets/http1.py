"""An HTTP/1.1 client on one event loop: many POSTs in flight over keep-alive connections.

The webhook target's transport. One asyncio event loop, in a thread of its own, holds up
to ``max_connections`` connections to one origin; each carries one request at a time
(no pipelining) and goes back to the pool when its answer has been read, unless the
server said it closes. Callers in other threads hand over a list of requests with
:meth:`Http1Pool.post_all` and get one answer (or one exception) per request, in order.

Why not threads or a general-purpose client: a thread per request in flight costs a
context switch per request and one stack each, and the general-purpose async clients
spend several times the Python per request that this one does; at thousands of requests
a second with a 10 ms receiver, in-flight requests are hundreds and Python per request is
what limits (bench/RESULTS.md).

What it does not do, on purpose: redirects (the webhook target refuses 3xx), cookies,
proxies, compression, ``Expect: 100-continue``, HTTP/2.

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
import concurrent.futures
import contextlib
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kec.resource import Resource

__all__ = ["ConnectTimeout", "Http1Pool", "ProtocolError", "Request", "Response"]

_HEAD_LIMIT = 64 * 1024  # bytes of status line and headers at most


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class ConnectTimeout(TimeoutError):
    """No connection within the timeout."""


@dataclass(frozen=True, slots=True)
class Request:
    """A POST of ``body`` with ``headers`` (beside the pool's own) to the pool's path."""

    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes  # at most ``max_body + 1`` bytes: one more than kept tells a cut body
    will_close: bool

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


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


class _Stale(Exception):
    """A reused connection ended before any byte of the answer: the server had closed it."""


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class Http1Pool(Resource):
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
    ) -> None:
        """``headers``: sent with every request (``Content-Length`` is the pool's, and so
        is ``Host`` unless they give one). ``timeout`` bounds connecting, and then sending
        a request and reading its answer."""
        self._host, self._port, self._ssl = host, port, ssl_context
        default_port = 443 if ssl_context is not None else 80
        authority = host if ":" not in host else f"[{host}]"
        if port != default_port:
            authority += f":{port}"
        if not any(header.lower() == "host" for header in headers):
            headers = {"Host": authority, **headers}
        self._head = f"POST {path} HTTP/1.1\r\n".encode("latin-1") + header_block(headers)
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_body = max_body
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._idle: list[_Connection] = []  # the loop's only: LIFO, the warmest first
        self._slots: asyncio.Semaphore | None = None
        self._busy: set[_Connection] = set()

    # -- life cycle ----------------------------------------------------------------------

    def open(self) -> None:
        if self._loop is not None:
            return
        loop = _new_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._slots = asyncio.Semaphore(self._max_connections)
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"kec-{self._name}-loop", daemon=True)
        self._loop = loop
        self._thread.start()
        ready.wait()

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def shut() -> None:
            # Requests in flight end now (their callers get an error, not a hang).
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for conn in [*self._idle, *self._busy]:
                conn.close()
            self._idle.clear()

        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()

    # -- requests ------------------------------------------------------------------------

    def post_all(self, requests: Sequence[Request]) -> list[Response | BaseException]:
        """Send ``requests`` at once (up to ``max_connections`` in flight; the rest wait
        for a connection) and return each one's answer or exception, in their order.
        Called from any thread but the loop's."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the HTTP pool is not open")
        future = asyncio.run_coroutine_threadsafe(self._all(requests), loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # closed meanwhile
            return [ConnectionAbortedError("the HTTP pool was closed")] * len(requests)

    async def _all(self, requests: Sequence[Request]) -> list[Response | BaseException]:
        if len(requests) == 1:
            try:
                return [await self._post(requests[0])]
            except Exception as exc:
                return [exc]
        return list(await asyncio.gather(*map(self._post, requests), return_exceptions=True))

    async def _post(self, request: Request) -> Response:
        slots = self._slots
        assert slots is not None
        async with slots:
            data = b"".join((
                self._head,
                header_block(request.headers),
                b"Content-Length: %d\r\n\r\n" % len(request.body),
                request.body,
            ))  # fmt: skip
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, data)
                except _Stale:
                    pass  # closed by the server while idle: once more on a new connection
            conn = await self._connect()
            try:
                return await self._exchange(conn, data)
            except _Stale as exc:
                raise ConnectionResetError("the server closed the connection unanswered") from exc

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, limit=_HEAD_LIMIT,
                    server_hostname=self._host if self._ssl is not None else None,
                )  # fmt: skip
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {self._timeout:g}s") from None
        return _Connection(reader, writer)

    async def _exchange(self, conn: _Connection, data: bytes) -> Response:
        """Send one request on ``conn`` and read its answer; ``conn`` goes back to the pool
        or is closed."""
        self._busy.add(conn)
        kept = False
        try:
            async with asyncio.timeout(self._timeout):
                conn.writer.write(data)
                response = await self._read(conn.reader)
            kept = not response.will_close
            return response
        finally:
            self._busy.discard(conn)
            if kept and self._loop is not None:
                self._idle.append(conn)
            else:
                conn.close()

    async def _read(self, reader: asyncio.StreamReader) -> Response:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _Stale() from None
                raise ProtocolError("the answer ended inside its headers") from None
            except asyncio.LimitOverrunError:
                raise ProtocolError(f"answer headers longer than {_HEAD_LIMIT} bytes") from None
            except ConnectionResetError as exc:
                raise _Stale() from exc
            status, reason, version, headers = _parse_head(head)
            if status >= 200 or status == 101:
                break  # 1xx: an interim answer; the final one follows
        close = "close" in headers.get("connection", "").lower() or (
            version == "HTTP/1.0" and "keep-alive" not in headers.get("connection", "").lower()
        )
        limit = self._max_body + 1
        if status in (204, 304) or 100 <= status < 200:
            return Response(status, reason, headers, b"", close)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, complete = await _read_chunked(reader, limit)
            return Response(status, reason, headers, body, close or not complete)
        length = headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length!r}") from None
            body = await _read_exactly(reader, min(size, limit))
            return Response(status, reason, headers, body, close or size >= limit)
        body = await reader.read(limit)  # until the end of the connection
        while len(body) < limit and (more := await reader.read(limit - len(body))):
            body += more
        return Response(status, reason, headers, body, True)


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


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the answer ended inside its body") from None


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    """The body of a chunked answer, up to ``limit`` bytes; whether it was read to its end
    (a cut one leaves the connection unusable)."""
    body = bytearray()
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise ProtocolError("malformed chunked body") from None
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {line[:40]!r}") from None
        if size == 0:
            try:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers, ignored
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                raise ProtocolError("malformed chunked body") from None
            return bytes(body), True
        take = min(size, limit - len(body))
        body += await _read_exactly(reader, take)
        if len(body) >= limit:
            return bytes(body), False
        await _read_exactly(reader, 2)  # the chunk's CRLF
