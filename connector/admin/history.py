"""The last minutes of a running connector, for the console's charts.

:class:`History` keeps a ring of samples of the connector's counters (one every
``interval`` seconds, ten minutes by default) and turns consecutive samples into rates:
records read and actions delivered per second, and the delivery latency (median and 95th
percentile, from the delivery histogram's buckets filled during the interval). A
target's health comes from the same ring: failing attempts in the last minute with no
delivery is ``failing``, with some ``degraded``, none ``ok``.

:func:`sparkline` draws a series as a small inline SVG, so the page needs no script
library and no asset from elsewhere.
"""

from __future__ import annotations

import html
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.metrics.core import Snapshot

__all__ = ["History", "Sample", "quantile", "sparkline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """The counters of one snapshot, at ``at`` (epoch seconds)."""

    at: float
    records: float
    delivered: float
    failed_by_target: dict[str, int] = field(default_factory=dict)
    delivered_by_target: dict[str, int] = field(default_factory=dict)
    dead_by_target: dict[str, int] = field(default_factory=dict)
    buckets: tuple[float, ...] = ()  # the delivery histogram's upper bounds
    counts: tuple[int, ...] = ()  # its per-bucket counts (the last one: +Inf)

    @classmethod
    def of(cls, snapshot: Snapshot, at: float) -> Sample:
        histogram = snapshot.delivery_seconds
        return cls(
            at=at,
            records=snapshot.get("records"),
            delivered=snapshot.get("actions_delivered"),
            failed_by_target=dict(snapshot.failed_by_target),
            delivered_by_target=dict(snapshot.delivered_by_target),
            dead_by_target=dict(snapshot.dead_by_target),
            buckets=histogram.buckets if histogram is not None else (),
            counts=tuple(histogram.counts) if histogram is not None else (),
        )


def quantile(buckets: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of the observations counted
    per bucket (the +Inf bucket reads as the largest finite bound); None without any."""
    total = sum(counts)
    if total <= 0 or not buckets:
        return None
    wanted = q * total
    running = 0
    for i, n in enumerate(counts):
        running += n
        if running >= wanted:
            return buckets[min(i, len(buckets) - 1)]
    return buckets[-1]


class History:
    """A ring of :class:`Sample` (``size`` of them); :meth:`sample` adds one from
    ``snapshot()``. Thread-safe: one sampler writes, requests read."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        interval: float = 5.0,
        size: int = 120,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self.interval = interval
        self._clock = clock
        self._ring: deque[Sample] = deque(maxlen=size + 1)  # size intervals need size + 1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> Sample:
        taken = Sample.of(self._snapshot(), self._clock())
        with self._lock:
            self._ring.append(taken)
        return taken

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._ring)

    def series(self) -> dict[str, Any]:
        """Per interval between two samples: its end (``at``), records/s, deliveries/s,
        delivery latency p50 and p95 in milliseconds (None: nothing delivered then)."""
        ring = self.samples()
        out: dict[str, Any] = {
            "interval_seconds": self.interval,
            "at": [],
            "records_per_second": [],
            "delivered_per_second": [],
            "delivery_p50_ms": [],
            "delivery_p95_ms": [],
        }
        for before, after in itertools.pairwise(ring):
            span = max(after.at - before.at, 1e-9)
            out["at"].append(round(after.at, 3))
            out["records_per_second"].append(
                round(max(0.0, after.records - before.records) / span, 3)
            )
            out["delivered_per_second"].append(
                round(max(0.0, after.delivered - before.delivered) / span, 3)
            )
            counts: list[int] = []
            if after.buckets and len(after.counts) == len(before.counts):
                counts = [max(0, a - b) for a, b in zip(after.counts, before.counts, strict=True)]
            elif after.buckets:
                counts = list(after.counts)
            for q, key in ((0.5, "delivery_p50_ms"), (0.95, "delivery_p95_ms")):
                bound = quantile(after.buckets, counts, q)
                out[key].append(None if bound is None else round(bound * 1000, 3))
        return out

    def target_health(self, target: str, window: float = 60.0) -> str:
        """``ok``, ``degraded`` (attempts failed or actions died in the last ``window``
        seconds, some deliveries too), ``failing`` (failed, none delivered) or ``unknown`` (too few
        samples yet)."""
        ring = self.samples()
        if len(ring) < 2:
            return "unknown"
        last = ring[-1]
        first = next((s for s in ring if s.at >= last.at - window), ring[0])
        if first is last:
            first = ring[-2]

        def change(counts: Callable[[Sample], dict[str, int]]) -> int:
            return counts(last).get(target, 0) - counts(first).get(target, 0)

        failed = change(lambda s: s.failed_by_target) + change(lambda s: s.dead_by_target)
        delivered = change(lambda s: s.delivered_by_target)
        if failed <= 0:
            return "ok"
        return "degraded" if delivered > 0 else "failing"

    # -- the sampler thread ----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kec-admin-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception as exc:  # a child not answering: the next sample will tell
                log.debug("admin history: no sample: %s", exc)
            if self._stop.wait(self.interval):
                return


def sparkline(
    values: Sequence[float | None],
    *,
    label: str,
    unit: str = "",
    width: int = 240,
    height: int = 44,
) -> str:
    """``values`` as an inline SVG polyline, scaled to its largest value, with the last
    value and ``label`` written beside it (None values are gaps drawn as zero)."""
    shown = [v if v is not None else 0.0 for v in values]
    top = max(shown, default=0.0) or 1.0
    pad = 2
    inner_h = height - 2 * pad
    step = (width - 2 * pad) / max(len(shown) - 1, 1)
    points = " ".join(
        f"{pad + i * step:.1f},{pad + inner_h - (v / top) * inner_h:.1f}"
        for i, v in enumerate(shown)
    )
    last = next((v for v in reversed(values) if v is not None), None)
    now = "–" if last is None else f"{last:g}{unit}"
    title = html.escape(f"{label}: now {now}, peak {max(shown, default=0.0):g}{unit}")
    line = (
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/>'
        if len(shown) > 1
        else ""
    )
    return (
        f'<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
        f"<title>{title}</title>"
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" class="frame"/>'
        f"{line}</svg><figcaption>{html.escape(label)}: <b>{html.escape(now)}</b>"
        "</figcaption></figure>"
    )
