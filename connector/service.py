"""Run the connector: the pipeline in the calling thread, the dispatcher beside it.

Shutdown (SIGTERM in the CLI sets ``stop``): the pipeline finishes the batch in progress
(checkpoint and Kafka commit included) and leaves the group; the dispatcher finishes its
round; then targets and store are closed. Pending actions stay in the outbox for the next
start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from checkpoint.base import CheckpointStore
from connector.outbox import Dispatcher, OutboxGauge, RetryPolicy
from connector.runtime import Evaluator, Pipeline, PipelineSettings
from connector.targets.base import Target

log = logging.getLogger(__name__)


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
        self.pipeline: Pipeline | None = None
        self.dispatcher: Dispatcher | None = None

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (or a fatal error); always closes what it opened."""
        self._store.open()
        opened: list[Target] = []
        dispatch_stop = threading.Event()
        worker: threading.Thread | None = None
        try:
            for target in self._targets.values():
                target.open()
                opened.append(target)
            gauge = OutboxGauge()
            self.pipeline = Pipeline(self._settings, self._store, self._evaluator, gauge)
            self.dispatcher = Dispatcher(
                self._store,
                self._targets,
                gauge,
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
