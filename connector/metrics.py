"""Metrics of a running connector, read from its counters: Prometheus, and a progress log.

Nothing is counted twice and nothing is added to the hot path: the pipeline and the
dispatcher already keep plain integer counters (:class:`~connector.runtime.PipelineStats`,
``Dispatcher.delivered``/``failed``/``dead``); a scrape reads them through ``snapshot``, a
callable the service passes in. Served by prometheus-client's own WSGI server in a thread::

    metrics: {host: 0.0.0.0, port: 9464}   # config file; then GET http://host:9464/metrics
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kec.errors import ConnectorError

__all__ = ["COUNTERS", "GAUGES", "MetricsServer", "ProgressLog"]

log = logging.getLogger(__name__)

# snapshot key -> help text; exported as kec_<key>_total (counters) or kec_<key> (gauges).
COUNTERS = {
    "batches": "Batches checkpointed and committed (protocol steps 2-3).",
    "failed_batches": "Batches that rolled back and were retried.",
    "records": "Kafka records read.",
    "events": "New events checkpointed (duplicates excluded).",
    "duplicates": "Records whose event id the store already held (re-deliveries, resends).",
    "dead_records": "Undecodable records sent to the dead-letter topic.",
    "actions_queued": "Actions the rules queued in the outbox.",
    "actions_delivered": "Actions delivered to their target and marked done.",
    "actions_failed": "Failed delivery attempts (retried later).",
    "actions_dead": "Actions moved to the dead-letter table after their last attempt.",
}
GAUGES = {
    "outbox_pending": "Actions waiting in the outbox.",
    "paused": "1 while the partitions are paused because the outbox is full.",
}

Snapshot = Callable[[], Mapping[str, float]]


class _Collector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        values = self._snapshot()
        for key, text in COUNTERS.items():
            counter = CounterMetricFamily(f"kec_{key}", text)
            counter.add_metric([], values.get(key, 0))
            yield counter
        for key, text in GAUGES.items():
            yield GaugeMetricFamily(f"kec_{key}", text, value=values.get(key, 0))


class MetricsServer:
    """``GET /metrics`` on ``host:port``; nothing listens before :meth:`start`."""

    def __init__(self, snapshot: Snapshot, *, host: str = "127.0.0.1", port: int = 9464) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(_Collector(snapshot))
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
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
        try:
            self._server, self._thread = start_http_server(
                self._port, addr=self._host, registry=self._registry
            )
        except OSError as exc:
            where = f"{self._host}:{self._port}"
            raise ConnectorError(f"metrics: cannot listen on {where}: {exc}") from exc
        log.info("metrics on http://%s:%d/metrics", self._host, self.port)

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

    def __init__(self, snapshot: Snapshot, *, interval: float = 60.0) -> None:
        self._snapshot = snapshot
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Mapping[str, float] = {}

    def report(self) -> str | None:
        """The line for what changed since the last report (None if nothing did)."""
        now = self._snapshot()
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
            + (" (partitions paused: outbox full)" if now.get("paused") else "")
        )

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._last = self._snapshot()
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
