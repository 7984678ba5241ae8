"""Namespace → topic naming, and making sure a namespace's topic exists.

Namespace ``N`` lives in topic ``{topic_prefix}N`` (prefix ``"events."``), or in
``topics[N]`` when that mapping names one (several namespaces may share a topic: the
``namespace`` header keeps them apart; a record without one, on a shared topic, belongs to
no namespace). A missing topic is created on first use
(``partitions``, default 3; ``replication_factor``, default the broker's) because brokers
commonly run with ``auto.create.topics.enable=false``; with ``create_topics=False`` a
missing topic raises :class:`~kec.errors.KafkaClientError` naming it instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.cimpl import NewTopic
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

from connector.notification.retries import ATTEMPT_TIMEOUT, code, retried
from kec.errors import KafkaClientError
from kec.event import DEFAULT_TOPIC_PREFIX

__all__ = ["DEFAULT_TOPIC_PREFIX", "Topics"]

log = logging.getLogger(__name__)


class Topics:
    """Names namespaces' topics and finds (or creates) their partitions, cached per topic.

    No I/O in the constructor; :meth:`partitions_of` is handed the admin client to use.
    """

    def __init__(
        self,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        topics: Mapping[str, str] | None = None,
        *,
        create_topics: bool = True,
        partitions: int = 3,
        replication_factor: int = -1,
        request_timeout: float = 30.0,
    ) -> None:
        self.topic_prefix = topic_prefix
        self._topics = dict(topics or {})
        self._create_topics = create_topics
        self._partitions = partitions
        self._replication_factor = replication_factor
        self._request_timeout = request_timeout
        self._known: dict[str, list[int]] = {}  # topic -> partition ids, once seen

    @property
    def _attempt_timeout(self) -> float:
        return min(ATTEMPT_TIMEOUT, self._request_timeout)

    def topic_for(self, namespace: str) -> str:
        """The topic holding ``namespace``'s events."""
        if not namespace:
            raise ValueError("a namespace must be a non-empty string")
        return self._topics.get(namespace) or f"{self.topic_prefix}{namespace}"

    def shared(self, topic: str) -> bool:
        """Whether more than one namespace this client knows of lives in ``topic``.

        A record without a ``namespace`` header then belongs to none of them: listeners
        skip it rather than guess (and hand it to every namespace of the topic).
        """
        owners = {ns for ns, mapped in self._topics.items() if mapped == topic}
        if topic.startswith(self.topic_prefix):
            derived = topic[len(self.topic_prefix) :]
            if derived and self.topic_for(derived) == topic:
                owners.add(derived)
        return len(owners) > 1

    def partitions_of(self, admin: Any, topic: str) -> list[int]:
        """The topic's partition ids, creating the topic first when missing and allowed."""
        known = self._known.get(topic)
        if known is not None:
            return known
        found = self._describe(admin, topic)
        if found is None:
            if not self._create_topics:
                raise KafkaClientError(
                    f"topic {topic!r} does not exist and create_topics is off: create it, "
                    "or let the client create it"
                )
            self._create(admin, topic)
            # Wait until the topic is visible, so the first produce or fetch finds it.
            waiting = Retrying(
                retry=retry_if_result(lambda parts: parts is None),
                stop=stop_after_delay(self._request_timeout),
                wait=wait_exponential(multiplier=0.02, max=0.5),
                retry_error_callback=lambda _: None,
            )
            found = waiting(self._describe, admin, topic)
            if found is None:
                raise KafkaClientError(f"topic {topic!r} was created but did not show up")
        self._known[topic] = found
        return found

    def _describe(self, admin: Any, topic: str) -> list[int] | None:
        def describe() -> list[int] | None:
            future = admin.describe_topics(
                TopicCollection([topic]), request_timeout=self._attempt_timeout
            )[topic]
            try:
                description = future.result(timeout=self._attempt_timeout + 5)
            except KafkaException as exc:
                if code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    return None  # retriable for Kafka, but here it is the answer
                raise
            return sorted(p.id for p in description.partitions)

        return retried(f"describing topic {topic!r}", describe, self._request_timeout)

    def _create(self, admin: Any, topic: str) -> None:
        def create() -> None:
            new = NewTopic(
                topic,
                num_partitions=self._partitions,
                replication_factor=self._replication_factor,
            )
            future = admin.create_topics([new], request_timeout=self._attempt_timeout)[topic]
            try:
                future.result(timeout=self._attempt_timeout + 5)
            except KafkaException as exc:
                if code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                    raise
            log.info("created topic %s with %d partitions", topic, self._partitions)

        retried(f"creating topic {topic!r}", create, self._request_timeout)
