"""The progress line in the log: how far the connector got in the last minute, without a
metrics stack (and without Prometheus: it reads the same :class:`Snapshot`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from connector.metrics.core import Snapshot

__all__ = ["ProgressLog"]

log = logging.getLogger(__name__)


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
