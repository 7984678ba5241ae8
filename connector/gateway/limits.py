"""What bounds the gateway against hostile or broken clients.

The gateway runs in the connector's process, so a client must not be able to take it
down or starve it:

* **body size**: a request whose body is over ``max_body_bytes`` gets 413 with a JSON
  body, whether it says so in ``Content-Length`` (refused before a byte is read) or
  streams it chunked (refused when the count passes the limit);
* **JSON depth**: a body nesting arrays and objects deeper than ``max_json_depth`` gets
  400 (checked by the routes, before parsing);
* **connections**: past ``max_connections`` open connections or requests in progress,
  uvicorn answers 503 (long polls count: allow for every waiting listener);
* **header timeout**: a connection must deliver a complete request head within
  ``header_timeout`` seconds of opening (or of its previous response), else it is closed;
  so a client trickling a byte at a time cannot hold a connection (uvicorn's keep-alive
  timer restarts on every byte).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from kec.errors import ConfigError

__all__ = ["BodyLimit", "GatewayLimits", "header_timeout_protocol"]

DEFAULT_MAX_BODY_BYTES: Final = 1 << 20
DEFAULT_MAX_JSON_DEPTH: Final = 64
DEFAULT_MAX_CONNECTIONS: Final = 1000
DEFAULT_HEADER_TIMEOUT: Final = 20.0


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """The gateway's bounds (see the module docstring); the defaults suit most uses."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_json_depth", "max_connections", "header_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"gateway limit {name} must be positive")


def _json_error(status: int, error: str, detail: str) -> tuple[Message, Message]:
    body = json.dumps({"error": error, "detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class _TooLarge(Exception):
    """Raised from ``receive`` inside the app; never a ConnectorError, so it gets here."""


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``.

    Goes inside Starlette's error middleware (``Starlette(middleware=[...])``), so the
    exception it raises from ``receive`` comes back to it rather than becoming a 500.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max):
            # Answered before reading; uvicorn discards whatever body still comes.
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counted, watched)
        except _TooLarge:
            if started:  # too late for a status; the connection is dropped instead
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        for message in _json_error(
            413, "body_too_large", f"the request body is over {self._max} bytes"
        ):
            await send(message)


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections whose request head is too slow.

    The timer runs from the connection's start (after the TLS handshake) and from each
    response's end (a kept-alive connection waiting for its next request) until the next
    request's head is complete.
    """

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _awaited: Any = None  # the cycle that was current when the timer was armed

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_timer is not None and self.cycle is not self._awaited:
                self._disarm()  # a new request's head was parsed

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.cycle is None or self.cycle.response_complete:  # no pipelined request
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._awaited = self.cycle
                self._head_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.logger.debug("closing a connection: no request head within %gs", seconds)
                self.transport.close()

    return HeaderTimeoutProtocol
