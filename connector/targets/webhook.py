"""The ``webhook`` target: HTTP POST of each action, with its ``Idempotency-Key``.

Request: ``POST {url}``, body ``Action.to_json()``, headers ``Content-Type:
application/json``, ``Idempotency-Key: <action id>``, ``User-Agent:
kafka-event-connector (<host>; pid <pid>)`` (so a receiver can tell which instance sent
it) and the configured extra headers (``Authorization`` and the like; they cannot replace
the first two). Credentials in the URL (``https://user:pass@host/``) become Basic auth. A
resend after a crash carries the same key, so a receiver that honours it applies the
action once.

Errors and logs show the URL only as ``scheme://host[:port]/…?name=…``
(:func:`~connector.common.redaction.redact_url`): hosted webhooks carry their secret in the path
or the query. Text quoted from elsewhere (an answer's body, a socket error) has the URL's
secret parts starred. Of an answer at most :data:`MAX_BODY` bytes are read: the rest of a
larger body is never loaded, and its connection is closed rather than drained.

Concurrency: up to ``concurrency`` requests at once (actions of different keys; the
dispatcher keeps one key's in order), each worker thread over its own keep-alive HTTP/1.1
connection (the standard library's ``http.client``: a fraction of the CPU of a
general-purpose client, which matters at thousands of actions a second). A kept-alive
connection the server closed meanwhile is reopened and the request sent once more, as
browsers do; that is safe because the request carries its idempotency key.

Outcome by response:

=====================================  =====================================================
2xx                                    delivered
408, 409, 425, 429, 5xx, no response   :class:`~kec.errors.TargetError` (retriable);
(timeout, connection refused or        a ``Retry-After`` is quoted in the message
reset, …)
3xx                                    :class:`~kec.errors.TargetRejected`: redirects
                                       are not followed (a POST may turn into a GET)
any other 4xx                          :class:`~kec.errors.TargetRejected`
=====================================  =====================================================

409 is what a receiver that honours ``Idempotency-Key`` answers while a request with the
same key is still being processed (a resend that overtook the first try): the action is
sent again later with the same key, and the receiver answers it with the first one's
outcome. A receiver that answers 409 for a refusal gets the action retried until the
dispatcher's last attempt, then dead-lettered.

The target never sleeps: backoff between attempts is the dispatcher's (tenacity in-call,
then durable retries). ``timeout`` bounds connecting and each read and write.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping

from connector.common.redaction import redact, redact_url, url_secrets
from connector.common.template import Template
from connector.targets.base import Target
from kec.action import Action
from kec.errors import ConfigError, TargetError, TargetRejected

BODY_TAIL = 500  # characters of a refusal's response body quoted in the error
MAX_BODY = 64 * 1024  # bytes of an answer read at most
RETRIABLE_STATUS = frozenset({408, 409, 425, 429})
# What a retriable 4xx means, for the message.
_MEANING = {
    409: "a request with this Idempotency-Key is in progress",
    425: "too early",
}
_OWN_HEADERS = frozenset({"content-type", "idempotency-key"})
# A reused connection the server closed while idle: reopen it and send again.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _kind(exc: BaseException) -> str:
    """A short name for a failure without a response (as an HTTP client would call it)."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "ReadTimeout"
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return "ConnectError"
    return type(exc).__name__


