"""The supervisor answers for its processes as one instance: numbers merged, health
combined, and what a dead process counted kept (connector.supervisor)."""

from __future__ import annotations

from connector.metrics.core import Health, Histogram, Snapshot
from connector.supervisor import counters_of, member_id, merge_health, merge_snapshots


def _snap(events: int, pending: int, connected: int, paused: int, delivered: int) -> Snapshot:
    hist = Histogram((0.1, 1.0))
    hist.observe(0.05, delivered)
    return Snapshot(
        values={
            "events": events,
            "outbox_pending": pending,
            "kafka_connected": connected,
            "paused": paused,
        },
        delivered_by_target={"log": delivered},
        lag={("t", 0): 5, ("t", 1): pending},
        delivery_seconds=hist,
    )


def test_counters_add_up_and_gauges_say_what_the_instance_is() -> None:
    merged = merge_snapshots([_snap(10, 3, 1, 0, 4), _snap(5, 2, 0, 1, 6)])
    assert merged.values == {"events": 15, "outbox_pending": 5, "kafka_connected": 0, "paused": 1}
    assert merged.delivered_by_target == {"log": 10}
    assert merged.lag == {("t", 0): 5, ("t", 1): 3}  # a partition seen by two: the larger
    assert merged.delivery_seconds is not None
    assert merged.delivery_seconds.counts == [10, 0, 0]
    assert merged.delivery_seconds.sum == 10 * 0.05


def test_merging_leaves_the_processes_numbers_alone() -> None:
    first = _snap(10, 3, 1, 0, 4)
    merge_snapshots([first, _snap(5, 2, 1, 0, 6)])
    assert first.values["events"] == 10
    assert first.delivery_seconds is not None and first.delivery_seconds.counts == [4, 0, 0]


def test_a_dead_process_keeps_its_counts_not_its_gauges() -> None:
    kept = counters_of(_snap(10, 3, 1, 1, 4))
    assert kept.values == {"events": 10}
    assert kept.delivered_by_target == {"log": 4}
    assert kept.lag == {}
    merged = merge_snapshots([kept, _snap(1, 2, 1, 0, 1)])
    assert merged.values["events"] == 11
    assert merged.values["outbox_pending"] == 2
    assert merged.values["kafka_connected"] == 1


def test_health_is_ready_only_when_every_process_is_and_answers() -> None:
    ok = Health({"kafka": True, "store": True})
    assert merge_health([ok, ok]).ready
    down = merge_health([ok, Health({"kafka": False, "store": True})])
    assert not down.ready and down.checks["kafka"] is False and down.checks["processes"]
    silent = merge_health([ok, None])
    assert not silent.ready and silent.checks["processes"] is False
    assert not merge_health([]).ready


def test_member_ids_are_distinct_per_process() -> None:
    assert {member_id("host-1", i) for i in (1, 2, 3)} == {"host-1-p1", "host-1-p2", "host-1-p3"}


def test_partitions_read_add_up_and_the_topic_keeps_its_size() -> None:
    first = Snapshot(
        values={"store_up": 1},
        partitions_by_topic={"t": 6, "u": 1},
        owned_by_topic={"t": 2, "u": 0},
    )
    second = Snapshot(values={"store_up": 0}, partitions_by_topic={"t": 6}, owned_by_topic={"t": 3})
    merged = merge_snapshots([first, second])
    assert merged.partitions_by_topic == {"t": 6, "u": 1}
    assert merged.owned_by_topic == {"t": 5, "u": 0}
    assert merged.values["store_up"] == 0  # one process without its store: the instance too
    assert counters_of(first).owned_by_topic == {}  # a dead process reads nothing
