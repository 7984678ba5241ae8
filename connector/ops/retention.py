"""Retention: keep the checkpoint store from growing without bound.

What stays forever, small: one row per partition (offsets, epochs, watermark) and one
counter per rule. What grows, and what :class:`Pruner` deletes
(:meth:`~checkpoint.base.OperationsStore.prune`), at start and then every ``interval``
seconds, in chunks so the pipeline is never held off the store for long:

* always: partial ``all_of`` sets with a window that no event can complete any more, by
  *event time*: a set expires at its oldest event's create time plus the window, and goes
  once the store's event-time watermark (the least event time of its partitions: each
  partition's newest record timestamp, moved to the present while it has nothing left to
  read) is ``lateness`` seconds past that. The wall clock of this process plays no part,
  so a connector that was down or lags behind (its partitions' event times stay in the
  past) keeps every set it would still complete; a partition that is never read (a topic
  no longer configured, say) holds the watermark back, which only delays pruning;
* with ``checkpoint.retention_days``: batches (events and their actions) older than
  that whose actions are all settled, with the explicit ids of their events; dead
  records, durable ``wait_for_event`` steps and dead actions older than that; rule state
  not updated for that long.

The price, paid only for what is older than the retention: an event resent with the
same explicit id is processed again (events without an explicit id are known by their
offset, for ever); ``replay`` of a pruned range queues its actions again; a pruned dead
action cannot be replayed; a pruned step is polled again; an ``all_of`` set idle that
long starts empty. So set the retention longer than the topics' own ``retention.ms``
(Kafka's default is 7 days) and than any resend, replay or workflow wait you expect.
Without ``retention_days`` (the default) only expired sets are deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from checkpoint.base import OperationsStore

__all__ = ["Pruner"]

log = logging.getLogger(__name__)


class Pruner:
    """Prunes ``store`` in a thread of its own while the service runs (a companion)."""

    def __init__(
        self,
        store: OperationsStore,
        retention_seconds: float | None,
        *,
        interval: float = 600.0,
        chunk: int = 10_000,
        lateness: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_seconds is not None and retention_seconds <= 0:
            raise ValueError("retention_seconds must be positive")
        self._store = store
        self._retention = retention_seconds
        self._interval = interval
        self._chunk = chunk
        self._lateness = lateness
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pruned = 0

    @property
    def retention(self) -> float | None:
        """Seconds after which rows go; None: only expired rule state goes."""
        return self._retention

    def run_once(self) -> int:
        """Prune everything older than the retention now; return how many rows went."""
        # Without a retention only expired rule state goes (nothing is older than 0).
        before = 0.0 if self._retention is None else self._clock() - self._retention
        total = 0
        while not self._stop.is_set():
            n = self._store.prune(before, self._chunk, self._lateness)
            total += n
            if n < self._chunk:
                break
        self.pruned += total
        if total and self._retention is not None:
            log.info(
                "retention: pruned %d rows older than %.1f days (and expired rule state)",
                total,
                self._retention / 86400,
            )
        elif total:
            log.info("retention: pruned %d expired rule states", total)
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
