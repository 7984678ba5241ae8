"""Kafka metadata helpers shared by the operator commands.

The operator commands must not disturb the running connector: they read with ``assign()``
through :func:`kec.kafka.reader` (a throwaway group id, auto-commit off), so the
connector's group keeps its members and its committed offsets. Every librdkafka failure
is wrapped in :class:`~kec.errors.KafkaClientError`.
"""

from __future__ import annotations

from collections.abc import Iterable

from kec.errors import KafkaClientError
from kec.kafka import TP, Consumer, KafkaException, kafka_tp, partition_ids

METADATA_TIMEOUT = 10.0


def partitions_of(consumer: Consumer, topics: Iterable[str]) -> list[TP]:
    """Every partition of ``topics``, sorted; a topic the broker does not know is an error."""
    result: list[TP] = []
    for topic in topics:
        try:
            found = partition_ids(consumer, topic, METADATA_TIMEOUT)
        except KafkaException as exc:
            raise KafkaClientError(f"topic {topic} is not available: {exc}") from exc
        if not found:
            why = "the cluster does not have it" if found is None else "no partitions"
            raise KafkaClientError(f"topic {topic} is not available: {why}")
        result.extend((topic, p) for p in found)
    return sorted(result)


def watermarks(consumer: Consumer, tp: TP) -> tuple[int, int]:
    """``(low, high)`` offsets of a partition as the broker knows them now."""
    try:
        low, high = consumer.get_watermark_offsets(
            kafka_tp(tp), timeout=METADATA_TIMEOUT, cached=False
        )
    except KafkaException as exc:
        raise KafkaClientError(f"cannot read the offsets of {tp[0]}[{tp[1]}]: {exc}") from exc
    return int(low), int(high)


def committed_offsets(consumer: Consumer, tps: Iterable[TP]) -> dict[TP, int | None]:
    """The group's committed offset per partition (``None``: nothing committed)."""
    tps = list(tps)
    if not tps:
        return {}
    try:
        found = consumer.committed([kafka_tp(tp) for tp in tps], timeout=10)
    except KafkaException as exc:
        raise KafkaClientError(f"cannot read committed offsets: {exc}") from exc
    return {(c.topic, c.partition): (c.offset if c.offset >= 0 else None) for c in found}


def offsets_for_time(consumer: Consumer, tps: Iterable[TP], epoch_ms: int) -> dict[TP, int]:
    """The first offset at or after ``epoch_ms`` per partition (-1: none that late)."""
    query = [kafka_tp(tp, epoch_ms) for tp in tps]
    if not query:
        return {}
    try:
        found = consumer.offsets_for_times(query, timeout=METADATA_TIMEOUT)
    except KafkaException as exc:
        raise KafkaClientError(f"cannot look up offsets by time: {exc}") from exc
    return {(f.topic, f.partition): int(f.offset) for f in found}


def positions(consumer: Consumer, tps: Iterable[TP]) -> dict[TP, int]:
    """The consumer's next offset per assigned partition (negative until it has fetched)."""
    try:
        found = consumer.position([kafka_tp(tp) for tp in tps])
    except KafkaException as exc:
        raise KafkaClientError(f"cannot read consumer positions: {exc}") from exc
    return {(f.topic, f.partition): int(f.offset) for f in found}