class WebhookTarget(Target):
    """POSTs actions to ``url``; connections are made per worker thread after ``open()``."""

    def __init__(
        self,
        name: str = "webhook",
        url: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        verify: bool = True,
        concurrency: int = 16,
        template: Template | None = None,
    ) -> None:
        """``template``: the body to send instead of the action
        (:mod:`connector.common.template`)."""
        # Errors end up in logs and the dead-letter table: never quote the URL's secrets.
        shown = redact_url(url)
        try:
            parsed = urllib.parse.urlsplit(url)
            port = parsed.port
        except ValueError as exc:
            why = redact(str(exc), url_secrets(url))
            raise ConfigError(f"webhook target {name!r}: invalid url {shown}: {why}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"webhook target {name!r}: url must be http(s)://host/…, not {shown}")
        if timeout <= 0:
            raise ConfigError(f"webhook target {name!r}: timeout must be positive")
        if concurrency < 1:
            raise ConfigError(f"webhook target {name!r}: concurrency must be at least 1")
        clash = sorted(h for h in headers or {} if h.lower() in _OWN_HEADERS)
        if clash:
            raise ConfigError(f"webhook target {name!r}: headers {clash} are set by the target")
        self.name = name
        self.concurrency = concurrency
        self._template = template
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = port
        self._path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self._shown = shown
        self._secrets = url_secrets(url)
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if parsed.username is not None:
            user = urllib.parse.unquote(parsed.username)
            password = urllib.parse.unquote(parsed.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers.setdefault("Authorization", f"Basic {token}")
        self._timeout = timeout
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._local: threading.local | None = None
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        if self._local is not None:
            return
        if self._https:
            context = ssl.create_default_context()
            if not self._verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl = context
        self._headers["User-Agent"] = (
            f"kafka-event-connector ({socket.gethostname()}; pid {os.getpid()})"
        )
        self._local = threading.local()

    def close(self) -> None:
        self._local = None
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _connection(self, local: threading.local) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop(
        self, local: threading.local, response: http.client.HTTPResponse | None = None
    ) -> None:
        if response is not None:
            response.close()  # it holds the socket when the server said it closes
        conn = getattr(local, "conn", None)
        local.conn = None
        if conn is not None:
            conn.close()
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)

    def deliver(self, action: Action) -> None:
        local = self._local
        if local is None:
            raise TargetError(f"webhook target {self.name} is not open")
        template = self._template
        body = template.render_bytes(action) if template else action.to_json().encode()
        headers = {**self._headers, "Idempotency-Key": action.action_id}
        for attempt in (1, 2):
            conn = self._connection(local)
            reused = conn.sock is not None
            response: http.client.HTTPResponse | None = None
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                # One byte more than is kept tells a complete body from a cut one.
                text = response.read(MAX_BODY + 1)
            except _STALE as exc:
                self._drop(local, response)
                if reused and attempt == 1:
                    continue  # the server closed the idle connection: a fresh one
                raise self._failure(action, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(local, response)
                raise self._failure(action, exc) from exc
            if response.will_close or len(text) > MAX_BODY:
                # Closed by the server, or the rest of a huge body is never read.
                self._drop(local, response)
            self._check(response, text[:MAX_BODY], action)
            return

    def _failure(self, action: Action, exc: BaseException) -> TargetError:
        return TargetError(
            f"webhook target {self.name}: POST {self._shown} failed"
            f" (action {action.action_id}): {_kind(exc)}: {redact(str(exc), self._secrets)}"
        )

    def _check(self, response: http.client.HTTPResponse, body: bytes, action: Action) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        message = (
            f"webhook target {self.name}: POST {self._shown} answered {status}"
            f" {response.reason} (action {action.action_id})"
        )
        retriable = status in RETRIABLE_STATUS or status >= 500
        if status in _MEANING:
            message += f": {_MEANING[status]}"
        raw = response.getheader("Retry-After")
        if retriable and raw is not None:
            delay = retry_after_seconds(raw)
            message += f"; Retry-After: {raw if delay is None else f'{delay:g}s'}"
        if 300 <= status < 400:
            location = response.getheader("Location")
            message += f"; Location: {'-' if location is None else redact_url(location)}"
        text = redact(body.decode(errors="replace").strip(), self._secrets)
        if text:
            more = "…" if len(text) > BODY_TAIL else ""
            message += f"; body: {text[:BODY_TAIL]}{more}"
        if not retriable and 300 <= status < 500:
            raise TargetRejected(message)
        raise TargetError(message)
