"""Topics: which ones the connector needs, making sure they exist, and listing them.

Brokers commonly run with ``auto.create.topics.enable=false``, so a connector that
waits for its topics to appear by themselves waits for ever. Every part of the project
that reads or writes a topic it owns goes through this module:

* ``run`` creates the topics of its namespaces, the HTTP gateway's topic and the
  dead-letter topic before it consumes anything (:func:`ensure_config_topics`);
* ``send``, ``gateway`` and :class:`~connector.notification.NotificationClient` create
  the topic they write to on first use (:class:`Topics` for the client);
* ``event-connector topics create|list`` lets operators who manage topics themselves do
  it up front (:func:`list_topics`, :func:`describe_topics`, :func:`ensure_topics`).

A missing topic is created with :class:`TopicPolicy`'s partitions and replication factor
(``-1``: the broker's ``default.replication.factor``). With creation off
(``topic_creation: {enabled: false}`` in the config file, for clusters where the
connector has no right to create topics) a missing topic is an error that names it and
says how to create it. Naming: namespace ``N`` lives in ``{topic_prefix}N`` (prefix
``"events."``) unless a mapping names its topic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

from kec import kafka
from kec.errors import BrokerUnavailable, KafkaClientError
from kec.event import DEFAULT_TOPIC_PREFIX
from kec.kafka import ATTEMPT_TIMEOUT, REACH_TIMEOUT, TopicInfo, reach, retried

if TYPE_CHECKING:
    from connector.config import ConnectorConfig

__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "TopicInfo",
    "TopicPolicy",
    "Topics",
    "config_topics",
    "describe_topics",
    "ensure_config_topics",
    "ensure_topics",
    "list_topics",
    "open_admin",
    "policy_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """Whether missing topics are created, and how (the config's ``topic_creation``)."""

    create: bool = True
    partitions: int = 3
    replication_factor: int = -1  # -1: the broker's default.replication.factor
    request_timeout: float = 30.0  # seconds for the cluster to answer, retries included


def open_admin(connection: kafka.Connection) -> Any:
    """An admin client on ``connection`` (no I/O until its first request)."""
    return kafka.admin(connection)


# -- describe, create ---------------------------------------------------------------------


def describe_topics(
    admin: Any, topics: Iterable[str], timeout: float = 30.0
) -> dict[str, TopicInfo | None]:
    """Each topic's description, ``None`` for a topic the cluster does not have.

    Transient errors (no broker yet, leadership settling) are retried for ``timeout``
    seconds; after that :class:`~kec.errors.BrokerUnavailable` is raised.
    """
    wanted = sorted(set(topics))
    if not wanted:
        return {}
    attempt = min(ATTEMPT_TIMEOUT, timeout)

    def describe() -> dict[str, TopicInfo | None]:
        return kafka.describe(admin, wanted, attempt)

    return retried(f"describing topics {', '.join(wanted)}", describe, timeout)


def _create(admin: Any, names: Sequence[str], policy: TopicPolicy, source: str) -> None:
    attempt = min(ATTEMPT_TIMEOUT, policy.request_timeout)

    def create() -> None:
        outcome = kafka.create(
            admin,
            names,
            partitions=policy.partitions,
            replication_factor=policy.replication_factor,
            timeout=attempt,
        )
        for name, exc in outcome.items():
            if exc is None:
                log.info(
                    "created topic %s (%d partitions, replication factor %s)",
                    name,
                    policy.partitions,
                    "the broker's default"
                    if policy.replication_factor == -1
                    else policy.replication_factor,
                )
                continue
            reason = kafka.create_refusal(exc)
            if reason is not None:
                raise KafkaClientError(
                    f"topic {name!r} does not exist and creating it failed: {reason} "
                    f"({kafka.error_text(exc)}). Create it with your cluster's own tooling "
                    f"(or `event-connector topics create {name} {source}` as a user "
                    "who may), or change topic_creation in the config file."
                ) from exc
            if not kafka.already_exists(exc):  # lost a race: fine
                raise exc

    retried(f"creating topics {', '.join(names)}", create, policy.request_timeout)


def _await_visible(admin: Any, names: Sequence[str], timeout: float) -> dict[str, TopicInfo]:
    """Descriptions of freshly created topics, once every broker answer shows them."""

    def missing(found: dict[str, TopicInfo | None]) -> bool:
        return any(info is None or not info.partitions for info in found.values())

    waiting = Retrying(
        retry=retry_if_result(missing),
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=0.02, max=0.5),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else {},
    )
    found: dict[str, TopicInfo | None] = waiting(describe_topics, admin, names, timeout)
    late = sorted(name for name in names if found.get(name) is None)
    if late:
        raise KafkaClientError(f"topics {', '.join(late)} were created but did not show up")
    return {name: info for name, info in found.items() if info is not None}


def how_to_create(topics: Iterable[str], source: str) -> str:
    """The sentence telling an operator how to create ``topics``.

    ``source`` is how the command line reaches the cluster: ``-c FILE`` or
    ``--bootstrap HOST:PORT``.
    """
    listed = sorted(set(topics))
    names = " ".join(listed)
    return (
        f"Create {'it' if len(listed) == 1 else 'them'} with "
        f"`event-connector topics create {names} {source}` (or your "
        "cluster's own tooling), or let the connector create topics "
        "(topic_creation.enabled: true in the config file)."
    )


