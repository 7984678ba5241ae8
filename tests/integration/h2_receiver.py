"""A webhook receiver that speaks HTTP/2 over TLS (hypercorn), in a process of its own.

``python -m tests.integration.h2_receiver --fd N --cert C --key K [--alpn h2,http/1.1]``
serves on the listening socket ``N`` (bound by the test, so no port is guessed); SIGTERM
stops it gracefully (HTTP/2's GOAWAY, then the requests in hand answered). Every
POST is recorded: its ``Idempotency-Key``, HTTP version and client port. A body holding
``"slow"`` is answered after 3 s, ``"fail503"`` with 503, ``"fail400"`` with 400,
``"big"`` with a 1 MiB body; the rest with 200. ``GET /seen`` answers the records and
the most requests it had in hand at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

Scope = dict[str, Any]
SEEN: list[dict[str, Any]] = []
IN_FLIGHT = [0, 0]  # now, most at once


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "GET":
        await _answer(send, 200, json.dumps({"seen": SEEN, "most": IN_FLIGHT[1]}).encode())
        return
    IN_FLIGHT[0] += 1
    IN_FLIGHT[1] = max(IN_FLIGHT)
    try:
        await _record(scope, body, send)
    finally:
        IN_FLIGHT[0] -= 1


async def _record(scope: Scope, body: bytes, send: Any) -> None:
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    SEEN.append({
        "key": headers.get("idempotency-key"),
        "version": scope["http_version"],
        "port": scope["client"][1],
        "size": len(body),
    })  # fmt: skip
    if b'"slow"' in body:
        await asyncio.sleep(3)
    status = 503 if b"fail503" in body else 400 if b"fail400" in body else 200
    await _answer(send, status, b"x" * (1 << 20) if b'"big"' in body else b'{"ok":true}')


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json")],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--alpn", default="h2,http/1.1")
    parser.add_argument("--max-requests", type=int, default=1000, help="a connection's")
    args = parser.parse_args()
    config = Config()
    config.bind = [f"fd://{args.fd}"]
    config.certfile, config.keyfile = args.cert, args.key
    config.alpn_protocols = args.alpn.split(",")
    config.loglevel = "WARNING"
    config.keep_alive_max_requests = args.max_requests  # then GOAWAY and a new connection
    config.graceful_timeout = 10  # SIGTERM: GOAWAY, then the requests in hand are answered
    socket.socket(fileno=args.fd).detach()  # inherited, listening: hypercorn takes it
    asyncio.run(serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
