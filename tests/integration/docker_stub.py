"""An engine socket that answers like a Docker engine with no images and no registry.

It speaks the few calls the broker/database choice makes (``/_ping``, ``/version``, image
inspect, image pull) over a real unix socket, as dockerd 20.10 answers them on an
air-gapped machine: every image is missing and every pull fails resolving the registry.
Point ``DOCKER_HOST`` at :attr:`EngineWithoutRegistry.url`.
"""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

PULL_ERROR = (
    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io '
    "on 127.0.0.53:53: no such host"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Api-Version", "1.41")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.calls.append(f"GET {self.path}")
        path = self.path.split("?", 1)[0]
        if path.endswith("/_ping"):
            self._reply(200, b"OK", "text/plain")
        elif path.endswith("/version"):
            self._reply(200, {"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12"})
        elif "/images/" in path and path.endswith("/json"):
            name = path.split("/images/", 1)[1].removesuffix("/json")
            self._reply(404, {"message": f"No such image: {name}"})
        else:
            self._reply(404, {"message": "page not found"})

    def do_POST(self) -> None:
        self.server.calls.append(f"POST {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if "/images/create" in self.path:
            self._reply(500, {"message": PULL_ERROR})
        else:
            self._reply(404, {"message": "page not found"})

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    calls: list[str]


class EngineWithoutRegistry:
    """The stub engine on ``socket_path``, served from a thread while entered."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def calls(self) -> list[str]:
        return self._server.calls if self._server else []

    def __enter__(self) -> EngineWithoutRegistry:
        self._server = _Server(str(self.socket_path), _Handler)
        self._server.calls = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self.socket_path.unlink(missing_ok=True)
