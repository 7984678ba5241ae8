"""The ``webhook`` target: HTTP POST of each action, with its ``Idempotency-Key``.

Request: ``POST {url}``, body ``Action.to_json()``, headers ``Content-Type:
application/json``, ``Idempotency-Key: <action id>`` and the configured extra headers
(``Authorization`` and the like; they cannot replace the two above). A resend after a crash
carries the same key, so a receiver that honours it applies the action once.

Outcome by response:

=====================================  =====================================================
2xx                                    delivered
408, 429, 5xx, no response (timeout,   :class:`~kec.errors.TargetError` (retriable);
connection refused or reset, …)        a ``Retry-After`` is quoted in the message
3xx                                    :class:`~kec.errors.TargetRejected`: redirects
                                       are not followed (a POST may turn into a GET)
any other 4xx                          :class:`~kec.errors.TargetRejected`
=====================================  =====================================================

The target never sleeps: backoff between attempts is the dispatcher's (tenacity in-round,
then durable retries). ``timeout`` bounds each phase of a request (connect, write, read).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import httpx

from connector.targets.base import Target
from kec.action import Action
from kec.errors import ConfigError, TargetError, TargetRejected

BODY_TAIL = 500  # characters of a refusal's response body quoted in the error
RETRIABLE_STATUS = frozenset({408, 429})
_OWN_HEADERS = frozenset({"content-type", "idempotency-key"})


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


class WebhookTarget(Target):
    """POSTs actions to ``url`` with a sync :class:`httpx.Client` created in :meth:`open`."""

    def __init__(
        self,
        name: str = "webhook",
        url: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        verify: bool = True,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"webhook target {name!r}: invalid url {url!r}: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"webhook target {name!r}: url must be http(s)://host/…: {url!r}")
        if timeout <= 0:
            raise ConfigError(f"webhook target {name!r}: timeout must be positive")
        clash = sorted(h for h in headers or {} if h.lower() in _OWN_HEADERS)
        if clash:
            raise ConfigError(f"webhook target {name!r}: headers {clash} are set by the target")
        self.name = name
        self._url = parsed
        # Errors end up in logs and the dead-letter table: never quote credentials.
        self._shown = str(parsed.copy_with(username=None, password=None, query=None))
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._verify = verify
        self._client: httpx.Client | None = None

    def open(self) -> None:
        if self._client is None:
            self._client = httpx.Client(
                headers={"User-Agent": "kafka-event-connector", **self._headers},
                timeout=httpx.Timeout(self._timeout),
                verify=self._verify,
                follow_redirects=False,
            )

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def deliver(self, action: Action) -> None:
        if self._client is None:
            raise TargetError(f"webhook target {self.name} is not open")
        try:
            response = self._client.post(
                self._url,
                content=action.to_json().encode(),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": action.action_id,
                },
            )
        except httpx.HTTPError as exc:
            raise TargetError(
                f"webhook target {self.name}: POST {self._shown} failed"
                f" (action {action.action_id}): {type(exc).__name__}: {exc}"
            ) from exc
        self._check(response, action)

    def _check(self, response: httpx.Response, action: Action) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = (
            f"webhook target {self.name}: POST {self._shown} answered {status}"
            f" {response.reason_phrase} (action {action.action_id})"
        )
        retriable = status in RETRIABLE_STATUS or status >= 500
        if retriable and "Retry-After" in response.headers:
            raw = response.headers["Retry-After"]
            delay = retry_after_seconds(raw)
            message += f"; Retry-After: {raw if delay is None else f'{delay:g}s'}"
        if 300 <= status < 400:
            message += f"; Location: {response.headers.get('Location', '-')}"
        body = response.text.strip()
        if body:
            message += f"; body: {body[:BODY_TAIL]}"
        if not retriable and 300 <= status < 500:
            raise TargetRejected(message)
        raise TargetError(message)
