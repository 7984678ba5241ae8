"""The ``webhook`` target: HTTP POST of each action, with its ``Idempotency-Key``.

Request: ``POST {url}``, body ``Action.to_json()``, headers ``Content-Type:
application/json``, ``Idempotency-Key: <action id>``, ``User-Agent:
kafka-event-connector (<host>; pid <pid>)`` (so a receiver can tell which instance sent
it) and the configured extra headers (``Authorization``, ``Host`` and the like; they
cannot replace the first two, nor ``Content-Length``). Credentials in the URL
(``https://user:pass@host/``) become Basic auth. A resend after a crash carries the same
key, so a receiver that honours it applies the action once.

Errors and logs show the URL only as ``scheme://host[:port]/…?name=…``
(:func:`~connector.common.redaction.redact_url`): hosted webhooks carry their secret in the path
or the query. Text quoted from elsewhere (an answer's body, a socket error) has the URL's
secret parts starred. Of an answer at most :data:`MAX_BODY` bytes are read: the rest of a
larger body is never loaded, and its connection is closed rather than drained.

Concurrency: up to ``concurrency`` requests in flight (actions of different keys; the
dispatcher keeps one key's in order), all on one event loop over a pool of keep-alive
HTTP/1.1 connections (:mod:`connector.targets.http1`): a request in flight costs a
connection's place, not a thread, so a slow receiver is met with hundreds in flight.
With ``http2``, an ``https`` receiver that offers HTTP/2 in its TLS handshake gets it: up
to 100 requests in flight share one connection (:mod:`connector.targets.http2`). Off by
default: HTTP/2's framing in Python (the h2 library) costs the connector about 2.7 times
the CPU of an HTTP/1.1 request (bench/RESULTS.md); it is for receivers that limit
connections, not for speed. The
target is ``asynchronous``: the dispatcher hands it calls of several actions
(``batch_size``), whose requests go out at once, and is answered from the loop, so the
requests in flight stay near ``concurrency`` whether the calls are full or not. A
kept-alive connection the server closed meanwhile is reopened and the request sent once
more, as browsers do; that is safe because the request carries its idempotency key.

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
import math
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from connector.common.redaction import redact, redact_url, url_secrets
from connector.common.template import Template
from connector.targets.base import Target
from connector.targets.http1 import (
    Answers,
    ConnectTimeout,
    HttpPool,
    ProtocolError,
    Request,
    Response,
    header_block,
)
from kec.action import Action
from kec.errors import ConfigError, TargetError, TargetRejected
from kec.jsontext import owned

BODY_TAIL = 500  # characters of a refusal's response body quoted in the error
MAX_BODY = 64 * 1024  # bytes of an answer read at most
RETRIABLE_STATUS = frozenset({408, 409, 425, 429})
# What a retriable 4xx means, for the message.
_MEANING = {
    409: "a request with this Idempotency-Key is in progress",
    425: "too early",
}
_OWN_HEADERS = frozenset({"content-type", "idempotency-key", "content-length"})
# The requests in flight (``concurrency``) are handed out in calls of ``concurrency /
# _CALLS`` actions (deliver_async: as many calls as fit); the target's _CALLS threads only
# try again what failed transiently.
_CALLS = 8


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
    if isinstance(exc, ConnectTimeout):
        return "ConnectTimeout"
    if isinstance(exc, TimeoutError):
        return "ReadTimeout"
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return "ConnectError"
    return type(exc).__name__


class WebhookTarget(Target):
    """POSTs actions to ``url``; its event loop and connections start at ``open()``."""

    asynchronous = True

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
        http2: bool = False,
    ) -> None:
        """``template``: the body to send instead of the action
        (:mod:`connector.common.template`). ``http2``: offer HTTP/2 to an ``https``
        receiver (it is used where the receiver accepts it; HTTP/1.1 otherwise)."""
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
        try:
            header_block(headers or {})
        except ValueError as exc:
            raise ConfigError(f"webhook target {name!r}: {exc}") from None
        self.name = name
        self.requests = concurrency  # in flight at once
        self.concurrency = min(concurrency, _CALLS)
        self.batch_size = math.ceil(concurrency / self.concurrency)
        self._template = template
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = port if port is not None else (443 if self._https else 80)
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
        self._http2 = http2
        self._pool: HttpPool | None = None

    def open(self) -> None:
        if self._pool is not None:
            return
        context = None
        if self._https:
            context = ssl.create_default_context()
            if not self._verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        agent = f"kafka-event-connector ({socket.gethostname()}; pid {os.getpid()})"
        pool = HttpPool(
            self._host, self._port, self._path,
            headers={**self._headers, "User-Agent": agent},
            ssl_context=context, timeout=self._timeout, max_connections=self.requests,
            max_body=MAX_BODY, name=self.name, http2=self._http2,
        )  # fmt: skip
        pool.open()
        self._pool = pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def deliver(self, action: Action) -> None:
        failure = self.deliver_many([action]).get(action.action_id)
        if failure is not None:
            raise failure

    def deliver_many(self, actions: Sequence[Action]) -> dict[str, BaseException]:
        """POST every action at once (up to ``concurrency`` in flight); each action's
        outcome is its own."""
        return self._failures(actions, self._open_pool().post_all(self._requests(actions)))

    def deliver_async(
        self, actions: Sequence[Action], done: Callable[[dict[str, BaseException]], None]
    ) -> None:
        """:meth:`deliver_many` answered on the pool's loop, no thread waiting."""
        pool, requests = self._open_pool(), self._requests(actions)

        def answered(answers: Answers) -> None:
            try:
                failures = self._failures(actions, answers)
            except Exception as exc:  # never leave the dispatcher without an answer
                failures = {a.action_id: exc for a in actions}
            done(failures)

        pool.post_all_then(requests, answered)

    def _open_pool(self) -> HttpPool:
        pool = self._pool
        if pool is None:
            raise TargetError(f"webhook target {self.name} is not open")
        return pool

    def _requests(self, actions: Sequence[Action]) -> list[Request]:
        template = self._template
        return [
            Request(
                # Owned: held until the answer comes, not orjson's buffer of 4 KiB or more
                # (a template's body is written by json, to its size).
                template.render_bytes(a) if template else owned(a.to_json_bytes()),
                {"Idempotency-Key": a.action_id},
            )
            for a in actions
        ]

    def _failures(self, actions: Sequence[Action], answers: Answers) -> dict[str, BaseException]:
        failures: dict[str, BaseException] = {}
        for action, answer in zip(actions, answers, strict=True):
            if isinstance(answer, Response):
                if not 200 <= answer.status < 300:
                    failures[action.action_id] = self._refusal(answer, action)
            elif isinstance(answer, OSError | ProtocolError):
                failures[action.action_id] = self._failure(action, answer)
            else:
                failures[action.action_id] = answer
        return failures

    def _failure(self, action: Action, exc: BaseException) -> TargetError:
        return TargetError(
            f"webhook target {self.name}: POST {self._shown} failed"
            f" (action {action.action_id}): {_kind(exc)}: {redact(str(exc), self._secrets)}"
        )

    def _refusal(self, response: Response, action: Action) -> TargetError:
        status = response.status
        message = (
            f"webhook target {self.name}: POST {self._shown} answered {status}"
            f" {response.reason} (action {action.action_id})"
        )
        retriable = status in RETRIABLE_STATUS or status >= 500
        if status in _MEANING:
            message += f": {_MEANING[status]}"
        raw = response.header("Retry-After")
        if retriable and raw is not None:
            delay = retry_after_seconds(raw)
            message += f"; Retry-After: {raw if delay is None else f'{delay:g}s'}"
        if 300 <= status < 400:
            location = response.header("Location")
            message += f"; Location: {'-' if location is None else redact_url(location)}"
        body = response.body[:MAX_BODY]
        text = redact(body.decode(errors="replace").strip(), self._secrets)
        if text:
            more = "…" if len(text) > BODY_TAIL else ""
            message += f"; body: {text[:BODY_TAIL]}{more}"
        if not retriable and 300 <= status < 500:
            return TargetRejected(message)
        return TargetError(message)
