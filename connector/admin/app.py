"""The admin server's routes: the JSON API under ``/api/v1/`` and the console at ``/``.

API (documented in :mod:`connector.admin.openapi`, served at ``/api/v1/openapi.json``):

=================================================  ===========================================
``GET  /api/v1/status``                            health checks, version, instance, outbox
``GET  /api/v1/partitions``                        owner, epoch, next offset, lag
``GET  /api/v1/rules``                             rules and how often each fired
``GET  /api/v1/targets``                           targets: deliveries, failures, health
``GET  /api/v1/history``                           throughput and delivery latency, last minutes
``GET  /api/v1/dead-letters?offset=&limit=``       dead actions and dead records, paginated
``POST /api/v1/dead-letters/{action_id}/replay``   one dead action back for delivery
``GET  /api/v1/lineage?event_id=|coordinates=|``   an event's actions and their deliveries
``action_id=|key=|context=``
``POST /api/v1/rules/{name}/pause|resume``         stop or restart a rule firing
``POST /api/v1/targets/{name}/pause|resume``       hold or release a target's deliveries
``POST /api/v1/reload``                            reload the config file's rules and targets
=================================================  ===========================================

Every refusal is JSON ``{"error": <code>, "detail": <text>}`` (4xx; 501 where this run
cannot do it: pause, resume and reload without a config file).

Who may: with a token configured (required beyond loopback), the API needs
``Authorization: Bearer TOKEN`` or the console's session cookie; a POST that comes with
the cookie only must also carry ``X-KEC-Console: 1``, a header another site's page
cannot send, so a page elsewhere cannot make a logged-in browser replay or pause. The
console's login form takes the token once and sets the cookie (HttpOnly, SameSite
strict; it holds a keyed hash of the token, not the token), so no token is ever in a
URL. Without a token (loopback only) everything is open to this host.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from connector.admin import console
from connector.admin.openapi import API_PREFIX, openapi_document
from connector.admin.source import AdminError, AdminSource, page_bounds
from connector.gateway.limits import BodyLimit
from kec.errors import ConnectorError

__all__ = ["CONSOLE_HEADER", "COOKIE", "build_admin_app", "session_value"]

log = logging.getLogger(__name__)

COOKIE = "kec_admin"
CONSOLE_HEADER = "x-kec-console"
MAX_BODY_BYTES = 16_384  # the login form is the only body
Handler = Callable[[Request], Awaitable[Response]]
_STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
# The console's pages load nothing from elsewhere, run no inline script and are never
# framed (so no other page can overlay its buttons).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _error(status: int, error: str, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def session_value(token: str) -> str:
    """The console cookie's value for ``token``: a keyed hash, so the cookie is not the
    token (and a leaked cookie does not give the bearer token)."""
    return hmac.new(token.encode(), b"kec-admin-console-session", hashlib.sha256).hexdigest()


def build_admin_app(source: AdminSource, *, token: str | None = None) -> Starlette:
    """The admin ASGI app on ``source``; ``token``: see the module docstring."""
    bearer = f"Bearer {token}".encode() if token else None
    session = session_value(token).encode() if token else None
    source.secured = session is not None

    def by_bearer(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return bearer is not None and hmac.compare_digest(given, bearer)

    def by_cookie(request: Request) -> bool:
        given = request.cookies.get(COOKIE, "").encode()
        return session is not None and hmac.compare_digest(given, session)

    def api(handler: Callable[[Request], Any], *, post: bool = False) -> Handler:
        """A JSON route: the token checked, ``handler`` run in a worker thread (the store
        blocks), :class:`AdminError` answered as JSON."""

        async def check(request: Request) -> Response:
            if bearer is not None and not by_bearer(request):
                if not by_cookie(request):
                    return _error(
                        401,
                        "unauthorized",
                        "a valid 'Authorization: Bearer <token>' header is required",
                        **{"WWW-Authenticate": "Bearer"},
                    )
                if post and request.headers.get(CONSOLE_HEADER) != "1":
                    return _error(
                        403, "forbidden", f"a console POST needs the header {CONSOLE_HEADER}: 1"
                    )
            try:
                body = await run_in_threadpool(handler, request)
            except AdminError as exc:
                return _error(exc.status, exc.code, exc.detail)
            except ConnectorError as exc:
                log.exception("admin request failed")
                return _error(500, "internal_error", str(exc))
            except Exception:  # a bug: logged with its traceback, answered JSON all the same
                log.exception("admin request failed")
                return _error(500, "internal_error", "the request failed (see the log)")
            return JSONResponse(body, headers={"Cache-Control": "no-store"})

        return check

    def page(render: Callable[[Request], str]) -> Handler:
        """A console page: to the login form without a session, else ``render`` in a
        worker thread."""

        async def show(request: Request) -> Response:
            if session is not None and not by_cookie(request) and not by_bearer(request):
                return RedirectResponse("/login", status_code=303)
            try:
                text = await run_in_threadpool(render, request)
            except AdminError as exc:
                page = console.error_page(exc.status, exc.detail)
                return HTMLResponse(page, exc.status, headers=PAGE_HEADERS)
            return HTMLResponse(text, headers=PAGE_HEADERS)

        return show

    # -- the API ---------------------------------------------------------------------------

    def lineage(request: Request) -> Any:
        _, limit = page_bounds(None, request.query_params.get("limit"))
        return source.lineage(request.query_params, limit)

    def dead_letters(request: Request) -> Any:
        q = request.query_params
        offset, limit = page_bounds(q.get("offset"), q.get("limit"))
        return source.dead_letters(offset, limit)

    def pause(kind: str, resume: bool) -> Callable[[Request], Any]:
        return lambda request: source.pause(kind, request.path_params["name"], resume=resume)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(openapi_document())

    # -- the console -----------------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        if session is None:
            return RedirectResponse("/", status_code=303)
        return HTMLResponse(console.login_page(), headers=PAGE_HEADERS)

    async def login(request: Request) -> Response:
        if session is None:
            return RedirectResponse("/", status_code=303)
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (fields.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), (token or "").encode()):
            problem = console.login_page("That token is not the admin token.")
            return HTMLResponse(problem, 401, headers=PAGE_HEADERS)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session.decode(), httponly=True, samesite="strict", path="/")
        return response

    async def logout(_request: Request) -> Response:
        response = RedirectResponse("/login" if session is not None else "/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return _error(404, "not_found", f"no such asset: {name}")
        text = resources.files("connector.admin").joinpath("static", name).read_text()
        return Response(text, media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        name = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        return _error(status, name, detail)

    p = API_PREFIX
    routes = [
        Route(f"{p}/openapi.json", openapi, methods=["GET"]),
        Route(f"{p}/status", api(lambda _r: source.status()), methods=["GET"]),
        Route(f"{p}/partitions", api(lambda _r: {"partitions": source.partitions()}),
              methods=["GET"]),
        Route(f"{p}/rules", api(lambda _r: {"rules": source.rules()}), methods=["GET"]),
        Route(f"{p}/targets", api(lambda _r: {"targets": source.targets()}), methods=["GET"]),
        Route(f"{p}/history", api(lambda _r: source.history_series()), methods=["GET"]),
        Route(f"{p}/dead-letters", api(dead_letters), methods=["GET"]),
        Route(f"{p}/dead-letters/{{action_id}}/replay",
              api(lambda r: source.replay(r.path_params["action_id"]), post=True),
              methods=["POST"]),
        Route(f"{p}/lineage", api(lineage), methods=["GET"]),
        *(Route(f"{p}/{kind}/{{name}}/{verb}", api(pause(kind, verb == "resume"), post=True),
                methods=["POST"])
          for kind in ("rules", "targets") for verb in ("pause", "resume")),
        Route(f"{p}/reload", api(lambda _r: source.reload(), post=True), methods=["POST"]),
        Route("/", page(lambda _r: console.overview_page(source)), methods=["GET"]),
        Route("/live", page(lambda _r: console.live_fragment(source)), methods=["GET"]),
        Route("/lineage", page(lambda r: console.lineage_page(source, r.query_params)),
              methods=["GET"]),
        Route("/dead-letters", page(lambda r: console.dead_letters_page(source, r.query_params)),
              methods=["GET"]),
        Route("/rules", page(lambda _r: console.rules_page(source)), methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/{name}", static, methods=["GET"]),
    ]  # fmt: skip
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)],
    )