def ensure_topics(
    connection: kafka.Connection,
    topics: Iterable[str],
    policy: TopicPolicy | None = None,
    *,
    source: str | None = None,
) -> list[str]:
    """Make sure every topic exists; return the ones created (sorted).

    Missing topics are created with ``policy`` and waited for until the cluster describes
    them, so a produce or subscribe right after finds them. With ``policy.create`` off a
    missing topic raises :class:`~kec.errors.KafkaClientError` naming every missing topic
    and how to create it (:func:`how_to_create` with ``source``, by default
    ``--bootstrap`` and the address). A cluster that cannot be reached raises
    :class:`~kec.errors.BrokerUnavailable` naming the bootstrap address and why (first
    :func:`kec.kafka.reach`: within seconds when librdkafka says why, else after
    ``policy.request_timeout``).
    """
    wanted = sorted(set(topics))
    if not wanted:
        return []
    bootstrap = connection.bootstrap_servers
    reach(connection, policy.request_timeout if policy is not None else REACH_TIMEOUT)
    admin = open_admin(connection)
    try:
        _, created = _ensure(
            admin, wanted, policy or TopicPolicy(), source or f"--bootstrap {bootstrap}", bootstrap
        )
    except kafka.TopicRefused as exc:
        raise kafka.not_authorized(
            f"topic {exc.topic!r}", exc.error, connection.principal()
        ) from exc
    return created


def _ensure(
    admin: Any, wanted: Sequence[str], policy: TopicPolicy, source: str, bootstrap: str
) -> tuple[dict[str, TopicInfo], list[str]]:
    """Every wanted topic's description, creating the missing ones; and those created."""
    try:
        found = describe_topics(admin, wanted, policy.request_timeout)
        missing = [name for name in wanted if found[name] is None]
        if missing:
            if not policy.create:
                raise KafkaClientError(
                    f"{_topics_phrase(missing)} not exist and topic creation is off. "
                    + how_to_create(missing, source)
                )
            _create(admin, missing, policy, source)
            found.update(_await_visible(admin, missing, policy.request_timeout))
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    return {name: info for name, info in found.items() if info is not None}, missing


def _topics_phrase(names: Sequence[str]) -> str:
    listed = ", ".join(repr(n) for n in names)
    return f"topic {listed} does" if len(names) == 1 else f"topics {listed} do"


def list_topics(connection: kafka.Connection, timeout: float = 30.0) -> dict[str, TopicInfo]:
    """Every topic of the cluster but its internal ones (``__consumer_offsets``...)."""
    reach(connection, timeout)
    admin = open_admin(connection)

    def names() -> list[str]:
        meta = admin.list_topics(timeout=min(ATTEMPT_TIMEOUT, timeout))
        return [name for name in meta.topics if not name.startswith("__")]

    try:
        listed = retried("listing topics", names, timeout)
        found = describe_topics(admin, listed, timeout)
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {connection.bootstrap_servers}: {exc}"
        ) from exc
    return {name: info for name, info in sorted(found.items()) if info is not None}


# -- the topics of a config file ----------------------------------------------------------


def config_topics(cfg: ConnectorConfig) -> dict[str, str]:
    """Topic -> what it is for, for every topic ``run -c`` reads or writes itself.

    The namespaces' topics, the HTTP gateway's topic (with ``http:``) and the dead-letter
    topic. A ``kafka`` target's topic is not among them: it may live on another cluster.
    """
    roles = {topic: f"namespace {ns}" for topic, ns in cfg.topics().items()}
    if cfg.http is not None:
        roles[cfg.http.topic] = f"HTTP gateway (namespace {cfg.http.namespace})"
    if cfg.dead_letter_topic is not None:
        roles.setdefault(cfg.dead_letter_topic, "dead letters")
    return roles


def policy_of(cfg: ConnectorConfig) -> TopicPolicy:
    """The config file's ``topic_creation`` section as a :class:`TopicPolicy`."""
    spec = cfg.topic_creation
    return TopicPolicy(
        create=spec.enabled,
        partitions=spec.partitions,
        replication_factor=spec.replication_factor,
    )


def ensure_config_topics(cfg: ConnectorConfig, *, source: str = "-c FILE") -> list[str]:
    """:func:`ensure_topics` for every topic of :func:`config_topics`; the ones created.

    ``source`` names the config on the command line (``-c connector.yaml``), for the
    advice in the error raised when a topic is missing and creation is off.
    """
    return ensure_topics(cfg.kafka.connection(), config_topics(cfg), policy_of(cfg), source=source)


# -- a client's view: namespace -> topic, partitions cached -------------------------------


class Topics:
    """Names namespaces' topics and finds (or creates) their partitions, cached per topic.

    Namespace ``N`` lives in ``topics[N]`` when the mapping names one (several namespaces
    may share a topic: the ``namespace`` header keeps them apart; a record without one, on
    a shared topic, belongs to no namespace), else in ``{topic_prefix}N``. No I/O in the
    constructor; :meth:`partitions_of` is handed the admin client to use.
    """

    def __init__(
        self,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        topics: Mapping[str, str] | None = None,
        policy: TopicPolicy | None = None,
        *,
        bootstrap: str = "?",
    ) -> None:
        self.topic_prefix = topic_prefix
        self._topics = dict(topics or {})
        self._policy = policy or TopicPolicy()
        self._bootstrap = bootstrap  # for messages
        self._known: dict[str, list[int]] = {}  # topic -> partition ids, once seen

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
        if known is None:
            source = f"--bootstrap {self._bootstrap}"
            found, _ = _ensure(admin, [topic], self._policy, source, self._bootstrap)
            known = self._known[topic] = list(found[topic].partition_ids)
        return known
