"""The metrics server's bounds, on a real loopback port: idle and slow clients hold no
thread and are closed after their timeout, connections past the cap get 503, and the
answers stay plain HTTP/1.1 (keep-alive, HEAD, 400/431 for what it cannot read)."""

from __future__ import annotations

import http.client
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import connector.metrics.exposition
from connector.config.loader import load_config
from connector.config.models import MetricsConfig
from connector.metrics.exposition import MAX_HEAD_BYTES, Health, MetricsServer, Snapshot
from kec.errors import ConfigError
from tests.support import ROOT, wait_for

Serve = Callable[..., MetricsServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[MetricsServer] = []

    def start(**options: Any) -> MetricsServer:
        server = MetricsServer(
            lambda: Snapshot(values={"records": 3.0}),
            lambda: Health({"kafka": True}),
            host="127.0.0.1",
            port=0,
            **options,
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sockets() -> Iterator[Callable[[int], socket.socket]]:
    opened: list[socket.socket] = []

    def connect(port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock``: status, headers (lower-case names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed before a complete response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "closed in the middle of a body"
        body += chunk
    return int(lines[0].split(" ")[1]), headers, body


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """When (``time.monotonic()``) the server closed ``sock``, reading and dropping what it
    sends; None if it is still open after ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic()


def test_a_new_client_gets_metrics_while_sixty_idle_connections_are_held(
    serve: Serve, sockets: Callable[[int], socket.socket]
) -> None:
    server = serve(header_timeout=60, idle_timeout=60)  # the idle ones stay for the test
    held = [sockets(server.port) for _ in range(50)]
    for sock in (sockets(server.port) for _ in range(10)):  # half a request head each
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    started = time.monotonic()
    reply = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    assert reply.status_code == 200 and "kec_records_total 3.0" in reply.text
    assert time.monotonic() - started < 5
    assert all(closed_within(sock, 0.01) is None for sock in held)  # still held, not dropped


def test_idle_silent_and_trickling_connections_are_closed_after_their_timeout(
    serve: Serve, sockets: Callable[[int], socket.socket]
) -> None:
    server = serve(header_timeout=0.5, idle_timeout=0.5)
    opened = time.monotonic()
    silent = sockets(server.port)
    half = sockets(server.port)
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    for sock in (silent, half):
        closed = closed_within(sock, 10)
        assert closed is not None, "the server kept a connection without a request head"
        assert closed - opened >= 0.4  # closed by the timeout, not at once

    kept = sockets(server.port)
    kept.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = read_reply(kept)
    assert (status, headers["connection"]) == (200, "keep-alive")
    assert closed_within(kept, 10) is not None, "an idle keep-alive connection was kept"

    # A byte of header at a time never completes the head: the timeout counts from the
    # connection's start, not from the last byte.
    slow = sockets(server.port)
    slow.sendall(b"GET /metrics HTTP/1.1\r\n")
    slow.settimeout(0.05)  # paces the trickle; each wait is also a check for the close
    started = time.monotonic()
    for byte in itertools.cycle(b"X-Slow: a\r\n"):
        assert time.monotonic() - started < 10, "a trickling client kept its connection"
        try:
            slow.sendall(bytes([byte]))
            if slow.recv(1) == b"":
                break
        except TimeoutError:
            continue
        except OSError:  # reset, or a broken pipe: closed all the same
            break


def test_connections_past_the_cap_get_503_until_one_closes(
    serve: Serve, sockets: Callable[[int], socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(max_connections=3, header_timeout=60, idle_timeout=60)
    held = []
    for _ in range(3):  # served and kept alive: each holds a place under the cap
        sock = sockets(server.port)
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(sock)[0] == 200
        held.append(sock)
    url = f"http://127.0.0.1:{server.port}/metrics"
    refused = httpx.get(url, timeout=5)
    assert refused.status_code == 503
    assert refused.headers["connection"] == "close"
    assert "too many connections" in refused.json()["error"]
    assert "3 connections open; answering more with 503" in caplog.text

    held.pop().close()
    wait_for(
        lambda: httpx.get(url, timeout=5).status_code == 200,
        timeout=10,
        what="a place under the cap to free",
    )


def test_past_twice_the_cap_connections_are_closed_without_an_answer(
    serve: Serve, sockets: Callable[[int], socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the refused one stays
    monkeypatch.setattr(connector.metrics.exposition, "_REFUSED_LINGER", 60.0)
    server = serve(max_connections=1, header_timeout=60, idle_timeout=60)
    served = sockets(server.port)
    served.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_reply(served)[0] == 200
    refused = sockets(server.port)  # answered 503, then the server waits for it to close
    assert read_reply(refused)[0] == 503
    dropped = sockets(server.port)
    dropped.settimeout(10)
    assert dropped.recv(4096) == b""


def test_fifty_idle_connections_add_no_thread(
    serve: Serve, sockets: Callable[[int], socket.socket]
) -> None:
    workers = 2
    server = serve(header_timeout=60, idle_timeout=60, workers=workers)
    before = threading.active_count()
    held = [sockets(server.port) for _ in range(50)]
    # Accepted after the fifty (the listen queue is FIFO): by its answer all are accepted.
    assert httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).status_code == 200
    assert threading.active_count() <= before + workers
    assert all(closed_within(sock, 0.01) is None for sock in held)


def test_stop_closes_held_connections_and_frees_the_port(
    serve: Serve, sockets: Callable[[int], socket.socket]
) -> None:
    server = serve(header_timeout=60, idle_timeout=60)
    port = server.port
    silent = sockets(port)
    kept = sockets(port)
    kept.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_reply(kept)[0] == 200
    server.stop()
    assert closed_within(silent, 10) is not None
    assert closed_within(kept, 10) is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)


def test_keep_alive_head_and_query_strings(serve: Serve) -> None:
    server = serve()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.connect()
        sock = conn.sock
        conn.request("GET", "/metrics?name[]=kec_records_total")
        first = conn.getresponse()
        body = first.read()
        assert first.status == 200 and b"kec_records_total 3.0" in body
        assert first.getheader("Content-Type", "").startswith("text/plain")
        conn.request("HEAD", "/metrics")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        assert int(head.getheader("Content-Length", "0")) > 0
        assert sock is not None and conn.sock is sock  # both on the one connection
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"NONSENSE\r\n\r\n", 400, "malformed request line"),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed header line"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "Content-Length"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400, "Content-Length"),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431, "over"),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405, "use GET"),
        (b"GET /nothing HTTP/1.0\r\n\r\n", 404, "no such path"),
    ],
)
def test_what_the_server_cannot_or_will_not_serve_gets_json_and_a_close(
    serve: Serve,
    sockets: Callable[[int], socket.socket],
    request_bytes: bytes,
    status: int,
    error: str,
) -> None:
    sock = sockets(serve().port)
    sock.sendall(request_bytes)
    got, headers, body = read_reply(sock)
    assert (got, headers["content-type"], headers["connection"]) == (
        status,
        "application/json",
        "close",
    )
    assert error in httpx.Response(got, content=body).json()["error"]
    assert closed_within(sock, 10) is not None


def test_the_server_refuses_non_positive_bounds() -> None:
    with pytest.raises(ConfigError, match="max_connections must be positive"):
        MetricsServer(Snapshot, lambda: Health({}), max_connections=0)


def test_metrics_listen_on_loopback_unless_told_and_the_shipped_config_does_too() -> None:
    assert MetricsConfig().host == "127.0.0.1"
    assert MetricsConfig(host="0.0.0.0").host == "0.0.0.0"  # exposing it stays a choice
    shipped = load_config(ROOT / "docker" / "connector.yaml", env={"KEC_PG_DSN": "postgresql://x"})
    assert shipped.metrics is not None and shipped.metrics.host == "127.0.0.1"
    # docker/compose.yaml's replicas open it to their Prometheus, on the compose network.
    env = {"KEC_PG_DSN": "postgresql://x", "KEC_METRICS_HOST": "0.0.0.0"}
    scraped = load_config(ROOT / "docker" / "connector.yaml", env=env)
    assert scraped.metrics is not None and scraped.metrics.host == "0.0.0.0"
