"""The HTTP gateway's routes (docs/architecture.md), a Starlette app around a :class:`Gateway`.

``POST /event/send_event/{workflow_id}``, body ``{"event_key": str, "event_payload": any}``,
optional ``Idempotency-Key`` header (the event id). Answers once the event is durably
checkpointed:

=====  =================================================================================
200    ``{"event_id", "offset", "partition"}``: checkpointed (also for a resend)
400    the body is not JSON (``invalid_json``), or nests deeper than the limit
       (``json_too_deep``), or the event is one the pipeline would send to the dead
       letters (``invalid_event``: a workflow id or event key over 1,024 bytes, a NUL in
       one, text that is not Unicode)
401    a bearer token is configured and the request does not carry it
404    strict mode: no listener waits for this ``(workflow_id, event_key)``
413    the body is over the size limit (``body_too_large``), or the event's value is over
       the pipeline's ``max_event_bytes`` (``event_too_large``)
422    fields missing or of the wrong type
500    the event reached Kafka but was not checkpointed in time (a resend is safe)
503    Kafka did not acknowledge the event in time
=====  =================================================================================

The limits (body size, JSON depth, connections, header timeout) are
:class:`~connector.gateway.limits.GatewayLimits`.

Every error body is ``{"error": <short code>, "detail": <text or list>}``.

Ids in the path are one segment each: a ``/`` inside a workflow id or an event key is
written ``%2F`` (as :class:`listeners.http.HTTPListener` does), and a path with more
segments than the route has is refused with 400 (``invalid_path``), so no id can reach
into another workflow's pair. The ids are read from the raw path, since servers decode
``%2F`` into ``/`` before routing.

For listeners (:class:`listeners.http.HTTPListener`):
``GET /event/wait/{workflow_id}/{event_key}?timeout=S`` long-polls: 200 ``{"event": ...}``
(the event is leased to this caller) or 204 when nothing came within ``S`` seconds
(at most :data:`MAX_WAIT`); ``POST /event/consumed/{event_id}`` marks an event consumed
(200, or 404 when the store does not hold it). ``GET /healthz`` needs no token.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector.common.json_depth import json_too_deep
from connector.gateway.ingest import EventRefused, Gateway
from connector.gateway.limits import BodyLimit, GatewayLimits
from connector.metrics.core import Health, health_body
from kec.codec import explicit_id_problem
from kec.errors import CheckpointError, ConnectorError, KafkaClientError

__all__ = ["MAX_WAIT", "build_app"]

log = logging.getLogger(__name__)

MAX_WAIT = 30.0  # seconds a long poll may be held open
Handler = Callable[[Request], Awaitable[Response]]


class SendBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_key: StrictStr = Field(min_length=1)
    event_payload: Any = Field(...)


def _error(status: int, error: str, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


SEND_PREFIX = "/event/send_event/"
WAIT_PREFIX = "/event/wait/"


def _path_ids(request: Request, prefix: str, names: tuple[str, ...]) -> tuple[str, ...] | Response:
    """The ids after ``prefix`` in the request's path, one per segment, percent-decoded;
    or the 400 answer when the path has another number of segments, an empty one, or one
    that is not UTF-8.

    Read from ``raw_path``: the server has already turned ``%2F`` into ``/`` in ``path``,
    where ``a%2Fb/c`` (workflow ``a/b``, key ``c``) and ``a/b%2Fc`` (workflow ``a``, key
    ``b/c``) would look alike.
    """
    raw: bytes = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
    path = raw.split(b"?", 1)[0]
    usage = f"{prefix}{'/'.join(n.upper() for n in names)}"
    if not path.startswith(prefix.encode()):
        return _error(400, "invalid_path", f"the path is {usage}")
    segments = path[len(prefix) :].split(b"/")
    if len(segments) != len(names):
        return _error(
            400,
            "invalid_path",
            f"the path is {usage}, one segment each: write a '/' inside "
            f"{' or '.join(names)} as %2F",
        )
    try:
        ids = tuple(unquote_to_bytes(s).decode("utf-8") for s in segments)
    except UnicodeDecodeError:
        return _error(400, "invalid_path", f"{' and '.join(names)} must be UTF-8")
    empty = [name for name, value in zip(names, ids, strict=True) if not value]
    if empty:
        return _error(400, "invalid_path", f"{' and '.join(empty)} must not be empty")
    return ids


def build_app(
    gateway: Gateway,
    *,
    token: str | None = None,
    limits: GatewayLimits | None = None,
    health: Callable[[], Health] | None = None,
) -> Starlette:
    """The gateway's ASGI app; its lifespan starts and closes ``gateway``.

    ``token``: when set, every ``/event/`` route needs ``Authorization: Bearer <token>``.
    Strict mode comes from ``gateway.settings.strict``. ``limits``: the body size and
    JSON depth bounds apply here (the others are the server's). ``health``: the readiness
    of the connector the gateway runs in, for ``/healthz`` (alone, the gateway is ready
    while it serves).
    """
    limits = limits or GatewayLimits()
    max_depth = limits.max_json_depth
    expected = f"Bearer {token}".encode() if token else None

    def guarded(handler: Handler) -> Handler:
        async def check(request: Request) -> Response:
            if expected is not None:
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    return _error(
                        401,
                        "unauthorized",
                        "a valid 'Authorization: Bearer <token>' header is required",
                        **{"WWW-Authenticate": "Bearer"},
                    )
            try:
                return await handler(request)
            except EventRefused as exc:  # before it reaches Kafka: nothing to resend
                if exc.too_large:
                    return _error(413, "event_too_large", str(exc))
                return _error(400, "invalid_event", str(exc))
            except KafkaClientError as exc:
                return _error(503, "kafka_unavailable", str(exc))
            except CheckpointError as exc:
                return _error(500, "processing_failed", str(exc))
            except ConnectorError as exc:
                log.exception("gateway request failed")
                return _error(500, "processing_failed", str(exc))

        return check

    async def send_event(request: Request) -> Response:
        ids = _path_ids(request, SEND_PREFIX, ("workflow_id",))
        if isinstance(ids, Response):
            return ids
        (workflow_id,) = ids
        try:
            text = (await request.body()).decode("utf-8-sig")
            if json_too_deep(text, max_depth):
                return _error(
                    400, "json_too_deep", f"the body nests arrays or objects over {max_depth} deep"
                )
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            return _error(400, "invalid_json", f"the body is not JSON: {exc}")
        try:
            body = SendBody.model_validate(data)
        except ValidationError as exc:
            detail = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            return _error(422, "invalid_body", detail)
        if gateway.settings.strict and not gateway.waiters.is_waited((workflow_id, body.event_key)):
            return _error(
                404,
                "not_found",
                f"no listener waits for event_key {body.event_key!r} of workflow "
                f"{workflow_id!r} (strict mode)",
            )
        event_id = request.headers.get("idempotency-key") or None
        problem = explicit_id_problem(event_id) if event_id else None
        if problem is not None:
            return _error(400, "invalid_idempotency_key", f"Idempotency-Key {problem}")
        result = await gateway.send(workflow_id, body.event_key, body.event_payload, event_id)
        return JSONResponse(
            {"event_id": result.event_id, "offset": result.offset, "partition": result.partition}
        )

    async def wait_event(request: Request) -> Response:
        ids = _path_ids(request, WAIT_PREFIX, ("workflow_id", "event_key"))
        if isinstance(ids, Response):
            return ids
        pair = (ids[0], ids[1])
        try:
            timeout = float(request.query_params.get("timeout", "20"))
        except ValueError:
            return _error(422, "invalid_query", "timeout must be a number of seconds")
        event = await gateway.wait(pair, max(0.0, min(timeout, MAX_WAIT)))
        if event is None:
            return Response(status_code=204)
        return JSONResponse({"event": event.to_dict()})

    async def consumed(request: Request) -> Response:
        event_id = request.path_params["event_id"]
        event = await gateway.consume(event_id)
        if event is None:
            return _error(404, "not_found", f"the store holds no event {event_id!r}")
        return JSONResponse({"event_id": event_id, "consumed": True})

    async def healthz(_request: Request) -> Response:
        if health is None:
            return JSONResponse({"status": "ready", "topic": gateway.settings.topic})
        code, body = health_body(health())
        return JSONResponse(body, status_code=code)

    async def livez(_request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def http_error(_request: Request, exc: Exception) -> Response:
        # Unknown paths and methods answer JSON too, like every other refusal.
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        name = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        return _error(status, name, detail)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    routes = [
        # Matched on the decoded path; the handlers read the ids from the raw one.
        Route(SEND_PREFIX + "{ids:path}", guarded(send_event), methods=["POST"]),
        Route(WAIT_PREFIX + "{ids:path}", guarded(wait_event), methods=["GET"]),
        Route("/event/consumed/{event_id:path}", guarded(consumed), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
        middleware=[Middleware(BodyLimit, max_bytes=limits.max_body_bytes)],
    )
