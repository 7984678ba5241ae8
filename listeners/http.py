"""``HTTPListener``: Ray's HTTP event listener, backed by the events gateway (docs/architecture.md).

How it learns of an event: it asks the gateway (``event-connector gateway``, or the one
``run`` serves), which reads the waiters' queues the connector's pipeline writes when it
checkpoints HTTP events. One event goes through Ray's protocol so:

1. ``poll_for_event(event_key, workflow_id)`` long-polls
   ``GET /event/wait/{workflow_id}/{event_key}``. While the poll is open the gateway
   counts a listener waiting for that pair (this is what strict mode checks). It answers
   with the pair's oldest event that is durably checkpointed and not yet consumed — also
   one that was sent *before* the listener arrived — and leases it to this caller
   (default 30 s), so a concurrent listener of the same pair does not get it too. With
   nothing there it answers 204 and the listener polls again, until ``timeout``.
2. The caller (``wait_for_event``) checkpoints the returned event durably.
3. ``event_checkpointed(event)`` posts ``/event/consumed/{event_id}``: the gateway
   records the event as consumed (durably, in its store), so no later listener of the
   pair gets it again. Idempotent: a repeated call (after a crash) does no harm. A
   listener that polled but crashed before step 3 loses its lease after 30 s and the
   event is handed out again — the same event id, so a durable step deduplicates it.

The event's value is the JSON text of ``event_payload`` (``event.json_value()``), its key
the ``event_key``, its ``context`` the workflow id, its namespace the gateway's.

Configuration (no constructor arguments; resolved at every call, first match wins):
:func:`configure` (``url=``, ``token=``) for this process, else ``KEC_GATEWAY_URL`` and
``KEC_GATEWAY_TOKEN``. The workflow id is the ``workflow_id`` argument, else the
:data:`current_workflow_id` context variable (set it around a workflow's code), else
``KEC_WORKFLOW_ID``. Unreachable gateways (restarts) are retried until ``timeout``.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from kec.errors import ConfigError, GatewayError
from kec.event import Event
from listeners.base import EventListener

__all__ = [
    "ENV_TOKEN",
    "ENV_URL",
    "ENV_WORKFLOW_ID",
    "HTTPListener",
    "HttpSettings",
    "configure",
    "current_workflow_id",
    "reset_configuration",
    "resolve_settings",
]

ENV_URL = "KEC_GATEWAY_URL"
ENV_TOKEN = "KEC_GATEWAY_TOKEN"
ENV_WORKFLOW_ID = "KEC_WORKFLOW_ID"

LONG_POLL = 20.0  # seconds one long poll may stay open
RETRY_MAX = 2.0  # seconds between tries at most while the gateway is unreachable
CONSUME_RETRY_FOR = 30.0  # seconds event_checkpointed keeps trying an unreachable gateway

current_workflow_id: ContextVar[str | None] = ContextVar("kec_workflow_id", default=None)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    url: str
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


_configured: HttpSettings | None = None


def configure(*, url: str, token: str | None = None) -> HttpSettings:
    """Point this process's HTTP listeners at a gateway, e.g. ``http://127.0.0.1:8000``."""
    global _configured
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"gateway url {url!r} must start with http:// or https://")
    _configured = HttpSettings(url.rstrip("/"), token or None)
    return _configured


def reset_configuration() -> None:
    global _configured
    _configured = None


def resolve_settings() -> HttpSettings:
    if _configured is not None:
        return _configured
    url = os.environ.get(ENV_URL)
    if not url:
        raise ConfigError(
            "the HTTP listener is not configured: call listeners.http.configure(url=...) "
            f"or set {ENV_URL} (and {ENV_TOKEN} when the gateway has a token)"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{ENV_URL}={url!r} must start with http:// or https://")
    return HttpSettings(url.rstrip("/"), os.environ.get(ENV_TOKEN) or None)


def _workflow_id(given: str | None) -> str:
    workflow_id = given or current_workflow_id.get() or os.environ.get(ENV_WORKFLOW_ID)
    if not workflow_id:
        raise ConfigError(
            "no workflow id: pass workflow_id=, set listeners.http.current_workflow_id "
            f"or {ENV_WORKFLOW_ID}"
        )
    return workflow_id


def _fail(response: httpx.Response, doing: str) -> GatewayError | ConfigError:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if response.status_code == 401:
        return ConfigError(f"{doing}: the gateway refused the token (set {ENV_TOKEN})")
    return GatewayError(f"{doing}: HTTP {response.status_code}: {detail}")


class HTTPListener(EventListener):
    """Waits for the HTTP event of one ``(workflow_id, event_key)``; see the module docstring."""

    async def poll_for_event(
        self,
        event_key: str,
        workflow_id: str | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds the retries, not one call
    ) -> Event:
        """The pair's next unconsumed event, once durably checkpointed by the connector.

        Raises :class:`TimeoutError` after ``timeout`` seconds without one,
        :class:`~kec.errors.ConfigError` when unconfigured or the token is refused,
        :class:`~kec.errors.GatewayError` on an unexpected answer.
        """
        settings = resolve_settings()
        wf = _workflow_id(workflow_id)
        url = f"{settings.url}/event/wait/{quote(wf, safe='')}/{quote(event_key, safe='')}"
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = 0.1
        async with httpx.AsyncClient(headers=settings.headers()) as client:
            while True:
                left = LONG_POLL if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no HTTP event {event_key!r} for workflow {wf!r}")
                wait = min(left, LONG_POLL)
                try:
                    response = await client.get(
                        url, params={"timeout": f"{wait:.3f}"}, timeout=wait + 10
                    )
                except httpx.TransportError:
                    # The gateway restarts or is not up yet: try again, bounded by timeout.
                    await asyncio.sleep(min(backoff, max(0.0, left)))
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                backoff = 0.1
                if response.status_code == 204:
                    continue
                if response.status_code == 200:
                    return Event.from_dict(response.json()["event"])
                raise _fail(response, f"waiting for {event_key!r} of workflow {wf!r}")

    async def event_checkpointed(self, event: Event) -> None:
        """Mark ``event`` consumed at the gateway, so no other listener gets it; idempotent."""
        settings = resolve_settings()
        url = f"{settings.url}/event/consumed/{quote(event.event_id, safe='')}"
        deadline = time.monotonic() + CONSUME_RETRY_FOR
        backoff = 0.1
        async with httpx.AsyncClient(headers=settings.headers(), timeout=10) as client:
            while True:
                try:
                    response = await client.post(url)
                except httpx.TransportError as exc:
                    if time.monotonic() + backoff > deadline:
                        raise GatewayError(
                            f"marking {event.event_id} consumed: gateway unreachable: {exc}"
                        ) from exc
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                if response.status_code == 200:
                    return
                raise _fail(response, f"marking {event.event_id} consumed")
