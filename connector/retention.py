"""Retention: keep the checkpoint store from growing without bound.

Every event stays in the store so that a re-delivered record, an application resend of
the same ``event-id`` or a ``replay`` of its offset is recognised and not processed twice;
every delivered action stays marked done. Kept forever, that is ~250 bytes per event. With
``checkpoint.retention_days`` set, :class:`Pruner` deletes, at start and then every
``interval`` seconds, the events stored and the *done* actions queued more than that long
ago (:meth:`~checkpoint.base.CheckpointStore.prune`), in chunks so the pipeline is never
held off the store for long. Pending and dead actions, dead records, rule state, offsets
and durable steps are kept whatever their age.

The price is the dedup window: an event older than the retention, resent with its id or
replayed from Kafka, is processed again. So set the retention at least as long as the
topics' own ``retention.ms`` (Kafka's default is 7 days), and longer than any replay or
resend you expect. Without ``retention_days`` (the default) nothing is pruned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from checkpoint.base import CheckpointStore

__all__ = ["Pruner"]

log = logging.getLogger(__name__)


class Pruner:
    """Prunes ``store`` in a thread of its own while the service runs (a companion)."""

    def __init__(
        self,
        store: CheckpointStore,
        retention_seconds: float,
        *,
        interval: float = 600.0,
        chunk: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_seconds <= 0:
            raise ValueError("retention_seconds must be positive")
        self._store = store
        self._retention = retention_seconds
        self._interval = interval
        self._chunk = chunk
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pruned = 0

    def run_once(self) -> int:
        """Prune everything older than the retention now; return how many rows went."""
        before = self._clock() - self._retention
        total = 0
        while not self._stop.is_set():
            n = self._store.prune(before, self._chunk)
            total += n
            if n < self._chunk:
                break
        self.pruned += total
        if total:
            log.info(
                "retention: pruned %d events and done actions older than %.1f days",
                total,
                self._retention / 86400,
            )
        return total

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kec-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the chunk in progress; idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("retention: pruning failed; trying again in %.0fs", self._interval)
            self._stop.wait(self._interval)
