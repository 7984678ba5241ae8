"""The webhook's HTTP/1.1 pool against real sockets: servers that write answers byte by
byte as a test scripts them (chunked bodies, HTTP/1.0, connections closed while idle,
slow answers), and the bound on requests in flight."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest

from connector.targets.http1 import HttpPool, ProtocolError, Request, Response
from connector.targets.webhook import WebhookTarget
from kec.action import Action, ActionKind
from kec.errors import ConfigError
from tests.support import wait_for


def _read_request(conn: socket.socket, buffer: bytearray) -> bytes | None:
    """One request (head and Content-Length body) from ``conn``; None at its end."""
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += conn.recv(65536)
    buffer[:] = rest[length:]
    return head + b"\r\n\r\n" + rest[:length]


class ScriptedServer:
    """Accepts connections; each is served by ``handler(conn, requests)`` in a thread."""

    def __init__(self, handler: Callable[[socket.socket, ScriptedServer], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn, suppress(OSError):
            self.handler(conn, self)

    def read(self, conn: socket.socket, buffer: bytearray) -> bytes | None:
        request = _read_request(conn, buffer)
        if request is not None:
            with self.lock:
                self.requests.append(request)
        return request

    def close(self) -> None:
        self.release.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(10)


@contextmanager
def serving(handler: Callable[[socket.socket, ScriptedServer], None]) -> Iterator[ScriptedServer]:
    server = ScriptedServer(handler)
    try:
        yield server
    finally:
        server.close()


def make_action(i: int) -> Action:
    return Action(
        rule="r", kind=ActionKind.START_WORKFLOW, target="w", namespace="default",
        event_ids=(f"ev-{i}",), event_key=f"k{i}", workflow="wf",
    )  # fmt: skip


def _pool(port: int, *, connections: int = 4, timeout: float = 5.0) -> HttpPool:
    return HttpPool(
        "127.0.0.1", port, "/hook", headers={"Content-Type": "application/json"},
        ssl_context=None, timeout=timeout, max_connections=connections, max_body=1024,
    )  # fmt: skip


def _keep_alive(answer: bytes) -> Callable[[socket.socket, ScriptedServer], None]:
    def handler(conn: socket.socket, server: ScriptedServer) -> None:
        buffer = bytearray()
        while server.read(conn, buffer) is not None:
            conn.sendall(answer)

    return handler


def _held_until_released(conn: socket.socket, server: ScriptedServer) -> None:
    """Answers 200 once the test releases the server, counting requests held meanwhile."""
    buffer = bytearray()
    while server.read(conn, buffer) is not None:
        with server.lock:
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        server.release.wait(10)
        with server.lock:
            server.in_flight -= 1
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_a_request_carries_host_length_and_the_pools_headers() -> None:
    created = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    with serving(_keep_alive(created)) as server, _pool(server.port) as pool:
        [answer] = pool.post_all([Request(b'{"a":1}', {"Idempotency-Key": "k1"})])
    assert isinstance(answer, Response)
    assert (answer.status, answer.reason, answer.body, answer.will_close) == (
        201, "Created", b"ok", False,
    )  # fmt: skip
    [sent] = server.requests
    head, body = sent.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook HTTP/1.1"
    assert {b"Host: 127.0.0.1:%d" % server.port, b"Content-Length: 7", b"Idempotency-Key: k1",
            b"Content-Type: application/json"} <= set(lines[1:])  # fmt: skip
    assert body == b'{"a":1}'


def test_the_pool_runs_on_uvloop_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")  # a dependency except on Windows
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    with serving(_keep_alive(ok)) as server, _pool(server.port) as pool:
        assert isinstance(pool._loop, uvloop.Loop)
        [answer] = pool.post_all([Request(b"{}", {})])
    assert isinstance(answer, Response) and answer.status == 200


def test_chunked_answers_with_trailers_keep_the_connection() -> None:
    chunked = (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nengin\r\n9\r\ne is down\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    with serving(_keep_alive(chunked)) as server, _pool(server.port, connections=1) as pool:
        for _ in range(3):
            [answer] = pool.post_all([Request(b"{}", {})])
            assert isinstance(answer, Response)
            assert (answer.status, answer.body) == (500, b"engine is down")
    assert server.connections == 1, "one kept-alive connection for the three"


def test_an_http10_answer_without_length_is_read_to_the_end_and_not_reused() -> None:
    def handler(conn: socket.socket, server: ScriptedServer) -> None:
        if server.read(conn, bytearray()) is not None:
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nall of it")

    with serving(handler) as server, _pool(server.port) as pool:
        answers = [pool.post_all([Request(b"{}", {})])[0] for _ in range(2)]
    assert all(isinstance(a, Response) and a.body == b"all of it" for a in answers)
    assert server.connections == 2


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_request_sent_once() -> None:
    # The server answers, says nothing about closing, and closes: the next request on that
    # connection meets its end before any byte of an answer.
    def handler(conn: socket.socket, server: ScriptedServer) -> None:
        if server.read(conn, bytearray()) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    with serving(handler) as server, _pool(server.port, connections=1) as pool:
        for i in range(4):
            [answer] = pool.post_all([Request(b"{}", {"Idempotency-Key": f"k{i}"})])
            assert isinstance(answer, Response) and answer.status == 200
    keys = [line for r in server.requests for line in r.split(b"\r\n") if b"Idempotency" in line]
    assert keys == [b"Idempotency-Key: k%d" % i for i in range(4)], "each sent once"
    assert server.connections == 4


def test_requests_in_flight_never_exceed_the_pool_and_all_are_answered() -> None:
    with serving(_held_until_released) as server, _pool(server.port, connections=5) as pool:
        answers: list[Response | BaseException] = []
        caller = threading.Thread(
            target=lambda: answers.extend(pool.post_all([Request(b"{}", {})] * 40))
        )
        caller.start()
        wait_for(lambda: server.in_flight == 5, timeout=10, what="five requests held")
        server.release.set()
        caller.join(30)
    assert len(answers) == 40 and all(isinstance(a, Response) for a in answers)
    assert server.most_in_flight == 5
    assert server.connections == 5


def test_a_slow_answer_times_out_and_a_garbled_one_is_a_protocol_error() -> None:
    def slow(conn: socket.socket, server: ScriptedServer) -> None:
        if server.read(conn, bytearray()) is not None:
            server.release.wait(10)

    with serving(slow) as server, _pool(server.port, timeout=0.3) as pool:
        [answer] = pool.post_all([Request(b"{}", {})])
    assert isinstance(answer, TimeoutError)

    with serving(_keep_alive(b"SMTP ready\r\n\r\n")) as server, _pool(server.port) as pool:
        [answer] = pool.post_all([Request(b"{}", {})])
    assert isinstance(answer, ProtocolError) and "status line" in str(answer)


def test_closing_the_pool_ends_the_requests_in_flight() -> None:
    def held(conn: socket.socket, server: ScriptedServer) -> None:
        if server.read(conn, bytearray()) is not None:
            server.release.wait(10)

    with serving(held) as server:
        pool = _pool(server.port, timeout=30)
        pool.open()
        answers: list[Response | BaseException] = []
        caller = threading.Thread(target=lambda: answers.extend(pool.post_all([Request(b"", {})])))
        caller.start()
        wait_for(lambda: server.requests, timeout=10, what="the request sent")
        pool.close()
        caller.join(10)
        assert not caller.is_alive(), "the caller is not left waiting"
    assert len(answers) == 1 and isinstance(answers[0], ConnectionAbortedError)


def test_post_all_then_answers_from_the_loop_once_and_closing_answers_what_it_leaves() -> None:
    got: list[tuple[str, list[Response | BaseException]]] = []

    def done(answers: list[Response | BaseException]) -> None:
        got.append((threading.current_thread().name, answers))

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    with serving(_keep_alive(ok)) as server, _pool(server.port) as pool:
        pool.post_all_then([Request(b"a", {}), Request(b"b", {"X-Bad": "1\r\n2"})], done)
        wait_for(lambda: got, timeout=10, what="the callback")
    [(thread, answers)] = got  # once, for the whole call
    assert thread.endswith("-loop")  # the pool's loop, not a caller waiting
    assert isinstance(answers[0], Response) and answers[0].status == 200
    assert isinstance(answers[1], ValueError)  # refused before sending, in its place
    assert len(server.requests) == 1

    def held(conn: socket.socket, server: ScriptedServer) -> None:
        if server.read(conn, bytearray()) is not None:
            server.release.wait(10)

    got.clear()
    with serving(held) as server:
        pool = _pool(server.port, timeout=30)
        pool.open()
        pool.post_all_then([Request(b"", {}), Request(b"", {})], done)
        wait_for(lambda: len(server.requests) == 2, timeout=10, what="both requests sent")
        pool.close()
    [(_, answers)] = got
    assert [type(a) for a in answers] == [ConnectionAbortedError] * 2


def test_the_webhook_refuses_headers_that_would_split_the_request() -> None:
    with pytest.raises(ConfigError, match="invalid header"):
        WebhookTarget("w", "http://127.0.0.1:1/", headers={"X-A": "1\r\nX-Injected: 2"})
    with pytest.raises(ConfigError, match="set by the target"):
        WebhookTarget("w", "http://127.0.0.1:1/", headers={"Content-Length": "3"})


def test_a_configured_host_header_replaces_the_urls() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    with serving(_keep_alive(answer)) as server:
        url = f"http://127.0.0.1:{server.port}/"
        with WebhookTarget("w", url, headers={"host": "hooks.example"}) as target:
            target.deliver(make_action(1))
    [sent] = server.requests
    hosts = [line for line in sent.split(b"\r\n") if line.lower().startswith(b"host:")]
    assert hosts == [b"host: hooks.example"]


def test_the_webhook_posts_a_call_of_many_actions_at_once() -> None:
    with serving(_held_until_released) as server:
        target = WebhookTarget("w", f"http://127.0.0.1:{server.port}/", concurrency=24)
        assert (target.concurrency, target.batch_size) == (8, 3)
        with target:
            failures: list[dict[str, BaseException]] = []
            actions = [make_action(i) for i in range(3)]
            caller = threading.Thread(target=lambda: failures.append(target.deliver_many(actions)))
            caller.start()
            wait_for(lambda: server.in_flight == 3, timeout=10, what="the call's 3 in flight")
            server.release.set()
            caller.join(30)
    assert failures == [{}]
    assert server.most_in_flight == 3


def test_the_benchmarks_receiver_answers_each_request_once_in_pieces_or_back_to_back() -> None:
    """bench/receiver.py parses requests as bytes arrive: what row (g) measures is one
    answer a request, whatever the header's spelling or how the bytes are cut."""
    from bench.throughput import receiver

    with receiver(1.0) as url:
        port = int(url.split(":")[2].split("/")[0])
        with _pool(port, connections=8) as pool:
            answers = pool.post_all([Request(b"x" * i, {}) for i in range(200)])
        assert [a.status for a in answers if isinstance(a, Response)] == [200] * 200
        first = b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
        second = b"POST / HTTP/1.1\r\nCONTENT-LENGTH: 3\r\n\r\nabc"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            for piece in (first[:7], first[7:30], first[30:] + second):
                conn.sendall(piece)
            got = b""
            while got.count(b"HTTP/1.1 200") < 2:
                data = conn.recv(65536)
                assert data, f"the receiver closed after {got!r}"
                got += data
            conn.settimeout(0.3)
            with suppress(TimeoutError):
                got += conn.recv(65536)  # a third answer would be a request invented
    assert got.count(b"HTTP/1.1 200") == 2
