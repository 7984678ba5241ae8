"""What the hot path records into: the connector's metric primitive, without Prometheus.

The pipeline and the dispatcher count in plain fields of their stats (``batches += 1``:
one writer each, nothing cheaper) and time with :class:`Histogram`; the exposition,
:mod:`connector.metrics.exposition`, reads them at scrape time and is the one module
that imports ``prometheus_client``. Importing this module loads nothing but the standard
library: the service and the gateway take their :class:`Snapshot` and :class:`Health`
from here, so a connector without ``metrics:`` never loads Prometheus.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COUNTERS",
    "GAUGES",
    "LATENCY_BUCKETS",
    "Health",
    "Histogram",
    "Snapshot",
    "health_body",
]

# flat snapshot key -> help text; exported as kec_<key>_total (counters) or kec_<key>.
COUNTERS = {
    "batches": "Batches checkpointed and committed (protocol steps 2-3).",
    "failed_batches": "Batches that rolled back and were retried.",
    "records": "Kafka records read.",
    "events": "New events checkpointed (duplicates excluded).",
    "duplicates": "Records whose explicit event id the store already held (resends).",
    "dead_records": "Poison records sent to the dead-letter topic and table.",
    "actions_queued": "Actions the rules queued.",
    "actions_delivered": "Actions delivered to their target.",
    "actions_failed": "Failed delivery attempts (retried later).",
    "actions_dead": "Actions moved to the dead-letter table after their last attempt.",
    "backpressure_pauses": "Times the partitions were paused because too many actions "
    "waited for delivery (pipeline.outbox_max_pending).",
    "backpressure_seconds": "Seconds the partitions spent paused because too many actions "
    "waited for delivery.",
}
GAUGES = {
    "outbox_pending": "Actions waiting for delivery (owned partitions).",
    "paused": "1 while the partitions are paused because too many actions wait.",
    "kafka_connected": "1 while a Kafka broker answers the pipeline's consumer.",
    "store_up": "1 while the checkpoint store answers (the last batch transaction and the "
    "dispatcher's last store call went through).",
}

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


@dataclass
class Snapshot:
    """The numbers of one run; :meth:`ConnectorService.snapshot` fills it."""

    values: dict[str, float] = field(default_factory=dict)  # COUNTERS and GAUGES keys
    queued_by_rule: dict[str, int] = field(default_factory=dict)
    delivered_by_target: dict[str, int] = field(default_factory=dict)
    failed_by_target: dict[str, int] = field(default_factory=dict)
    dead_by_target: dict[str, int] = field(default_factory=dict)
    # Seconds each target had actions due that it could not take (max_in_flight,
    # concurrency, rate), a counter; and its actions in flight now, a gauge.
    throttled_seconds_by_target: dict[str, float] = field(default_factory=dict)
    in_flight_by_target: dict[str, int] = field(default_factory=dict)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    partitions_by_topic: dict[str, int] = field(default_factory=dict)  # in Kafka's metadata
    owned_by_topic: dict[str, int] = field(default_factory=dict)  # read here
    delivery_seconds: Histogram | None = None
    store_write_seconds: Histogram | None = None

    def get(self, key: str, default: float = 0.0) -> float:
        return self.values.get(key, default)


@dataclass(frozen=True)
class Health:
    """Readiness: each check's name and whether it passes."""

    checks: Mapping[str, bool]

    @property
    def ready(self) -> bool:
        return all(self.checks.values())


def health_body(health: Health) -> tuple[int, dict[str, Any]]:
    """The /healthz answer: status code and JSON body (also used by the gateway)."""
    status = "ready" if health.ready else "not ready"
    failing = sorted(name for name, ok in health.checks.items() if not ok)
    body: dict[str, Any] = {"status": status, "checks": dict(health.checks)}
    if failing:
        body["failing"] = failing
    return (200 if health.ready else 503), body
