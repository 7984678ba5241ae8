"""What a running connector shows: Prometheus metrics, probes, and a progress log line.

Nothing is counted twice and little is added to the hot path: the pipeline and the
dispatcher keep plain counters (per batch, per rule, per target) and two histograms
(:class:`connector.metrics.core.Histogram`; this is the one module that imports
``prometheus_client``), and a scrape reads them through ``snapshot``, a callable the
service passes in (:class:`Snapshot`). Served by :class:`MetricsServer`: one asyncio
loop holds the connections, two worker threads answer scrapes and probes, and a cap on
connections and timeouts on idle or slow ones keep any client from holding threads or
starving the probes::

    metrics: {host: 127.0.0.1, port: 9464}   # config file; then GET http://host:9464/metrics

127.0.0.1 (the default) serves this host only, a container's own health check included;
0.0.0.0 (every interface) lets a Prometheus elsewhere scrape it.

Metrics (all ``kec_``): counters of the pipeline (records, events, duplicates, dead
records, batches), actions queued per ``rule``, delivered / failed / dead per ``target``,
gauges of the actions waiting for delivery and the paused flag, the pauses for
backpressure and the time spent paused, per ``target`` the actions in flight and the
time its flow limits held actions back, the consumer lag per
``topic`` and ``partition``, each topic's partitions and those this replica reads, whether
Kafka and the store are reachable, and histograms of the time from
checkpoint to delivery and of the store's batch transaction.

Probes, on the same port (and on the HTTP gateway's, when it runs):

* ``GET /livez``: 200 while the process serves HTTP at all;
* ``GET /healthz``: readiness, 200 or 503 with a JSON body naming each check: Kafka
  reachable, the consumer group joined (partitions assigned, possibly none), the store
  answering;
* any other path: 404 with a JSON body.

:class:`ProgressLog` writes one line of what changed every minute while something
happens, for operators who tail the log without a metrics stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from connector.metrics.core import COUNTERS, GAUGES, Health, Histogram, Snapshot, health_body
from kec.errors import ConfigError, ConnectorError

__all__ = [
    "COUNTERS",
    "GAUGES",
    "MAX_HEAD_BYTES",
    "Health",
    "MetricsServer",
    "Snapshot",
]

log = logging.getLogger(__name__)


def _histogram(histogram: Histogram, name: str, text: str) -> HistogramMetricFamily:
    cumulative, total = histogram.cumulative()
    buckets = [("+Inf" if bound == float("inf") else repr(bound), n) for bound, n in cumulative]
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=total)


class _Collector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        for key, text in COUNTERS.items():
            counter = CounterMetricFamily(f"kec_{key}", text)
            counter.add_metric([], s.get(key))
            yield counter
        for key, text in GAUGES.items():
            yield GaugeMetricFamily(f"kec_{key}", text, value=s.get(key))
        for name, text, label, values in (
            ("actions_queued_by_rule", "Actions the rules queued, per rule.", "rule",
             s.queued_by_rule),
            ("actions_delivered_by_target", "Actions delivered, per target.", "target",
             s.delivered_by_target),
            ("actions_failed_by_target", "Failed attempts, per target.", "target",
             s.failed_by_target),
            ("actions_dead_by_target", "Dead actions, per target.", "target",
             s.dead_by_target),
        ):  # fmt: skip
            family = CounterMetricFamily(f"kec_{name}", text, labels=[label])
            for key, n in sorted(values.items()):
                family.add_metric([key], n)
            yield family
        throttled = CounterMetricFamily(
            "kec_target_throttled_seconds",
            "Seconds a target had actions due that it could not take yet (its max_in_flight, "
            "concurrency or rate): they waited in the outbox.",
            labels=["target"],
        )
        for key, seconds in sorted(s.throttled_seconds_by_target.items()):
            throttled.add_metric([key], seconds)
        yield throttled
        in_flight = GaugeMetricFamily(
            "kec_target_in_flight",
            "Actions handed to a target and not answered yet.",
            labels=["target"],
        )
        for key, n in sorted(s.in_flight_by_target.items()):
            in_flight.add_metric([key], n)
        yield in_flight
        lag = GaugeMetricFamily(
            "kec_consumer_lag",
            "Records not read yet, per partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(s.lag.items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
        for name, text, values in (
            ("topic_partitions", "Partitions of each subscribed topic (Kafka's metadata).",
             s.partitions_by_topic),
            ("partitions_owned", "Partitions of each subscribed topic this replica reads "
             "(claimed in the store, not stopped).", s.owned_by_topic),
        ):  # fmt: skip
            gauge = GaugeMetricFamily(f"kec_{name}", text, labels=["topic"])
            for topic, n in sorted(values.items()):
                gauge.add_metric([topic], n)
            yield gauge
        if s.delivery_seconds is not None:
            yield _histogram(
                s.delivery_seconds,
                "kec_delivery_seconds",
                "From an action's checkpoint to its delivery.",
            )
        if s.store_write_seconds is not None:
            yield _histogram(
                s.store_write_seconds,
                "kec_store_write_seconds",
                "The store transaction of one batch.",
            )


MAX_HEAD_BYTES = 8192
"""The longest request head (request line and headers) the server reads; longer gets 431."""

_PATHS = ("/metrics", "/livez", "/healthz")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# How long a refused connection may stay to deliver its request: closing a socket with
# unread input resets it, and the client could lose the 503 before reading it.
_REFUSED_LINGER = 1.0


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"

    def encode(self, *, keep_alive: bool, head_only: bool = False) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS[self.status]}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        if self.content_type == "application/json":
            lines.append("Cache-Control: no-store")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def _json(status: int, body: Mapping[str, Any]) -> _Reply:
    return _Reply(status, json.dumps(body).encode())


class _BadRequest(ConnectorError):
    """A request head the server cannot read; answered 400 and the connection closed."""


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    keep_alive: bool


def _parse_head(head: bytes) -> _Request:
    """The request line and the headers that matter here; raises _BadRequest."""
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1]:
        raise _BadRequest("malformed request line: expected METHOD PATH HTTP/1.x")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest("malformed header line")
        headers[name.lower()] = value.strip()
    length = headers.get("content-length", "0")
    if not (length.isascii() and length.isdigit()):
        raise _BadRequest("malformed Content-Length")
    # No path takes a body: answer, then close rather than read and discard it.
    has_body = length.strip("0") != "" or "transfer-encoding" in headers
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = version == "HTTP/1.1" and "close" not in tokens and not has_body
    return _Request(method, target.partition("?")[0], keep_alive)


def _at_once(request: _Request) -> _Reply | None:
    """The answer that needs none of the service's callables, else None."""
    if request.path not in _PATHS:
        return _json(404, {"error": f"no such path: {request.path}"})
    if request.method not in ("GET", "HEAD"):
        return _json(405, {"error": "use GET"})
    if request.path == "/livez":
        return _json(200, {"status": "alive"})
    return None


