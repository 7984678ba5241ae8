"""What the cluster says about topics, and asking it for new ones: written once.

:func:`partition_ids` (fresh metadata, through a consumer or an admin client),
:func:`describe` and :func:`create` are single attempts; the caller retries them
(:func:`kec.kafka.retried`) and decides what a missing topic means. Offsets and partitions
travel as :data:`~kec.event.TP` tuples in the project; :class:`KafkaTopicPartition`, the
client's own class, is built only for a client call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    OFFSET_STORED,
    KafkaError,
    KafkaException,
    TopicCollection,
)
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.cimpl import NewTopic  # (confluent_kafka.admin does not re-export it)

from kec.errors import KafkaNotAuthorized
from kec.event import TP
from kec.kafka.errors import refused_resource, unknown_topic

__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "OFFSET_INVALID",
    "OFFSET_STORED",
    "TP",
    "KafkaTopicPartition",
    "TopicInfo",
    "TopicRefused",
    "create",
    "describe",
    "kafka_tp",
    "partition_ids",
]


class TopicRefused(KafkaNotAuthorized):
    """The cluster's ACLs refused a request on ``topic`` (see
    :func:`kec.kafka.errors.not_authorized` for the line that names who needs access)."""

    def __init__(self, topic: str, error: KafkaError) -> None:
        super().__init__(f"not authorized on topic {topic!r}: {error.str()}")
        self.topic = topic
        self.error = error


def kafka_tp(tp: TP, offset: int | None = None) -> KafkaTopicPartition:
    """The client's object for partition ``tp`` (at ``offset``, when given)."""
    if offset is None:
        return KafkaTopicPartition(tp[0], tp[1])
    return KafkaTopicPartition(tp[0], tp[1], offset)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the cluster describes it."""

    name: str
    partition_ids: tuple[int, ...]
    replication_factor: int
    topic_id: str | None = None  # Kafka's id: a topic deleted and created again has a new one

    @property
    def partitions(self) -> int:
        return len(self.partition_ids)


def partition_ids(client: Any, topic: str, timeout: float) -> list[int] | None:
    """The topic's partition ids, sorted, from fresh metadata (``client`` is a consumer or
    an admin client); ``None`` when the cluster does not have the topic. Any other error
    of the topic raises ``KafkaException`` (transient ones, such as a leader not elected
    yet right after creation, are worth retrying)."""
    meta = client.list_topics(topic, timeout=timeout).topics.get(topic)
    error = None if meta is None else meta.error
    if meta is None or unknown_topic(error):
        return None
    if error is not None:
        raise KafkaException(error)
    return sorted(cast(Mapping[int, Any], meta.partitions))


def describe(admin: Any, names: Sequence[str], timeout: float) -> dict[str, TopicInfo | None]:
    """Each topic's description, ``None`` for one the cluster does not have; other errors
    raise ``KafkaException``."""
    futures = admin.describe_topics(TopicCollection(list(names)), request_timeout=timeout)
    found: dict[str, TopicInfo | None] = {}
    for name in names:
        try:
            description = futures[name].result(timeout=timeout + 5)
        except KafkaException as exc:
            if unknown_topic(exc):
                found[name] = None  # retriable for Kafka, but here it is the answer
                continue
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and refused_resource(error) is not None:
                raise TopicRefused(name, error) from exc
            raise
        parts = description.partitions
        replicas = max((len(p.replicas) for p in parts), default=0)
        topic_id = getattr(description, "topic_id", None)
        found[name] = TopicInfo(
            name, tuple(sorted(p.id for p in parts)), replicas,
            str(topic_id) if topic_id is not None else None,
        )  # fmt: skip
    return found


def create(
    admin: Any, names: Iterable[str], *, partitions: int, replication_factor: int, timeout: float
) -> dict[str, KafkaException | None]:
    """Ask the cluster to create each topic; per topic ``None`` (created) or the failure
    (see :func:`kec.kafka.errors.create_refusal` and ``already_exists``)."""
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
        for name in names
    ]
    futures = admin.create_topics(new, request_timeout=timeout)
    outcome: dict[str, KafkaException | None] = {}
    for topic in new:
        try:
            futures[topic.topic].result(timeout=timeout + 5)
            outcome[topic.topic] = None
        except KafkaException as exc:
            outcome[topic.topic] = exc
    return outcome
