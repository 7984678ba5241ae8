"""Run the connector: the pipeline in the calling thread, the dispatcher beside it.

:func:`build_service` turns a config file's :class:`~connector.config.ConnectorConfig`
into a :class:`ConnectorService` (rules, targets, store, and the HTTP gateway and metrics
endpoint when configured), doing no I/O.

Start-up order: store (a store that does not answer is retried with backoff for two
minutes), targets, dispatcher, companions (gateway, metrics: a port in use fails here,
before anything is consumed), the pipeline's consumer.

With ``http:`` the pipeline also reads the gateway's topic (namespace ``http.namespace``)
and its rules are wrapped in :class:`~connector.gateway.waiters.HttpIndex`, which writes
the waiter-queue row of each HTTP event in the batch's transaction; the gateway served
beside the pipeline only produces, and is woken after each batch that held HTTP events
(``after_batch``) to confirm its sends.

Shutdown (SIGTERM in the CLI sets ``stop``): the pipeline finishes the batch in progress
(checkpoint and Kafka commit included) and leaves the group, which revokes its partitions:
the dispatcher finishes their deliveries in flight and settles them; the companions stop
(the gateway flushes its producer); the dispatcher stops; then targets and store are
closed. Actions not yet delivered stay in the store for the next owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from checkpoint.base import CheckpointStore
from connector.dispatch import Dispatcher
from connector.metrics import Health, Snapshot
from connector.outage import Outage, cause_of
from connector.retry import RetryPolicy
from connector.runtime import Pipeline, PipelineSettings
from connector.targets.base import Target
from kec.errors import CheckpointError
from kec.evaluation import Evaluator

if TYPE_CHECKING:
    from connector.config import ConnectorConfig
    from connector.gateway.waiters import HttpIndex

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
        store_open_timeout: float = 120.0,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        """``after_batch``: called on the pipeline's thread after each batch it checkpointed
        (the HTTP gateway looks for its events in the store then)."""
        self._settings = settings
        self._store_open_timeout = store_open_timeout
        self._after_batch = after_batch
        self._store = store
        self._evaluator = evaluator
        self._targets = targets
        self._companions: list[Companion] = []
        self.dispatcher = Dispatcher(store, targets, policy=retry_policy)
        self.pipeline: Pipeline | None = None

    @property
    def store(self) -> CheckpointStore:
        return self._store

    @property
    def companions(self) -> tuple[Companion, ...]:
        return tuple(self._companions)

    def attach(self, companion: Companion) -> None:
        """Run ``companion`` while the service runs; call before :meth:`run`."""
        self._companions.append(companion)

    def snapshot(self) -> Snapshot:
        """The numbers of this run (for :mod:`connector.metrics`); zeros before it starts."""
        d = self.dispatcher.stats
        snap = Snapshot(
            values={
                "outbox_pending": self.dispatcher.pending,
                "actions_delivered": d.delivered,
                "actions_failed": d.failed,
                "actions_dead": d.dead,
            },
            delivered_by_target=dict(d.delivered_by_target),
            failed_by_target=dict(d.failed_by_target),
            dead_by_target=dict(d.dead_by_target),
            delivery_seconds=d.delivery,
        )
        pipeline = self.pipeline
        if pipeline is not None:
            s = pipeline.stats
            snap.values.update(
                batches=s.batches,
                failed_batches=s.failed_batches,
                records=s.records,
                events=s.new_events,
                duplicates=s.duplicates,
                dead_records=s.dead_records,
                actions_queued=s.actions,
                paused=int(pipeline.paused),
                kafka_connected=int(s.kafka_connected),
            )
            snap.queued_by_rule = dict(s.by_rule)
            snap.lag = dict(s.lag)
            snap.store_write_seconds = s.store_write
        return snap

    def health(self) -> Health:
        """Readiness: Kafka reachable, the group joined, the store answering."""
        pipeline = self.pipeline
        if pipeline is None:
            return Health({"kafka": False, "group": False, "store": False, "partitions": False})
        s = pipeline.stats
        return Health(
            {
                "kafka": s.kafka_connected,
                "group": s.joined,
                "store": s.store_ok and self.dispatcher.stats.store_ok,
                # Every assigned partition claimed, none stopped (offsets went backwards).
                "partitions": not s.stopped and not s.claiming,
            }
        )

    def open_store(self, stop: threading.Event) -> bool:
        """Open the store, retrying a store that does not answer (PostgreSQL restarting,
        say) with backoff for ``store_open_timeout`` seconds, with one line when it fails,
        one now and then, and one when it answers. False: ``stop`` was set meanwhile. A
        store that no retry can cure (corrupt, newer, in use) fails at once."""
        outage = Outage("checkpoint store", log)
        deadline = time.monotonic() + self._store_open_timeout
        pause = 0.5
        while True:
            try:
                self._store.open()
            except CheckpointError as exc:
                if not exc.retriable or time.monotonic() + pause > deadline:
                    if exc.retriable:
                        raise CheckpointError(
                            f"the checkpoint store did not answer for "
                            f"{self._store_open_timeout:.0f}s: {cause_of(exc)}"
                        ) from exc
                    raise
                outage.failed(exc, retry_in=pause)
                if stop.wait(pause):
                    return False
                pause = min(10.0, pause * 2)
                continue
            outage.ok()
            return True

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (or a fatal error); always closes what it opened."""
        if not self.open_store(stop):
            return
        opened: list[Target] = []
        started: list[Companion] = []
        try:
            for target in self._targets.values():
                target.open()
                opened.append(target)
            self.dispatcher.start()
            for companion in self._companions:
                companion.start()
                started.append(companion)
            self.pipeline = Pipeline(
                self._settings, self._store, self._evaluator, self.dispatcher,
                after_batch=self._after_batch,
            )  # fmt: skip
            self.pipeline.run(stop)
        finally:
            if self.pipeline is not None:
                self.pipeline.close()
            for companion in reversed(started):
                try:
                    companion.stop()
                except Exception:
                    log.exception("stopping %s failed", type(companion).__name__)
            self.dispatcher.stop()
            for target in reversed(opened):
                target.close()
            self._store.close()
            if self.pipeline is not None:
                s, d = self.pipeline.stats, self.dispatcher.stats
                log.info(
                    "stopped: %d batches, %d records, %d new events, %d duplicates, "
                    "%d dead records, %d actions queued, %d delivered, %d dead actions",
                    s.batches, s.records, s.new_events, s.duplicates, s.dead_records,
                    s.actions, d.delivered, d.dead,
                )  # fmt: skip


