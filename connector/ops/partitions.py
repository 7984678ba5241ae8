"""``partitions list`` and ``partitions reset``: the store's partitions beside Kafka's.

A running connector *stops* a partition whose Kafka offsets do not follow the store's: the
topic was deleted and created again (its id changed), a cluster was migrated, an unclean
leader election truncated the log (Kafka's end is below the store's next offset). It
pauses the partition, records why in the store, logs it and turns its health red; it
never guesses which records are new. ``partitions reset`` is the operator's decision:
read on from one of Kafka's offsets (the beginning by default, or the group's committed
offset, the end, or a number), keeping every batch, event and action the store holds.
The running owner sees the reset within seconds and reads on; nothing needs a restart.

Both commands read Kafka without joining the connector's group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from checkpoint.base import OperationsStore, PartitionInfo
from connector.ops.kafka_io import committed_offsets, watermarks
from connector.topics import describe_topics, open_admin
from kec import kafka
from kec.errors import ConfigError
from kec.event import TP

__all__ = ["PartitionView", "ResetResult", "list_partitions", "reset_partitions"]


@dataclass(frozen=True)
class PartitionView:
    """A partition as the store has it, with Kafka's offsets and topic id now."""

    info: PartitionInfo
    low: int | None
    high: int | None
    topic_id: str | None  # Kafka's, now (None: the topic does not exist)


@dataclass(frozen=True)
class ResetResult:
    tp: TP
    before: PartitionInfo
    next_offset: int
    low: int
    high: int
    topic_id: str | None


def _kafka_view(
    connection: kafka.Connection, tps: Sequence[TP]
) -> tuple[dict[TP, tuple[int, int]], dict[str, str | None]]:
    topics = sorted({t for t, _ in tps})
    found = describe_topics(open_admin(connection), topics, timeout=30)
    ids = {name: (info.topic_id if info else None) for name, info in found.items()}
    consumer = kafka.reader(connection, "partitions")
    try:
        marks = {tp: watermarks(consumer, tp) for tp in tps if found.get(tp[0]) is not None}
    finally:
        consumer.close()
    return marks, ids


def list_partitions(
    connection: kafka.Connection, store: OperationsStore, topics: Sequence[str] | None = None
) -> list[PartitionView]:
    rows = [p for p in store.partitions() if not topics or p.tp[0] in topics]
    marks, ids = _kafka_view(connection, [p.tp for p in rows])
    views = []
    for p in rows:
        low, high = marks.get(p.tp, (None, None))
        views.append(PartitionView(p, low, high, ids.get(p.tp[0])))
    return views


def reset_partitions(
    connection: kafka.Connection,
    group_id: str,
    store: OperationsStore,
    topic: str,
    partitions: Sequence[int] | None,
    to: str,
    *,
    force: bool = False,
) -> list[ResetResult]:
    """Reset the stopped partitions of ``topic`` (or the named ``partitions``) to ``to``:
    ``earliest``, ``latest``, ``committed`` (the group's, else earliest) or an offset."""
    rows = {p.tp: p for p in store.partitions() if p.tp[0] == topic}
    if partitions:
        missing = [p for p in partitions if (topic, p) not in rows]
        if missing:
            raise ConfigError(
                f"the store knows no partition {', '.join(map(str, missing))} of {topic}"
            )
        chosen = [(topic, p) for p in partitions]
    else:
        chosen = sorted(tp for tp, row in rows.items() if row.stopped is not None or force)
        if not chosen:
            raise ConfigError(
                f"no partition of {topic} is stopped (name them with --partition, and --force "
                "to reset partitions that run)"
            )
    marks, ids = _kafka_view(connection, chosen)
    if ids.get(topic) is None:
        raise ConfigError(f"Kafka has no topic {topic}: create it before resetting its partitions")
    committed: dict[TP, int | None] = {}
    if to == "committed":
        consumer = kafka.consumer(connection.with_properties({"group.id": group_id}))
        try:
            committed = committed_offsets(consumer, chosen)
        finally:
            consumer.close()
    results = []
    for tp in chosen:
        low, high = marks[tp]
        if to == "earliest":
            offset = low
        elif to == "latest":
            offset = high
        elif to == "committed":
            found = committed.get(tp)
            offset = found if found is not None and low <= found <= high else low
        else:
            offset = int(to)
            if not low <= offset <= high:
                raise ConfigError(
                    f"{tp[0]}[{tp[1]}]: offset {offset} is outside Kafka's offsets {low}..{high}"
                )
        before = store.reset_partition(tp, offset, ids[topic], force=force)
        results.append(ResetResult(tp, before, offset, low, high, ids[topic]))
    return results