class MetricsServer:
    """``GET /metrics``, ``/healthz`` and ``/livez`` on ``host:port``; nothing listens
    before :meth:`start`.

    One thread runs an asyncio loop that holds every connection, so idle or slow clients
    cost no thread; ``workers`` threads call ``snapshot`` and ``health`` (which may block).
    Bounds, so that no client can starve the probes or grow the process:

    * at most ``max_connections`` connections are served at once; the next ones get 503
      with a JSON body and are closed (and past twice the cap, closed at once);
    * a connection must deliver its request head within ``header_timeout`` seconds of
      opening, and its next one within ``idle_timeout`` seconds of the previous answer
      (HTTP/1.1 keep-alive), else it is closed; a head over :data:`MAX_HEAD_BYTES` gets
      431; writing an answer gets ``header_timeout`` too;
    * requests with a body are answered, then the connection is closed.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        health: Callable[[], Health],
        *,
        host: str = "127.0.0.1",
        port: int = 9464,
        max_connections: int = 64,
        header_timeout: float = 5.0,
        idle_timeout: float = 5.0,
        workers: int = 2,
    ) -> None:
        for name, value in (
            ("max_connections", max_connections),
            ("header_timeout", header_timeout),
            ("idle_timeout", idle_timeout),
            ("workers", workers),
        ):
            if value <= 0:
                raise ConfigError(f"metrics server: {name} must be positive, got {value}")
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(_Collector(snapshot))
        self._health = health
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._workers = workers
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = asyncio.Event()
        # Touched only in the loop's thread.
        self._tasks: set[asyncio.Task[None]] = set()
        self._served = 0
        self._refusing = 0
        self._refusal_logged = float("-inf")

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._thread is None or self._bound_port is None:
            raise ConnectorError("the metrics server is not started")
        return self._bound_port

    def start(self) -> None:
        """Listen and serve in a background thread; a port in use raises ConnectorError."""
        if self._thread is not None:
            return
        sock = self._listen()
        self._stopping = asyncio.Event()
        executor = ThreadPoolExecutor(self._workers, thread_name_prefix="kec-metrics-worker")
        ready: Future[asyncio.AbstractEventLoop] = Future()
        thread = threading.Thread(
            target=self._run, args=(sock, executor, ready), name="kec-metrics", daemon=True
        )
        thread.start()
        try:
            loop = ready.result(timeout=30)
        except Exception as exc:
            sock.close()
            executor.shutdown(wait=False)
            raise ConnectorError(f"metrics: the server did not start: {exc!r}") from exc
        self._thread, self._loop, self._executor = thread, loop, executor
        self._bound_port = int(sock.getsockname()[1])
        log.info(
            "metrics on http://%s:%d/metrics (probes: /healthz, /livez)", self._host, self.port
        )

    def stop(self) -> None:
        """Stop serving, close every connection and release the port; idempotent."""
        thread, self._thread = self._thread, None
        loop, self._loop = self._loop, None
        executor, self._executor = self._executor, None
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(self._stopping.set)
        if thread is not None:
            thread.join(10)
        if executor is not None:  # a callable still running finishes on its own
            executor.shutdown(wait=False, cancel_futures=True)

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host.strip("[]"), self._port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            where = f"{self._host}:{self._port}"
            raise ConnectorError(f"metrics: cannot listen on {where}: {exc}") from exc
        return sock

    def _run(
        self,
        sock: socket.socket,
        executor: ThreadPoolExecutor,
        ready: Future[asyncio.AbstractEventLoop],
    ) -> None:
        try:
            asyncio.run(self._serve(sock, executor, ready))
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.exception("metrics: the server stopped on an error")

    async def _serve(
        self,
        sock: socket.socket,
        executor: ThreadPoolExecutor,
        ready: Future[asyncio.AbstractEventLoop],
    ) -> None:
        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._connection(reader, writer, executor)

        server = await asyncio.start_server(connected, sock=sock, limit=MAX_HEAD_BYTES)
        ready.set_result(asyncio.get_running_loop())
        try:
            await self._stopping.wait()
        finally:
            server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        executor: ThreadPoolExecutor,
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self._served < self._max_connections:
                self._served += 1
                try:
                    await self._converse(reader, writer, executor)
                finally:
                    self._served -= 1
            elif self._refusing < self._max_connections:
                now = time.monotonic()
                if now - self._refusal_logged >= 60:  # a flood must not flood the log too
                    self._refusal_logged = now
                    log.warning(
                        "metrics: %d connections open; answering more with 503"
                        " (logged at most once a minute)",
                        self._max_connections,
                    )
                self._refusing += 1
                try:
                    await self._refuse(reader, writer)
                finally:
                    self._refusing -= 1
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client left, or was too slow: nothing to answer
        except Exception:
            log.exception("metrics: a connection failed")
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _converse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        executor: ThreadPoolExecutor,
    ) -> None:
        timeout = self._header_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                error = f"the request head is over {MAX_HEAD_BYTES} bytes"
                await self._send(writer, _json(431, {"error": error}).encode(keep_alive=False))
                return
            try:
                request = _parse_head(head)
            except _BadRequest as exc:
                await self._send(writer, _json(400, {"error": str(exc)}).encode(keep_alive=False))
                return
            reply = _at_once(request)
            if reply is None:
                call = self._metrics if request.path == "/metrics" else self._healthz
                reply = await asyncio.get_running_loop().run_in_executor(executor, call)
            data = reply.encode(keep_alive=request.keep_alive, head_only=request.method == "HEAD")
            await self._send(writer, data)
            if not request.keep_alive:
                return
            timeout = self._idle_timeout

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        error = f"too many connections (at most {self._max_connections}); retry later"
        await self._send(writer, _json(503, {"error": error}).encode(keep_alive=False))
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(_REFUSED_LINGER):
            while await reader.read(4096):
                pass

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        async with asyncio.timeout(self._header_timeout):  # a client that does not read
            await writer.drain()

    def _metrics(self) -> _Reply:
        try:
            return _Reply(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        except Exception as exc:  # a scrape reports the failure instead of dropping it
            log.warning("metrics snapshot failed: %r", exc)
            return _json(500, {"error": repr(exc)})

    def _healthz(self) -> _Reply:
        try:
            code, body = health_body(self._health())
        except Exception as exc:  # a probe reports the failure instead of dropping it
            log.warning("health check failed: %r", exc)
            code, body = 503, {"status": "error", "error": repr(exc)}
        return _json(code, body)
