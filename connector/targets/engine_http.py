"""The HTTP side shared by the engine targets (Airflow, Prefect): one thread-safe client,
bearer-token authentication, and the mapping of answers onto the outbox's contract.

=====================================  =====================================================
no answer (refused, reset, timeout)    :class:`~kec.errors.TargetError` (retried)
408, 429, 5xx (Airflow on SQLite       :class:`~kec.errors.TargetError` (retried)
answers 500 "database is locked")
401 with a login to renew              log in again once, then as below
other 4xx, 3xx                         :class:`~kec.errors.TargetRejected` with the engine's
                                       own message (its JSON ``detail``, else the body)
=====================================  =====================================================

Which 2xx or 4xx means "already done" (a duplicate) is each engine's business: the
targets look at the status before calling :meth:`EngineHttp.fail`.

The engine's URL appears in messages only as :func:`~connector.common.redaction.redact_url` shows
it (``http://host:port/…``: a path before the API's, as a proxy's, may hold a token), and
text quoted from elsewhere (a transport error, an answer) has the URL's secret parts
starred.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx

from connector.common.redaction import redact, redact_url, url_secrets
from kec.errors import ConfigError, TargetError, TargetRejected

BODY_TAIL = 500  # characters of an answer quoted in an error
RETRIABLE_STATUS = frozenset({408, 429})

Login = Callable[[httpx.Client], str]
"""Obtains a fresh bearer token with the given client (raises TargetError on failure)."""


def engine_url(kind: str, name: str, url: str) -> httpx.URL:
    """``url`` parsed, refused unless it is ``http(s)://host…`` (no I/O)."""
    shown = redact_url(url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        why = redact(str(exc), url_secrets(url))
        raise ConfigError(f"{kind} target {name!r}: invalid url {shown}: {why}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{kind} target {name!r}: url must be http(s)://host…, not {shown}")
    return parsed


def engine_message(response: httpx.Response) -> str:
    """What the engine said: its JSON ``detail`` (FastAPI's shape), else the body's start."""
    text = response.text.strip()
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"))
    return text[:BODY_TAIL]


class EngineHttp:
    """An :class:`httpx.Client` for one engine, safe to share between threads.

    ``login`` (optional) gets a bearer token: called on first use and once more when the
    engine answers 401; ``token`` is a fixed one. Created in :meth:`open`, so building a
    target does no I/O.
    """

    def __init__(
        self,
        what: str,
        base_url: httpx.URL,
        *,
        timeout: float,
        verify: bool,
        token: str | None = None,
        login: Login | None = None,
        concurrency: int = 8,
    ) -> None:
        self.what = what
        self._base = base_url
        self._timeout = timeout
        self._verify = verify
        self._token = token
        self._login = login
        self._concurrency = concurrency
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        # Errors end up in logs and the dead-letter table: never quote the URL's secrets.
        # The API path follows: http://host:8080/api/v2/…, or http://host/…/api/v2/….
        self.shown = redact_url(base_url.copy_with(query=None, fragment=None))
        self.secrets = url_secrets(base_url)

    def open(self) -> None:
        with self._lock:
            if self._client is None:
                # One connection per delivering thread, so concurrent keys do not queue.
                limits = httpx.Limits(max_connections=max(self._concurrency, 1) + 2)
                self._client = httpx.Client(
                    base_url=self._base,
                    headers={"User-Agent": "kafka-event-connector"},
                    timeout=httpx.Timeout(self._timeout),
                    verify=self._verify,
                    follow_redirects=False,
                    limits=limits,
                )

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """One request; transport failures become a retriable :class:`TargetError`."""
        client = self._client
        if client is None:
            raise TargetError(f"{self.what} is not open")
        token = self._bearer(client, stale=None)
        response = self._send(client, method, path, json_body, params, token)
        if response.status_code == 401 and self._login is not None:
            token = self._bearer(client, stale=token)
            response = self._send(client, method, path, json_body, params, token)
        return response

    def fail(self, response: httpx.Response, doing: str) -> TargetError:
        """The error for an answer the caller did not expect (to ``raise``); ``doing``
        names the target, the action and the call."""
        status = response.status_code
        message = (
            f"{doing} answered {status} {response.reason_phrase}: "
            f"{redact(engine_message(response), self.secrets) or '(no body)'}"
        )
        if status in RETRIABLE_STATUS or status >= 500:
            return TargetError(message)
        return TargetRejected(message)

    def _send(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        json_body: Any,
        params: dict[str, str] | None,
        token: str | None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            return client.request(method, path, json=json_body, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise TargetError(
                f"{self.what}: {method} {self.shown}{path} failed:"
                f" {type(exc).__name__}: {redact(str(exc), self.secrets)}"
            ) from exc

    def _bearer(self, client: httpx.Client, stale: str | None) -> str | None:
        """The current token; a new one when there is none yet or ``stale`` was refused."""
        if self._login is None:
            return self._token
        with self._lock:
            if self._token is None or self._token == stale:
                self._token = self._login(client)
            return self._token
