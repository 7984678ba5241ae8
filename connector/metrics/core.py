"""What the hot path records into: the connector's metric primitive, without Prometheus.

The pipeline and the dispatcher count in plain fields of their stats (``batches += 1``:
one writer each, nothing cheaper) and time with :class:`Histogram`; the exposition,
:mod:`connector.metrics.exposition`, reads them at scrape time and is the one module that imports
``prometheus_client``. Importing this module loads nothing but the standard library.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

__all__ = ["LATENCY_BUCKETS", "Histogram"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Upper bounds (seconds) of the delivery and store-transaction histograms."""


class Histogram:
    """Observations counted in fixed buckets (upper bounds, ascending, then +Inf), and
    their sum. :meth:`observe` is a bisect and two additions, no lock: one thread writes
    (the pipeline's, or the dispatcher's coordinator) and a scrape reads a copy
    (:meth:`cumulative`), which may miss the observation being made."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """``count`` observations of ``value`` (a value on a bound falls in its bucket)."""
        self.counts[bisect.bisect_left(self.buckets, value)] += count
        self.sum += value * count

    def cumulative(self) -> tuple[list[tuple[float, int]], float]:
        """Per upper bound (the last is +Inf), the observations at or below it; and the sum."""
        counts, total = list(self.counts), self.sum
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
            running += n
            out.append((bound, running))
        return out, total
