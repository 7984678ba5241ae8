"""Run the connector: the pipeline in the calling thread, the dispatcher beside it.

A :class:`ConnectorService` is given its collaborators (store, rules, targets) and does
no I/O until :meth:`ConnectorService.run`; :mod:`connector.assembly` builds one from a
config file (rules, targets, store, and the HTTP gateway and metrics endpoint when
configured) or from ``run``'s quick-mode options.

Start-up order: store (a store that does not answer is retried with backoff for two
minutes), targets, dispatcher, companions (gateway, metrics: a port in use fails here,
before anything is consumed), the pipeline's consumer.

With ``http:`` the pipeline also reads the gateway's topic (namespace ``http.namespace``)
and its rules are wrapped in :class:`~connector.gateway.waiters.HttpIndex`, which writes
the waiter-queue row of each HTTP event in the batch's transaction; the gateway served
beside the pipeline only produces, and is woken after each batch that held HTTP events
(``after_batch``) to confirm its sends.

Shutdown (SIGTERM in the CLI sets ``stop``) stops what started in reverse order, each stop
guarded (:mod:`connector.lifecycle`): the pipeline finishes the batch in progress
(checkpoint and Kafka commit included) and leaves the group, which revokes its partitions:
the dispatcher finishes their deliveries in flight and settles them; the companions stop
(the gateway flushes its producer); the dispatcher stops; then the targets and the store
are closed. A stop that fails is logged by name and the rest are stopped all the same.
Actions not yet delivered stay in the store for the next owner.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from checkpoint.base import CheckpointStore
from connector.common.outage import Outage, cause_of
from connector.common.ownership import Ownership
from connector.common.retry import RetryPolicy
from connector.dispatch import Dispatcher
from connector.lifecycle import Services
from connector.metrics.core import Health, Snapshot
from connector.pipeline import Pipeline, PipelineSettings
from connector.rules.switch import RuleSwitch
from connector.targets.base import Target
from kec.errors import CheckpointError, ConnectorError
from kec.evaluation import Evaluator
from kec.event import TP
from kec.kafka.registry import RecordFormats

if TYPE_CHECKING:
    from connector.control import Control

__all__ = ["Companion", "ConnectorService", "open_retrying"]

log = logging.getLogger(__name__)

SWAP_TIMEOUT = 120.0  # seconds for the pipeline to reach the end of its batch
RETIRE_TIMEOUT = 120.0  # seconds a replaced target has to finish its calls before closing


class Companion(Protocol):
    """A server that runs beside the pipeline while the store is open (gateway, metrics)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def open_retrying(store: CheckpointStore, stop: threading.Event, timeout: float = 120.0) -> bool:
    """Open ``store``, retrying a store that does not answer (PostgreSQL restarting, say)
    with backoff for ``timeout`` seconds, with one line when it fails, one now and then,
    and one when it answers. False: ``stop`` was set meanwhile. A store that no retry can
    cure (corrupt, newer, in use) fails at once."""
    outage = Outage("checkpoint store", log)
    deadline = time.monotonic() + timeout
    pause = 0.5
    while True:
        try:
            store.open()
        except CheckpointError as exc:
            if not exc.retriable or time.monotonic() + pause > deadline:
                if exc.retriable:
                    raise CheckpointError(
                        f"the checkpoint store did not answer for {timeout:.0f}s: {cause_of(exc)}"
                    ) from exc
                raise
            outage.failed(exc, retry_in=pause)
            if stop.wait(pause):
                return False
            pause = min(10.0, pause * 2)
            continue
        outage.ok()
        return True


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
        ownership: Ownership | None = None,
        formats: RecordFormats | None = None,
        rules: RuleSwitch | None = None,
    ) -> None:
        """``after_batch``: called on the pipeline's thread after each batch it checkpointed
        (the HTTP gateway looks for its events in the store then). ``ownership``: the
        registry of the partitions this instance holds, given to both the dispatcher and
        the pipeline (a fresh one if not given). ``formats``: the topics written with a
        registered schema, and their decoder (closed with the service). ``rules``: the
        switch inside ``evaluator`` that a reload and pauses change (``evaluator`` is
        wrapped in one when not given). :attr:`control` is set by the assembly."""
        if rules is None:
            rules = evaluator if isinstance(evaluator, RuleSwitch) else RuleSwitch(evaluator)
            evaluator = rules
        self.rules = rules
        self._formats = formats
        self._settings = settings
        self._store_open_timeout = store_open_timeout
        self._after_batch = after_batch
        self._store = store
        self._evaluator = evaluator
        self._targets: dict[str, Target] = dict(targets)
        self._running = False
        self.control: Control | None = None
        self._companions: list[tuple[str, Companion]] = []
        self.ownership = ownership if ownership is not None else Ownership()
        self.dispatcher = Dispatcher(store, targets, policy=retry_policy, ownership=self.ownership)
        self.pipeline: Pipeline | None = None

    @property
    def store(self) -> CheckpointStore:
        return self._store

    @property
    def instance_id(self) -> str:
        """This instance's name: the owner the store records for its partitions."""
        return self._settings.instance_id

    @property
    def companions(self) -> tuple[Companion, ...]:
        return tuple(companion for _, companion in self._companions)

    def attach(self, companion: Companion, name: str | None = None) -> None:
        """Run ``companion`` while the service runs; call before :meth:`run`. ``name``
        (default: its class's) is what the log calls it if it fails to stop."""
        self._companions.append((name or type(companion).__name__, companion))

    def snapshot(self) -> Snapshot:
        """The numbers of this run (for :mod:`connector.metrics`); zeros before it starts."""
        d = self.dispatcher.stats
        snap = Snapshot(
            values={
                "outbox_pending": self.dispatcher.pending,
                "actions_delivered": d.delivered,
                "actions_failed": d.failed,
                "actions_dead": d.dead,
                "store_up": int(d.store_ok),
            },
            delivered_by_target=dict(d.delivered_by_target),
            failed_by_target=dict(d.failed_by_target),
            dead_by_target=dict(d.dead_by_target),
            throttled_seconds_by_target=self.dispatcher.throttled_seconds(),
            in_flight_by_target=self.dispatcher.in_flight(),
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
                backpressure_pauses=s.backpressure_pauses,
                backpressure_seconds=s.paused_seconds(time.monotonic()),
                kafka_connected=int(s.kafka_connected),
                store_up=int(s.store_ok and d.store_ok),
            )
            snap.queued_by_rule = dict(s.by_rule)
            snap.lag = dict(s.lag)
            snap.partitions_by_topic = dict(s.partitions)
            snap.owned_by_topic = dict(s.owned)
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

    @property
    def targets(self) -> Mapping[str, Target]:
        """The targets actions go to now."""
        return dict(self._targets)

    # -- changed while running (connector.control) -----------------------------------------

    def between_batches(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` on the pipeline's thread between two batches and return its
        result (in the calling thread when no pipeline runs)."""
        pipeline = self.pipeline
        if pipeline is None:
            return work()
        future = pipeline.between_batches(work)
        try:
            return future.result(SWAP_TIMEOUT)
        except TimeoutError:
            if not future.cancel():
                return future.result()  # it runs now: its outcome is the answer
            raise ConnectorError(
                f"the pipeline did not finish its batch within {SWAP_TIMEOUT:g}s; nothing "
                "was changed"
            ) from None

    def reconfigure(
        self,
        engine: Evaluator | None,
        targets: Mapping[str, Target] | None,
        policy: RetryPolicy | None,
        version: int,
    ) -> dict[TP, int | None]:
        """Between two batches, run ``engine`` (None: the rules as they are) as rules
        version ``version``, deliver to ``targets`` (opened; None: unchanged) with
        ``policy``. Targets that went out of use are closed once their calls are
        answered. Returns where the first batch of the new version starts in each
        partition this process owns (None: nothing checkpointed there yet)."""
        if not self._running:
            raise ConnectorError("run is starting or stopping: reload once it runs")

        def swap() -> tuple[list[tuple[Target, list[threading.Thread]]], dict[TP, int | None]]:
            retired: list[tuple[Target, list[threading.Thread]]] = []
            if targets is not None or policy is not None:
                new = dict(targets) if targets is not None else self._targets
                retired = self.dispatcher.replace_targets(new, policy)
                self._targets = new
            if engine is not None:
                self.rules.replace(engine, version)
            else:
                self.rules.version = version
            positions = self.pipeline.positions() if self.pipeline is not None else {}
            log.info(
                "rules version %d applied between batches; the next batch of each partition "
                "starts at %s", version, _positions(positions),
            )  # fmt: skip
            return retired, positions

        retired, positions = self.between_batches(swap)
        if retired:
            threading.Thread(
                target=_retire, args=(retired,), name="kec-retire-targets", daemon=True
            ).start()
        return dict(positions)

    def set_paused(self, rules: Collection[str], targets: Collection[str]) -> None:
        """Drop the actions of ``rules`` from the next batch on; hold back those of
        ``targets`` (the others resume)."""
        paused = frozenset(rules)

        def pause() -> None:
            self.rules.paused = paused

        self.between_batches(pause)
        self.dispatcher.set_paused_targets(targets)

    def _close_target(self, name: str) -> None:
        target = self._targets.get(name)
        if target is not None:
            target.close()

    def _close_added(self, initial: Collection[str]) -> None:
        """Close the targets a reload added (the others have a stop of their own)."""
        failed = []
        for name, target in self._targets.items():
            if name in initial:
                continue
            try:
                target.close()
            except Exception:
                log.exception("closing target %s failed", name)
                failed.append(name)
        if failed:
            raise ConnectorError(f"closing target(s) {', '.join(failed)} failed")

    def open_store(self, stop: threading.Event) -> bool:
        """:func:`open_retrying` on this service's store."""
        return open_retrying(self._store, stop, self._store_open_timeout)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (or a fatal error); always stops what it started.

        Each service is registered as it starts and stopped in reverse order, each stop
        guarded (:class:`~connector.lifecycle.Services`): a target whose ``close()``
        raises is logged by name and the dispatcher before it, the targets after it and
        the store are closed all the same; then :class:`~connector.lifecycle.ShutdownError`
        names the failures (unless the run's own error is propagating)."""
        if not self.open_store(stop):
            return
        try:
            with Services() as services:
                services.push("checkpoint store", self._store.close)
                if self._formats is not None:
                    services.push("schema registry client", self._formats.decoder.close)
                initial = tuple(self._targets)
                for name, target in self._targets.items():
                    target.open()
                    # The target of that name when run stops: a reload may have replaced it.
                    services.push(f"target {name}", functools.partial(self._close_target, name))
                services.push("targets added by reloads", lambda: self._close_added(initial))
                self.dispatcher.start()
                services.push("dispatcher", self.dispatcher.stop)
                for name, companion in self._companions:
                    companion.start()
                    services.push(name, companion.stop)
                self.pipeline = Pipeline(
                    self._settings, self._store, self._evaluator, self.dispatcher,
                    after_batch=self._after_batch, ownership=self.ownership,
                    formats=self._formats,
                )  # fmt: skip
                services.push("pipeline", self.pipeline.close)
                self._running = True
                try:
                    self.pipeline.run(stop)
                finally:
                    self._running = False
        finally:
            if self.pipeline is not None:
                s, d = self.pipeline.stats, self.dispatcher.stats
                log.info(
                    "stopped: %d batches, %d records, %d new events, %d duplicates, "
                    "%d dead records, %d actions queued, %d delivered, %d dead actions",
                    s.batches, s.records, s.new_events, s.duplicates, s.dead_records,
                    s.actions, d.delivered, d.dead,
                )  # fmt: skip


def _positions(positions: Mapping[TP, int | None]) -> str:
    if not positions:
        return "(no partition owned)"
    return ", ".join(
        f"{t}[{p}]@{o if o is not None else 'start'}" for (t, p), o in positions.items()
    )


def _retire(retired: list[tuple[Target, list[threading.Thread]]]) -> None:
    """Close targets that went out of use, once their workers answered their calls."""
    deadline = time.monotonic() + RETIRE_TIMEOUT
    for target, threads in retired:
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            target.close()
        except Exception:
            log.exception("closing the replaced target %s failed", target.name)
