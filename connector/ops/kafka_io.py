"""Kafka metadata helpers shared by the operator commands.

The operator commands must not disturb the running connector: they read with ``assign()``
through :func:`kec.kafka.reader` (a throwaway group id, auto-commit off), so the
connector's group keeps its members and its committed offsets. Every librdkafka failure
is wrapped in :class:`~kec.errors.KafkaClientError`.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from checkpoint.base import TopicPartition as TP
from kec.errors import KafkaClientError

METADATA_TIMEOUT = 10.0


def partitions_of(consumer: Consumer, topics: Iterable[str]) -> list[TP]:
    """Every partition of ``topics``, sorted; a topic the broker does not know is an error."""
    result: list[TP] = []
    for topic in topics:
        try:
            meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT)
        except KafkaException as exc:
            raise KafkaClientError(f"cannot read the metadata of topic {topic}: {exc}") from exc
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            reason = info.error if info is not None and info.error is not None else "no partitions"
            raise KafkaClientError(f"topic {topic} is not available: {reason}")
        result.extend((topic, p) for p in info.partitions)
    return sorted(result)


def watermarks(consumer: Consumer, tp: TP) -> tuple[int, int]:
    """``(low, high)`` offsets of a partition as the broker knows them now."""
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(*tp), timeout=METADATA_TIMEOUT, cached=False
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
        found = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
    except KafkaException as exc:
        raise KafkaClientError(f"cannot read committed offsets: {exc}") from exc
    return {(c.topic, c.partition): (c.offset if c.offset >= 0 else None) for c in found}


def offsets_for_time(consumer: Consumer, tps: Iterable[TP], epoch_ms: int) -> dict[TP, int]:
    """The first offset at or after ``epoch_ms`` per partition (-1: none that late)."""
    query = [TopicPartition(t, p, epoch_ms) for t, p in tps]
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
        found = consumer.position([TopicPartition(t, p) for t, p in tps])
    except KafkaException as exc:
        raise KafkaClientError(f"cannot read consumer positions: {exc}") from exc
    return {(f.topic, f.partition): int(f.offset) for f in found}
