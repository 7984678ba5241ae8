"""What the webhook's HTTP/1.1 and HTTP/2 connections share (connector/targets/http1.py,
http2.py): a request as the pool is handed it, an answer as the pool hands it back, and
the errors of the exchange itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ConnectTimeout", "ProtocolError", "Request", "Response"]


class ProtocolError(Exception):
    """The server's answer breaks HTTP/1.1 or HTTP/2 as this client reads it."""


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
