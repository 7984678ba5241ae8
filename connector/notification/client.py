"""The AIFlow-style :class:`NotificationClient`: ``send_event`` and listener bookkeeping.

Sending. One idempotent producer (``enable.idempotence=true``, ``acks=all``) per client.
``send_event`` returns once the broker acknowledged the record, with the Event's topic,
partition and offset; no acknowledgement within ``delivery_timeout`` raises
``KafkaClientError``. The record may still have been written then: resending with the
same ``event_id`` lets every consumer deduplicate it.

Listening. ``register_listener`` resolves where to start before it returns (see
:func:`~connector.notification.listener.start_offsets`), then starts a
:class:`~connector.notification.listener.ListenerThread` with a consumer of its own. One
live listener per group id, checked within the client. ``unregister_listener`` stops the
thread and waits up to ``stop_timeout`` for it; the thread closes its consumer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from connector.notification.env import ENV_NAMESPACE, Identity
from connector.notification.listener import (
    KeyFilter,
    ListenerProcessor,
    ListenerThread,
    derived_group,
    start_offsets,
)
from connector.topics import DEFAULT_TOPIC_PREFIX, TopicPolicy, Topics
from kec.codec import check_outgoing
from kec.errors import BrokerUnavailable, ConfigError, DecodeError, KafkaClientError
from kec.event import Event
from kec.kafka import (
    ATTEMPT_TIMEOUT,
    CONSUMER_FIXED,
    PRODUCER_FIXED,
    AdminClient,
    Connection,
    Consumer,
    KafkaException,
    Producer,
    close_producer,
    delivery_error,
    fixed,
    kafka_new,
    kafka_tp,
)

if TYPE_CHECKING:
    from connector.config import ConnectorConfig

__all__ = ["NotificationClient"]

log = logging.getLogger(__name__)


class NotificationClient:
    """Sends events to namespaces and runs listeners on them; see the package docstring.

    The cluster is given as ``bootstrap_servers`` (with ``properties`` for SASL, TLS and
    other librdkafka settings) or as one :class:`~kec.kafka.Connection`
    (``connection=``, ``properties`` then added to it); :meth:`from_config` takes the
    connector's. No I/O happens in the constructor: the producer is made by :meth:`open`
    (or the first call that needs it). :meth:`close` unregisters every listener and
    flushes the producer; it is idempotent, and the client is a context manager.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        namespace: str | None = None,
        *,
        connection: Connection | None = None,
        sender: str | None = None,
        context: str | None = None,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        topics: Mapping[str, str] | None = None,
        create_topics: bool = True,
        partitions: int = 3,
        replication_factor: int = -1,
        properties: Mapping[str, Any] | None = None,
        producer_properties: Mapping[str, Any] | None = None,
        consumer_properties: Mapping[str, Any] | None = None,
        delivery_timeout: float = 30.0,
        request_timeout: float = 30.0,
        max_batch: int = 100,
        poll_timeout: float = 0.2,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 30.0,
        stop_timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if (bootstrap_servers is None) == (connection is None):
            raise ValueError("give the cluster as bootstrap_servers or as connection=, once")
        if connection is None:
            connection = Connection(str(bootstrap_servers))
        connection = connection.with_properties(properties or {})
        identity = Identity.resolve(namespace, sender, context, environ)
        self.connection = connection
        self.bootstrap_servers = connection.bootstrap_servers
        self.namespace = identity.namespace
        self.sender = identity.sender
        self.context = identity.context
        self._topics = Topics(
            topic_prefix,
            topics,
            TopicPolicy(
                create=create_topics,
                partitions=partitions,
                replication_factor=replication_factor,
                request_timeout=request_timeout,
            ),
            bootstrap=connection.bootstrap_servers,
        )
        self._delivery_timeout = delivery_timeout
        self._request_timeout = request_timeout
        self._max_batch = max_batch
        self._poll_timeout = poll_timeout
        self._retry_backoff = (retry_backoff, retry_backoff_max)
        self._stop_timeout = stop_timeout
        common = connection.client_config()
        self._producer_config = fixed(
            {
                **common,
                "delivery.timeout.ms": int(delivery_timeout * 1000),
                **(producer_properties or {}),
            },
            PRODUCER_FIXED,
        )
        self._consumer_config = fixed(
            {
                **common,
                "auto.offset.reset": "earliest",  # only for an offset out of range
                **(consumer_properties or {}),
            },
            CONSUMER_FIXED,
        )
        self._admin_config = common
        self._lock = threading.Lock()
        self._producer: Any = None
        self._admin: Any = None
        self._closed = False
        self._listeners: dict[str, ListenerThread] = {}

    @classmethod
    def from_config(
        cls, config: ConnectorConfig, namespace: str | None = None, **options: Any
    ) -> NotificationClient:
        """A client for the connector that ``config`` describes (``load_config(path)``).

        It reaches the same cluster with the same client settings (SASL, TLS, properties),
        writes each namespace to the (first) topic the connector reads for it, so what it
        sends is what the connector's rules see, and creates missing topics as the file's
        ``topic_creation`` says. ``options`` are the constructor's and win over the file.

        The client's namespace (where :meth:`send_event` writes unless told otherwise) is
        ``namespace``, else ``KEC_NAMESPACE``, else the file's only namespace. A file with
        several namespaces and neither of the first two is refused with a
        :class:`~kec.errors.ConfigError` naming them, rather than a guess.
        """
        topics = {
            ns: spec.topics_of(ns, config.topic_prefix)[0] for ns, spec in config.namespaces.items()
        }
        environ = options.get("environ")
        chosen = namespace or (os.environ if environ is None else environ).get(ENV_NAMESPACE)
        if not chosen:
            declared = sorted(config.namespaces)
            if len(declared) != 1:
                raise ConfigError(
                    f"the config has {len(declared)} namespaces ({', '.join(declared)}): "
                    "name the client's namespace, from_config(config, namespace=...), "
                    f"or set {ENV_NAMESPACE}"
                )
            chosen = declared[0]
        creation = config.topic_creation
        options.setdefault("create_topics", creation.enabled)
        options.setdefault("partitions", creation.partitions)
        options.setdefault("replication_factor", creation.replication_factor)
        return cls(
            None,
            chosen,
            connection=config.kafka.connection(),
            topic_prefix=config.topic_prefix,
            topics={**topics, **options.pop("topics", {})},
            **options,
        )

    @property
    def topic_prefix(self) -> str:
        """The prefix of namespaces' topics (``"events."`` unless configured)."""
        return self._topics.topic_prefix

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> NotificationClient:
        """Create the producer and admin client (librdkafka connects in the background)."""
        with self._lock:
            self._check_open()
            if self._producer is None:
                self._producer = kafka_new(Producer, self._producer_config)
                self._admin = kafka_new(AdminClient, self._admin_config)
        return self

    def close(self) -> None:
        """Unregister every listener, deliver what is queued (bounded), release clients."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ids = list(self._listeners)
        for listener_id in ids:
            self.unregister_listener(listener_id)
        producer, self._producer, self._admin = self._producer, None, None
        if producer is not None:
            left = close_producer(producer, self._delivery_timeout)
            if left:
                log.warning("notification client closed with %d events undelivered", left)

    def __enter__(self) -> NotificationClient:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- topics ----------------------------------------------------------------------

    def topic_for(self, namespace: str) -> str:
        """The topic holding ``namespace``'s events."""
        return self._topics.topic_for(namespace)

    def ensure_topic(self, namespace: str | None = None) -> str:
        """Make sure the namespace's topic exists (creating it if allowed); return its name."""
        topic = self.topic_for(namespace or self.namespace)
        self._partitions_of(topic)
        return topic

    def _partitions_of(self, topic: str) -> list[int]:
        return self._topics.partitions_of(self._clients()[1], topic)

    # -- sending ---------------------------------------------------------------------

    def send_event(
        self,
        key: str,
        value: str | bytes,
        *,
        namespace: str | None = None,
        sender: str | None = None,
        context: str | None = None,
        event_type: str | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Write one event and return it with its topic, partition and offset.

        Blocks until the broker acknowledged it; raises ``KafkaClientError`` (or
        ``BrokerUnavailable``) when that does not happen within ``delivery_timeout``, and
        ``ValueError`` for an event the pipeline would only send to the dead letters (a
        key, context or id over 1,024 bytes or holding a NUL, an id shaped like
        ``topic/partition/offset``).
        """
        if not isinstance(key, str) or not key:
            raise ValueError("an event key must be a non-empty string")
        if not isinstance(value, str | bytes):
            raise TypeError(f"an event value is str or bytes, not {type(value).__name__}")
        event = Event(
            key=key,
            value=value,
            namespace=namespace or self.namespace,
            sender=sender or self.sender,
            context=context or self.context,
            event_type=event_type,
            event_id=event_id or "",
        )
        try:  # what the pipeline would only dead-letter is refused here, before Kafka
            key_bytes, value_bytes, headers = check_outgoing(event)
        except DecodeError as exc:
            raise ValueError(f"event refused: {exc}") from exc
        topic = self.topic_for(event.namespace)
        producer = self._clients()[0]
        self._partitions_of(topic)
        outcome: list[tuple[Any, Any]] = []

        def delivered(err: Any, msg: Any) -> None:
            outcome.append((err, msg))

        deadline = time.monotonic() + self._delivery_timeout + 5  # librdkafka reports first
        while True:
            try:
                producer.produce(
                    topic,
                    key=key_bytes,
                    value=value_bytes,
                    headers=headers,
                    timestamp=event.create_time,
                    on_delivery=delivered,
                )
                break
            except BufferError:  # local queue full: serve reports to make room
                if time.monotonic() >= deadline:
                    raise KafkaClientError(
                        f"producer queue full for {self._delivery_timeout}s"
                    ) from None
                producer.poll(0.1)
            except KafkaException as exc:
                raise KafkaClientError(
                    f"producing event {event.event_id} to {topic}: {exc}"
                ) from exc
        while not outcome:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnavailable(
                    f"no acknowledgement for event {event.event_id} on {topic}; it may still "
                    "be written: resend with the same event_id so consumers deduplicate it"
                )
            producer.poll(min(remaining, 0.1))
        err, msg = outcome[0]
        if err is not None:
            raise delivery_error(f"event {event.event_id} not written to {topic}", err)
        return event.with_coordinates(msg.topic(), msg.partition(), msg.offset())

    # -- listening -------------------------------------------------------------------

    def register_listener(
        self,
        listener_processor: ListenerProcessor,
        event_keys: Iterable[str],
        namespace: str | None = None,
        *,
        begin_offset: int | Mapping[int, int] | None = None,
        begin_time: int | None = None,
        group_id: str | None = None,
    ) -> str:
        """Start a thread calling ``listener_processor.process`` with matching events.

        Returns the listener id for :meth:`unregister_listener`. Where it starts and what
        it receives are described in the package docstring.
        """
        if begin_offset is not None and begin_time is not None:
            raise ValueError("give begin_offset or begin_time, not both")
        keys = KeyFilter(event_keys)
        ns = namespace or self.namespace
        topic = self.topic_for(ns)
        group = group_id or derived_group(ns, listener_processor, keys)
        with self._lock:
            self._check_registrable(group)
        offsets = begin_offset.values() if isinstance(begin_offset, Mapping) else [begin_offset]
        if any(o is not None and o < 0 for o in offsets) or (begin_time or 0) < 0:
            raise ValueError("begin_offset and begin_time must not be negative")
        partitions = self._partitions_of(topic)
        if isinstance(begin_offset, Mapping) and not set(begin_offset) <= set(partitions):
            raise ValueError(f"begin_offset names partitions that {topic!r} does not have")
        consumer = kafka_new(Consumer, {**self._consumer_config, "group.id": group})
        try:
            starts = start_offsets(
                consumer,
                topic,
                partitions,
                begin_offset,
                begin_time,
                request_timeout=self._request_timeout,
                attempt_timeout=min(ATTEMPT_TIMEOUT, self._request_timeout),
            )
            consumer.assign([kafka_tp((topic, p), offset) for p, offset in starts.items()])
        except BaseException:
            consumer.close()
            raise
        listener = ListenerThread(
            uuid.uuid4().hex,
            listener_processor,
            keys,
            namespace=ns,
            topic=topic,
            group_id=group,
            consumer=consumer,
            max_batch=self._max_batch,
            poll_timeout=self._poll_timeout,
            backoff=self._retry_backoff,
            shared_topic=self._topics.shared(topic),
        )
        with self._lock:
            try:
                self._check_registrable(group)  # again: the lock was released meanwhile
            except BaseException:
                consumer.close()
                raise
            self._listeners[listener.listener_id] = listener
        listener.thread.start()
        log.info("listener %s on %s (group %s) from %s", listener.listener_id, topic, group, starts)
        return listener.listener_id

    def unregister_listener(self, listener_id: str) -> None:
        """Stop the listener, wait for its thread (bounded) and let it close its consumer."""
        with self._lock:
            listener = self._listeners.pop(listener_id, None)
        if listener is None:
            raise ValueError(f"no listener {listener_id!r} is registered")
        listener.stop.set()
        if threading.current_thread() is listener.thread:
            return  # called from its own process(): the thread ends after it returns
        listener.thread.join(self._stop_timeout)
        if listener.thread.is_alive():
            log.error(
                "listener %s did not stop within %.0fs (its processor is still running); "
                "it will close its consumer when the processor returns",
                listener_id,
                self._stop_timeout,
            )

    def listener_group(self, listener_id: str) -> str:
        """The consumer group a registered listener commits its offsets to."""
        with self._lock:
            listener = self._listeners.get(listener_id)
        if listener is None:
            raise ValueError(f"no listener {listener_id!r} is registered")
        return listener.group_id

    # -- helpers ---------------------------------------------------------------------

    def _clients(self) -> tuple[Any, Any]:
        if self._producer is None:
            self.open()
        with self._lock:
            self._check_open()
            return self._producer, self._admin

    def _check_registrable(self, group: str) -> None:
        self._check_open()
        if any(other.group_id == group for other in self._listeners.values()):
            raise ValueError(
                f"a listener of group {group!r} is already registered: pass another group_id"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the notification client is closed")
