"""What a running connector shows: Prometheus metrics, probes, and a progress log line.

Nothing is counted twice and little is added to the hot path: the pipeline and the
dispatcher keep plain counters (per batch, per rule, per target, two small histograms),
and a scrape reads them through ``snapshot``, a callable the service passes in
(:class:`Snapshot`). Served by a small threaded WSGI server::

    metrics: {host: 0.0.0.0, port: 9464}   # config file; then GET http://host:9464/metrics

Metrics (all ``kec_``): counters of the pipeline (records, events, duplicates, dead
records, batches), actions queued per ``rule``, delivered / failed / dead per ``target``,
gauges of the actions waiting for delivery and the paused flag, the consumer lag per
``topic`` and ``partition``, whether Kafka is reachable, and histograms of the time from
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

import bisect
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer
from prometheus_client.registry import Collector

from kec.errors import ConnectorError

__all__ = ["COUNTERS", "GAUGES", "Health", "Histogram", "MetricsServer", "ProgressLog", "Snapshot"]

log = logging.getLogger(__name__)

# flat snapshot key -> help text; exported as kec_<key>_total (counters) or kec_<key>.
COUNTERS = {
    "batches": "Batches checkpointed and committed (protocol steps 2-3).",
    "failed_batches": "Batches that rolled back and were retried.",
    "records": "Kafka records read.",
    "events": "New events checkpointed (duplicates excluded).",
    "duplicates": "Records whose explicit event id the store already held (resends).",
    "dead_records": "Poison records sent to the dead-letter topic and table.",
    "actions_queued": "Actions the rules queued.",
    "actions_delivered": "Actions delivered to their target.",
    "actions_failed": "Failed delivery attempts (retried later).",
    "actions_dead": "Actions moved to the dead-letter table after their last attempt.",
}
GAUGES = {
    "outbox_pending": "Actions waiting for delivery (owned partitions).",
    "paused": "1 while the partitions are paused because too many actions wait.",
    "kafka_connected": "1 while a Kafka broker answers the pipeline's consumer.",
}


class Histogram:
    """Bucketed observations (seconds), cheap enough for the hot path."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += count
        self.sum += value * count

    def family(self, name: str, text: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, text, buckets=cumulative, sum_value=self.sum)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class Snapshot:
    """The numbers of one run; :meth:`ConnectorService.snapshot` fills it."""

    values: dict[str, float] = field(default_factory=dict)  # COUNTERS and GAUGES keys
    queued_by_rule: dict[str, int] = field(default_factory=dict)
    delivered_by_target: dict[str, int] = field(default_factory=dict)
    failed_by_target: dict[str, int] = field(default_factory=dict)
    dead_by_target: dict[str, int] = field(default_factory=dict)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    delivery_seconds: Histogram | None = None
    store_write_seconds: Histogram | None = None

    def get(self, key: str, default: float = 0.0) -> float:
        return self.values.get(key, default)


@dataclass(frozen=True)
class Health:
    """Readiness: each check's name and whether it passes."""

    checks: Mapping[str, bool]

    @property
    def ready(self) -> bool:
        return all(self.checks.values())


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
        lag = GaugeMetricFamily(
            "kec_consumer_lag",
            "Records not read yet, per partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(s.lag.items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
        if s.delivery_seconds is not None:
            yield s.delivery_seconds.family(
                "kec_delivery_seconds", "From an action's checkpoint to its delivery."
            )
        if s.store_write_seconds is not None:
            yield s.store_write_seconds.family(
                "kec_store_write_seconds", "The store transaction of one batch."
            )


StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _json(start_response: StartResponse, status: str, body: Mapping[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
    return [data]


def health_body(health: Health) -> tuple[int, dict[str, Any]]:
    """The /healthz answer: status code and JSON body (also used by the gateway)."""
    status = "ready" if health.ready else "not ready"
    failing = sorted(name for name, ok in health.checks.items() if not ok)
    body: dict[str, Any] = {"status": status, "checks": dict(health.checks)}
    if failing:
        body["failing"] = failing
    return (200 if health.ready else 503), body


def _app(registry: CollectorRegistry, health: Callable[[], Health]) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/metrics", "/livez", "/healthz"):
            return _json(start_response, "404 Not Found", {"error": f"no such path: {path}"})
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"error": "use GET"})
        if path == "/livez":
            return _json(start_response, "200 OK", {"status": "alive"})
        if path == "/healthz":
            try:
                code, body = health_body(health())
            except Exception as exc:  # a probe reports the failure instead of dropping it
                log.warning("health check failed: %r", exc)
                code, body = 503, {"status": "error", "error": repr(exc)}
            text = "OK" if code == 200 else "Service Unavailable"
            return _json(start_response, f"{code} {text}", body)
        output = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [output]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


class MetricsServer:
    """``GET /metrics``, ``/healthz`` and ``/livez`` on ``host:port``; nothing listens
    before :meth:`start`."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        health: Callable[[], Health],
        *,
        host: str = "127.0.0.1",
        port: int = 9464,
    ) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(_Collector(snapshot))
        self._health = health
        self._host = host
        self._port = port
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            raise ConnectorError("the metrics server is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        if self._server is not None:
            return
        app = _app(self._registry, self._health)

        class Server(ThreadingWSGIServer):  # the family of the configured address (v4 or v6)
            address_family = socket.AF_INET6 if ":" in self._host else socket.AF_INET

        try:
            server = make_server(self._host, self._port, app, Server, handler_class=_QuietHandler)
        except OSError as exc:
            where = f"{self._host}:{self._port}"
            raise ConnectorError(f"metrics: cannot listen on {where}: {exc}") from exc
        thread = threading.Thread(target=server.serve_forever, name="kec-metrics", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        log.info(
            "metrics on http://%s:%d/metrics (probes: /healthz, /livez)", self._host, self.port
        )

    def stop(self) -> None:
        """Stop serving and release the port; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)


class ProgressLog:
    """Logs one line of progress every ``interval`` seconds while something happens.

    Operators tailing the log see the connector is alive and how fast it goes without a
    metrics stack; an idle connector stays quiet. Reads the same ``snapshot`` as
    :class:`MetricsServer`, in its own thread.
    """

    def __init__(self, snapshot: Callable[[], Snapshot], *, interval: float = 60.0) -> None:
        self._snapshot = snapshot
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Mapping[str, float] = {}

    def report(self) -> str | None:
        """The line for what changed since the last report (None if nothing did)."""
        now = dict(self._snapshot().values)
        last, self._last = self._last, now

        def delta(key: str) -> int:
            return int(now.get(key, 0) - last.get(key, 0))

        if not any(delta(k) for k in ("records", "actions_delivered", "actions_dead")):
            return None
        return (
            f"progress: +{delta('events')} events (+{delta('duplicates')} duplicates, "
            f"+{delta('dead_records')} dead records), +{delta('actions_queued')} actions "
            f"queued, +{delta('actions_delivered')} delivered, +{delta('actions_dead')} dead; "
            f"{int(now.get('outbox_pending', 0))} pending"
            + (" (partitions paused: too many actions wait)" if now.get("paused") else "")
        )

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._last = dict(self._snapshot().values)
            self._thread = threading.Thread(target=self._run, name="kec-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            line = self.report()
            if line is not None:
                log.info("%s", line)
