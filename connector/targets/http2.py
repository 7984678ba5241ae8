"""HTTP/2 for the webhook's pool (connector/targets/http1.py), where a TLS server offers it.

The pool offers ``h2`` and ``http/1.1`` in the TLS handshake (ALPN); a connection on which
the server chose ``h2`` becomes an :class:`H2Connection`: many requests in flight at once
on one connection (streams, up to the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` and
:data:`MAX_STREAMS`), instead of one connection per request in flight. The framing,
header compression and flow control are the ``h2`` library's (a state machine without
I/O); this module feeds it the socket's bytes and turns its events into answers.

A stream's answer is read as HTTP/1.1's is: status and headers, then a body of at most
``max_body + 1`` bytes (a longer one is cut: the stream is cancelled, the rest never
read). Each stream has the pool's timeout, counted from when it was sent; a stream past it
is cancelled (``RST_STREAM``) and its request fails with :class:`TimeoutError`, the other
streams going on.

What is safe to send again, and is: a stream the server refused (``REFUSED_STREAM``) or
did not take before it said it was going away (``GOAWAY`` with a lower last stream id):
the server says it did not process those. Any other stream that ends without its answer
(the connection lost, a reset) fails with the error, and the caller decides (the webhook
target retries with the same ``Idempotency-Key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from connector.targets.httpwire import ProtocolError, Response

if TYPE_CHECKING:
    from connector.targets.http1 import HttpPool, _Call

__all__ = ["MAX_STREAMS", "H2Connection", "request_headers"]

log = logging.getLogger(__name__)

MAX_STREAMS = 100  # streams in flight on one connection at most, whatever the server allows
_GOAWAY = 0x7  # the frame type

# Connection-specific headers HTTP/2 forbids (RFC 9113, 8.2.2); Host becomes :authority.
_NOT_IN_H2 = frozenset(
    {"connection", "host", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)


def request_headers(authority: str, path: str, headers: dict[str, str]) -> list[tuple[str, str]]:
    """The pseudo-headers and the pool's own headers of every request, as HTTP/2 sends
    them (names lower case, connection-specific ones left out)."""
    fixed = [(":method", "POST"), (":scheme", "https"), (":authority", authority), (":path", path)]
    return fixed + [(k.lower(), v) for k, v in headers.items() if k.lower() not in _NOT_IN_H2]


class _Stream:
    """One request on the connection: its call, deadline, body left to send, answer."""

    __slots__ = ("body", "call", "deadline", "got", "headers", "sent", "status")

    def __init__(self, call: _Call, deadline: float) -> None:
        self.call = call
        self.deadline = deadline
        self.body = call.request.body
        self.sent = 0  # bytes of the body sent so far (flow control may hold the rest)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.got = bytearray()


class H2Connection(asyncio.Protocol):
    """One HTTP/2 connection of the pool: the protocol of a TLS transport on which the
    server chose ``h2``. The pool sends it calls while it has :meth:`room`; it settles
    each call from the loop's callbacks and tells the pool when a stream is free."""

    def __init__(self, pool: HttpPool, transport: asyncio.Transport) -> None:
        self.pool = pool
        self.transport = transport
        self.counted = True  # in the pool's count of connections open or opening
        self.lost = False
        self.going_away = False  # GOAWAY received (or sent): no new streams
        self.streams: dict[int, _Stream] = {}
        self.inbox = bytearray()  # bytes received, up to the end of the last whole frame
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)

    def start(self) -> None:
        """Send the connection preface (the transport is already this protocol's)."""
        self.h2.initiate_connection()
        self._flush()

    # -- the pool's side -----------------------------------------------------------------

    def usable(self) -> bool:
        return not (self.lost or self.going_away or self.transport.is_closing())

    def room(self) -> int:
        """Streams this connection can take now."""
        if not self.usable():
            return 0
        allowed = min(self.h2.remote_settings.max_concurrent_streams, self.pool.h2_streams)
        return allowed - len(self.streams)

    def send(self, call: _Call) -> None:
        try:
            stream_id = self.h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:  # 2**30 streams: a new connection
            self.going_away = True
            if not self.streams:
                self.pool.drop(self)
            self.pool.h2_resend(call)
            return
        request = call.request
        headers = [
            *self.pool.h2_headers,
            *((k.lower(), v) for k, v in request.headers.items()),
            ("content-length", str(len(request.body))),
        ]
        stream = _Stream(call, self.pool.io_loop.time() + self.pool.timeout)
        self.streams[stream_id] = stream
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not request.body)
        except (h2.exceptions.ProtocolError, ValueError) as exc:  # a header h2 refuses
            del self.streams[stream_id]
            call.settle(ProtocolError(f"HTTP/2 cannot send the request: {exc}"))
            return
        if request.body:
            self._send_body(stream_id, stream)
        self._flush()

    def expire(self, now: float) -> None:
        """Cancel the streams past their deadline; their requests fail with a timeout."""
        late = [sid for sid, s in self.streams.items() if s.deadline <= now]
        for stream_id in late:
            stream = self.streams.pop(stream_id)
            self._reset(stream_id)
            stream.call.settle(TimeoutError(f"no answer within {self.pool.timeout:g}s"))
        if late:
            self._flush()
            self.pool.h2_room()

    def abort(self, answer: BaseException) -> None:
        """End the connection now; every request on it gets ``answer``."""
        self.lost = True
        streams, self.streams = self.streams, {}
        self.transport.abort()
        for stream in streams.values():
            stream.call.settle(answer)

    # -- the loop's callbacks ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        inbox = self.inbox
        inbox += data
        for piece in self._frames():
            if isinstance(piece, int):  # a GOAWAY, read here (see _frames)
                self._going_away(piece)
                continue
            try:
                events = self.h2.receive_data(piece)
            except h2.exceptions.ProtocolError as exc:
                self._fail_all(ProtocolError(f"HTTP/2 protocol error from the server: {exc}"))
                return
            for event in events:
                self._handle(event)
        self._flush()
        if self.going_away and not self.streams:
            self.pool.drop(self)

    def _frames(self) -> list[bytes | int]:
        """The whole frames in the inbox, taken out of it: runs of frames for h2, and the
        last stream id of each GOAWAY between them. h2 is not given a GOAWAY: it would
        refuse every frame after one, where RFC 9113 (6.8) lets the streams up to that id
        finish on the connection, as a server stopping gracefully (or at its requests per
        connection, nginx's and hypercorn's 1,000) does."""
        inbox, start, at = self.inbox, 0, 0
        pieces: list[bytes | int] = []
        limit = self.h2.max_inbound_frame_size
        while len(inbox) - at >= 9:
            length = int.from_bytes(inbox[at : at + 3], "big")
            if length > limit:  # h2 says what is wrong with it
                at = len(inbox)
                break
            end = at + 9 + length
            if end > len(inbox):
                break
            if inbox[at + 3] == _GOAWAY and length >= 8:
                if at > start:
                    pieces.append(bytes(inbox[start:at]))
                pieces.append(int.from_bytes(inbox[at + 9 : at + 13], "big") & 0x7FFFFFFF)
                start = end
            at = end
        if at > start:
            pieces.append(bytes(inbox[start:at]))
        del inbox[:at]
        return pieces

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles what is open

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        streams, self.streams = self.streams, {}
        self.pool.drop(self)
        for stream in streams.values():
            stream.call.settle(ConnectionResetError("the server closed the HTTP/2 connection"))

    # -- events --------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.status, stream.headers = _status_and_headers(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.got += event.data
                if len(stream.got) > self.pool.max_body:  # cut: the rest is never read
                    del stream.got[self.pool.max_body + 1 :]
                    self._reset(event.stream_id)
                    self._answered(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._answered(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._reset_by_server(event)
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self.streams if event.stream_id == 0 else [event.stream_id]
            for stream_id in list(targets):
                stream = self.streams.get(stream_id)
                if stream is not None and stream.sent < len(stream.body):
                    self._send_body(stream_id, stream)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.pool.h2_room()

    def _answered(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if not stream.status:
            stream.call.settle(ProtocolError("the HTTP/2 stream ended without an answer"))
        else:
            body = bytes(stream.got)
            stream.call.settle(Response(stream.status, "", stream.headers, body, False))
        self.pool.h2_room()

    def _reset_by_server(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is None:
            return
        if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
            self.pool.h2_resend(stream.call)  # not processed, the server says: send again
        else:
            code = _code_name(event.error_code)
            stream.call.settle(ConnectionResetError(f"the server reset the stream ({code})"))
        self.pool.h2_room()

    def _going_away(self, last_stream_id: int) -> None:
        """GOAWAY: the streams above ``last_stream_id`` were not processed and go to
        another connection; the others may still be answered here."""
        self.going_away = True
        unprocessed = sorted(sid for sid in self.streams if sid > last_stream_id)
        for stream_id in unprocessed:
            self.pool.h2_resend(self.streams.pop(stream_id).call)

    # -- writing -------------------------------------------------------------------------

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        """As much of the body as flow control lets out now; the rest when the server
        opens its window (``WindowUpdated``)."""
        body, h2conn = stream.body, self.h2
        while stream.sent < len(body):
            window = min(
                h2conn.local_flow_control_window(stream_id), h2conn.max_outbound_frame_size
            )
            if window <= 0:
                return
            chunk = body[stream.sent : stream.sent + window]
            stream.sent += len(chunk)
            h2conn.send_data(stream_id, chunk, end_stream=stream.sent == len(body))

    def _reset(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):  # closed meanwhile
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def _fail_all(self, answer: BaseException) -> None:
        self.lost = True
        streams, self.streams = self.streams, {}
        self.pool.drop(self)
        for stream in streams.values():
            stream.call.settle(answer)


def _status_and_headers(
    raw: Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str]],
) -> tuple[int, dict[str, str]]:
    status = 0
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if key == ":status":
            status = int(text) if text.isdigit() else 0
        elif not key.startswith(":"):
            key = key.lower()
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return status, headers


def _code_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error code {code}"
