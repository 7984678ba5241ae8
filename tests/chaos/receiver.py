"""What chaos tests count deliveries with, per idempotency key.

:class:`Receiver`, a webhook endpoint: it answers 503 to the first request of about one
key in twenty (chosen by the key's CRC32, so the same keys every run), and 200 otherwise.
Per key it records which process (``User-Agent``: host and pid) delivered it each time it
answered 200, the rank of its first 2xx among all keys', and the first accepted request's
body (the action as JSON).

:class:`TopicReceiver`, the same records for a ``kafka`` target: it reads the actions
topic (one partition, so its offsets are the order of arrival) and keys each record by
its ``action-id`` header. A record carries no process, so each is counted as from one.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from confluent_kafka import Consumer


class _Deliveries:
    """What a receiver recorded, per idempotency key (read under ``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: dict[str, list[int]] = defaultdict(list)  # key -> pid of each
        self.first: dict[str, int] = {}  # key -> rank of its first delivery
        self.bodies: dict[str, dict[str, Any]] = {}  # key -> its first delivery's action
        self.requests = 0
        self.refused = 0

    def keys(self) -> set[str]:
        with self.lock:
            return set(self.delivered)

    def repeated(self) -> int:
        """Deliveries beyond the first of each key."""
        with self.lock:
            return sum(len(p) - 1 for p in self.delivered.values())

    def by_two_processes(self) -> int:
        with self.lock:
            return sum(1 for p in self.delivered.values() if len(set(p)) > 1)


class Receiver(_Deliveries):
    """A webhook endpoint that records (key, pid) of each delivery it accepts (2xx)."""

    def __init__(self) -> None:
        super().__init__()
        self._tries: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                key = self.headers.get("idempotency-key", "")
                found = re.search(r"pid (\d+)", self.headers.get("user-agent", ""))
                pid = int(found[1]) if found else -1
                with receiver.lock:
                    receiver.requests += 1
                    first = receiver._tries[key] == 0
                    receiver._tries[key] += 1
                    refuse = first and zlib.crc32(key.encode()) % 20 == 0
                    if refuse:
                        receiver.refused += 1
                    else:
                        receiver.delivered[key].append(pid)
                        if key not in receiver.first:
                            receiver.first[key] = len(receiver.first)
                            receiver.bodies[key] = json.loads(body)
                self.send_response(503 if refuse else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a killed connector resets its connections: expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/actions"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class TopicReceiver(_Deliveries):
    """:class:`Receiver`'s records, read from a ``kafka`` target's actions ``topic``: a
    key's rank is its first record's offset, ``requests`` the records read, and each
    record counts as from process 0 (a broker refuses none the way the webhook does)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__()
        self.url = f"kafka topic {topic}"
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"nemesis-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "reconnect.backoff.max.ms": 1000,
                "log_level": 2,  # the broker's restarts are the test's own doing
            }
        )
        self._topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> TopicReceiver:
        self._consumer.subscribe([self._topic])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._consumer.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, 0.2):
                if msg.error() is not None:
                    continue  # the broker restarting: the client reconnects
                headers = dict(msg.headers() or [])
                raw = headers.get("action-id")
                key = raw.decode() if isinstance(raw, bytes) else ""
                with self.lock:
                    self.requests += 1
                    self.delivered[key].append(0)
                    if key not in self.first:
                        self.first[key] = msg.offset()
                        self.bodies[key] = json.loads(msg.value() or b"null")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running
