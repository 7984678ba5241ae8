"""Run the connector: the pipeline in the calling thread, the dispatcher beside it.

:func:`build_service` turns a config file's :class:`~connector.config.ConnectorConfig`
into a :class:`ConnectorService` (rules, targets, store, and the HTTP gateway and metrics
endpoint when configured), doing no I/O.

Start-up order: store, targets, companions (gateway, metrics: a port in use fails here,
before anything is consumed), the pipeline's consumer, the dispatcher thread.

Shutdown (SIGTERM in the CLI sets ``stop``): the pipeline finishes the batch in progress
(checkpoint and Kafka commit included) and leaves the group; the companions stop (the
gateway finishes its own batch); the dispatcher finishes its round; then targets and store
are closed. Pending actions stay in the outbox for the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from checkpoint.base import ActionState, CheckpointStore
from connector.outbox import Dispatcher, OutboxGauge, RetryPolicy
from connector.runtime import Pipeline, PipelineSettings
from connector.targets.base import Target
from kec.evaluation import Evaluator

if TYPE_CHECKING:
    from connector.config import ConnectorConfig

__all__ = ["Companion", "ConnectorService", "build_service"]

log = logging.getLogger(__name__)


class Companion(Protocol):
    """A server that runs beside the pipeline while the store is open (gateway, metrics)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ConnectorService:
    def __init__(
        self,
        settings: PipelineSettings,
        store: CheckpointStore,
        evaluator: Evaluator,
        targets: Mapping[str, Target],
        *,
        retry_policy: RetryPolicy | None = None,
        dispatch_chunk: int = 256,
    ) -> None:
        self._settings = settings
        self._store = store
        self._evaluator = evaluator
        self._targets = targets
        self._retry_policy = retry_policy
        self._dispatch_chunk = dispatch_chunk
        self._companions: list[Companion] = []
        self._gauge = OutboxGauge()
        self.pipeline: Pipeline | None = None
        self.dispatcher: Dispatcher | None = None

    @property
    def gauge(self) -> OutboxGauge:
        """The outbox's pending count, for collaborators that queue actions too."""
        return self._gauge

    @property
    def companions(self) -> tuple[Companion, ...]:
        return tuple(self._companions)

    def attach(self, companion: Companion) -> None:
        """Run ``companion`` while the service runs; call before :meth:`run`."""
        self._companions.append(companion)

    def snapshot(self) -> dict[str, float]:
        """The counters of this run (for :mod:`connector.metrics`); zeros before it starts."""
        values: dict[str, float] = {"outbox_pending": self._gauge.pending}
        pipeline, dispatcher = self.pipeline, self.dispatcher
        if pipeline is not None:
            s = pipeline.stats
            values.update(
                batches=s.batches,
                failed_batches=s.failed_batches,
                records=s.records,
                events=s.new_events,
                duplicates=s.duplicates,
                dead_records=s.dead_records,
                actions_queued=s.actions,
                paused=int(pipeline.paused),
            )
        if dispatcher is not None:
            values.update(
                actions_delivered=dispatcher.delivered,
                actions_failed=dispatcher.failed,
                actions_dead=dispatcher.dead,
            )
        return values

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (or a fatal error); always closes what it opened."""
        self._store.open()
        opened: list[Target] = []
        started: list[Companion] = []
        dispatch_stop = threading.Event()
        worker: threading.Thread | None = None
        try:
            # The gauge mirrors the outbox so backpressure costs no query; it starts from
            # what an earlier run left pending.
            self._gauge.add(self._store.count_actions(ActionState.PENDING))
            for target in self._targets.values():
                target.open()
                opened.append(target)
            for companion in self._companions:
                companion.start()
                started.append(companion)
            self.pipeline = Pipeline(self._settings, self._store, self._evaluator, self._gauge)
            self.dispatcher = Dispatcher(
                self._store,
                self._targets,
                self._gauge,
                policy=self._retry_policy,
                chunk_size=self._dispatch_chunk,
            )
            self.pipeline.start()
            worker = threading.Thread(
                target=self.dispatcher.run, args=(dispatch_stop,), name="dispatcher", daemon=True
            )
            worker.start()
            self.pipeline.run(stop)
        finally:
            if self.pipeline is not None:
                self.pipeline.close()
            for companion in reversed(started):
                try:
                    companion.stop()
                except Exception:
                    log.exception("stopping %s failed", type(companion).__name__)
            dispatch_stop.set()
            if worker is not None:
                worker.join(timeout=60)
            for target in reversed(opened):
                target.close()
            self._store.close()
            if self.pipeline is not None and self.dispatcher is not None:
                s = self.pipeline.stats
                log.info(
                    "stopped: %d batches, %d records, %d new events, %d duplicates, "
                    "%d dead records, %d actions queued, %d delivered, %d dead actions",
                    s.batches,
                    s.records,
                    s.new_events,
                    s.duplicates,
                    s.dead_records,
                    s.actions,
                    self.dispatcher.delivered,
                    self.dispatcher.dead,
                )


def build_service(cfg: ConnectorConfig, *, instance_id: str | None = None) -> ConnectorService:
    """The service a config file describes, not started; ``instance_id`` overrides the file's.

    Every topic of ``namespaces`` is read by the pipeline; its events go through ``rules``
    to ``targets``. With ``http:`` the gateway serves HTTP events on its own topic, and
    they go through the same rules (namespace ``http.namespace``); with ``metrics:`` a
    Prometheus endpoint serves :meth:`ConnectorService.snapshot`; with
    ``checkpoint.retention_days`` a :class:`~connector.retention.Pruner` bounds the store.
    """
    from checkpoint import open_store
    from connector.trigger import TriggerEngine

    client = cfg.kafka.client_config()
    bootstrap = str(client.pop("bootstrap.servers"))
    settings = PipelineSettings(
        bootstrap_servers=bootstrap,
        group_id=cfg.group_id,
        topics=cfg.topics(),
        batch_size=cfg.pipeline.batch_size,
        linger_ms=cfg.pipeline.linger_ms,
        dlq_topic=cfg.dead_letter_topic,
        outbox_max_pending=cfg.pipeline.outbox_max_pending,
        max_event_bytes=cfg.pipeline.max_event_bytes,
        kafka_properties=client,
        group_instance_id=instance_id or cfg.pipeline.instance_id,
    )
    store = open_store(cfg.checkpoint.url())
    engine = TriggerEngine(cfg.rules)
    targets = {name: spec.build(name) for name, spec in cfg.targets.items()}
    service = ConnectorService(
        settings,
        store,
        engine,
        targets,
        retry_policy=cfg.retry.policy(),
        dispatch_chunk=cfg.pipeline.dispatch_chunk,
    )
    if cfg.http is not None:
        from connector.gateway import Gateway, GatewayServer, GatewaySettings

        http = cfg.http
        gateway = Gateway(
            GatewaySettings(
                bootstrap_servers=bootstrap,
                topic=http.topic,
                namespace=http.namespace,
                strict=http.strict,
                kafka_properties=client,
            ),
            store,
            rules=engine,
            gauge=service.gauge,
        )
        token = http.token.get_secret_value() if http.token is not None else None
        service.attach(GatewayServer(gateway, host=http.host, port=http.port, token=token))
    if cfg.checkpoint.retention_days is not None:
        from connector.retention import Pruner

        service.attach(Pruner(store, cfg.checkpoint.retention_days * 86400))
    from connector.metrics import MetricsServer, ProgressLog

    service.attach(ProgressLog(service.snapshot))
    if cfg.metrics is not None:
        service.attach(
            MetricsServer(service.snapshot, host=cfg.metrics.host, port=cfg.metrics.port)
        )
    return service