def _waker(index: HttpIndex, wake: Callable[[], None]) -> Callable[[], None]:
    """``wake`` after a batch in which ``index`` queued HTTP events (none: no wake-up)."""
    seen = index.indexed

    def after_batch() -> None:
        nonlocal seen
        if index.indexed != seen:
            seen = index.indexed
            wake()

    return after_batch


def build_service(
    cfg: ConnectorConfig, *, instance_id: str | None = None, serve_gateway: bool = True
) -> ConnectorService:
    """The service a config file describes, not started; ``instance_id`` overrides the file's.

    Every topic of ``namespaces`` is read by the pipeline; its events go through ``rules``
    to ``targets``. With ``http:`` the pipeline reads the gateway's topic too (namespace
    ``http.namespace``: the same rules, and the waiters' queue rows), and the gateway is
    served beside it unless ``serve_gateway`` is false (``run --no-gateway``: replicas
    that checkpoint the topic while a standalone ``event-connector gateway`` serves HTTP);
    with ``metrics:`` a Prometheus endpoint serves :meth:`ConnectorService.snapshot`. A
    :class:`~connector.retention.Pruner` deletes expired rule state, and with
    ``checkpoint.retention_days`` everything else older than that.
    """
    from checkpoint import open_store
    from connector.targets.registry import build_target
    from connector.trigger import TriggerEngine

    connection = cfg.kafka.connection()
    settings = PipelineSettings(
        bootstrap_servers=connection.bootstrap_servers,
        group_id=cfg.group_id,
        topics=cfg.topics(),
        batch_size=cfg.pipeline.batch_size,
        linger_ms=cfg.pipeline.linger_ms,
        dlq_topic=cfg.dead_letter_topic,
        outbox_max_pending=cfg.pipeline.outbox_max_pending,
        max_event_bytes=cfg.pipeline.max_event_bytes,
        kafka_properties=connection.properties,
        group_instance_id=instance_id or cfg.pipeline.instance_id,
    )
    store = open_store(cfg.checkpoint.url(), exclusive=True)
    engine = TriggerEngine(cfg.rules, limits=cfg.pipeline.match_limits())
    targets = {name: build_target(name, spec) for name, spec in cfg.targets.items()}
    http = cfg.http
    if http is None:
        service = ConnectorService(
            settings, store, engine, targets, retry_policy=cfg.retry.policy()
        )
    else:
        from connector.gateway import Gateway, GatewayServer, GatewaySettings
        from connector.gateway.waiters import HttpIndex

        index = HttpIndex(engine, http.namespace)
        gateway = None
        if serve_gateway:
            gateway = Gateway(
                GatewaySettings(
                    connection=connection,
                    topic=http.topic,
                    namespace=http.namespace,
                    strict=http.strict,
                    checkpoint_timeout=http.checkpoint_timeout_seconds,
                ),
                store,
            )
        service = ConnectorService(
            settings,
            store,
            index,
            targets,
            retry_policy=cfg.retry.policy(),
            after_batch=_waker(index, gateway.checkpointed) if gateway is not None else None,
        )
        if gateway is not None:
            service.attach(GatewayServer.from_config(gateway, http, health=service.health))
    from connector.retention import Pruner

    days = cfg.checkpoint.retention_days
    service.attach(Pruner(store, days * 86400 if days is not None else None))
    from connector.metrics import MetricsServer, ProgressLog

    service.attach(ProgressLog(service.snapshot))
    if cfg.metrics is not None:
        service.attach(
            MetricsServer(
                service.snapshot, service.health, host=cfg.metrics.host, port=cfg.metrics.port
            )
        )
    return service
