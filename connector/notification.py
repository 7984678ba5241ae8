"""AIFlow-style notification client on Kafka: ``send_event`` and listeners (design §3).

:class:`NotificationClient` plays AIFlow's ``AIFlowNotificationClient``: tasks send events
with :meth:`~NotificationClient.send_event` and listen to them with
:meth:`~NotificationClient.register_listener` and a :class:`ListenerProcessor`.

Topics. Namespace ``N`` lives in topic ``{topic_prefix}N`` (prefix ``"events."``), or in
``topics[N]`` when the constructor's ``topics`` mapping names one. A missing topic is
created on first use (``partitions``, default 3; ``replication_factor``, default the
broker's) because brokers commonly run with ``auto.create.topics.enable=false``; with
``create_topics=False`` a missing topic raises :class:`~connector.errors.KafkaClientError`
naming it instead. :meth:`~NotificationClient.ensure_topic` does the same up front.

Inside a task, the client reads these environment variables when it is constructed
(explicit arguments, to the constructor or to ``send_event``, win):

``KEC_NAMESPACE``  the namespace when the constructor gets none (else ``"default"``);
``KEC_SENDER``     the sender of every event (the task's name);
``KEC_CONTEXT``    the context of every event (the workflow execution id), which task
                   rules use to act only on tasks of the same execution.

Sending. One idempotent producer (``enable.idempotence=true``, ``acks=all``) per client.
``send_event`` returns once the broker acknowledged the record, with the Event's topic,
partition and offset; no acknowledgement within ``delivery_timeout`` raises
``KafkaClientError``. The record may still have been written then: resending with the
same ``event_id`` lets every consumer deduplicate it.

Listening. ``register_listener`` resolves where to start before it returns, then a thread
of its own reads the namespace's topic with its own consumer (partitions *assigned*, not
subscribed: no rebalance wait; one live listener per group id) and hands
``process(events)`` the batches of events whose key matches (exact or glob) and whose
``namespace`` header is the listener's, so two namespaces sharing a topic stay apart. Per
batch, in this order:

1. ``consume`` up to ``max_batch`` records; undecodable records are logged with their
   ``topic[partition]@offset`` and skipped;
2. ``process(events)``; when it raises, the error is logged and the *same* batch is
   retried with exponential backoff (each wait at most ``retry_backoff_max`` seconds) until
   it succeeds or the listener is unregistered — at-least-once to the processor;
3. commit the batch's next offsets to the listener's group, synchronously. A failed commit
   is retried with the next batch; a batch not yet processed is never committed.

Start position, first match wins: ``begin_time`` (ms epoch: the first record at or after
it), ``begin_offset`` (one offset for every partition, or a ``{partition: offset}``
mapping; partitions left out start as below), the group's committed offset, else the end
of the partition as of registration — so every event sent after ``register_listener``
returned is seen. Offsets are clamped into the partition's current range and committed
to the group at once, so a listener stopped before it read anything resumes there.
Without ``group_id`` the group is derived from the namespace, the processor's class and
the keys, so the same listener registered again (even in another process) resumes where
it stopped.

``unregister_listener`` stops the thread and waits up to ``stop_timeout`` for it; the
thread closes its consumer. A processor still busy after that is logged and left to
finish in its (daemon) thread; its batch is committed only if it returns successfully.
:meth:`~NotificationClient.listener_group` tells which group a listener commits to.

Limits: partitions added to a topic after registration are read only by listeners
registered later; "one live listener per group" is checked within one client, not across
processes (two would both read everything and commit over each other).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka import TopicPartition as TP
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from connector.errors import BrokerUnavailable, ConfigError, DecodeError, KafkaClientError
from listeners.codec import event_from_message, record_headers, record_value
from listeners.event import DEFAULT_NAMESPACE, Event

__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "ENV_CONTEXT",
    "ENV_NAMESPACE",
    "ENV_SENDER",
    "ListenerProcessor",
    "NotificationClient",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

ENV_NAMESPACE = "KEC_NAMESPACE"
ENV_SENDER = "KEC_SENDER"
ENV_CONTEXT = "KEC_CONTEXT"
DEFAULT_TOPIC_PREFIX = "events."

_ATTEMPT_TIMEOUT = 10.0  # seconds for one admin/offset request inside a retried call
_UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN}
_UNREACHABLE_DELIVERY = _UNREACHABLE | {KafkaError._MSG_TIMED_OUT}
# Transient although librdkafka does not always flag them retriable (e.g. leadership and
# metadata still settling right after a topic was created).
_TRANSIENT = _UNREACHABLE | {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._WAIT_COORD,
}
# Settings the guarantees rest on: a property may repeat them but not change them.
_PRODUCER_FIXED = {"enable.idempotence": "true", "acks": "all"}
_CONSUMER_FIXED = {"enable.auto.commit": "false", "enable.auto.offset.store": "false"}


class ListenerProcessor(ABC):
    """What a listener does with the events it receives (AIFlow's ``ListenerProcessor``)."""

    @abstractmethod
    def process(self, events: list[Event]) -> None:
        """Handle one batch; raising makes the listener retry the same batch later."""


class NotificationClient:
    """Sends events to namespaces and runs listeners on them; see the module docstring.

    No I/O happens in the constructor: the producer is made by :meth:`open` (or the first
    call that needs it). :meth:`close` unregisters every listener and flushes the producer;
    it is idempotent, and the client is a context manager.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        namespace: str | None = None,
        *,
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
        env = os.environ if environ is None else environ
        self.bootstrap_servers = bootstrap_servers
        self.namespace = namespace or env.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE
        self.sender = sender or env.get(ENV_SENDER) or None
        self.context = context or env.get(ENV_CONTEXT) or None
        self.topic_prefix = topic_prefix
        self._topics = dict(topics or {})
        self._create_topics = create_topics
        self._partitions = partitions
        self._replication_factor = replication_factor
        self._delivery_timeout = delivery_timeout
        self._request_timeout = request_timeout
        self._max_batch = max_batch
        self._poll_timeout = poll_timeout
        self._retry_backoff = (retry_backoff, retry_backoff_max)
        self._stop_timeout = stop_timeout
        common = {**(properties or {}), "bootstrap.servers": bootstrap_servers}
        self._producer_config = _fixed(
            {
                **common,
                "delivery.timeout.ms": int(delivery_timeout * 1000),
                **(producer_properties or {}),
            },
            _PRODUCER_FIXED,
        )
        self._consumer_config = _fixed(
            {
                **common,
                "auto.offset.reset": "earliest",  # only for an offset out of range
                "isolation.level": "read_committed",
                **(consumer_properties or {}),
            },
            _CONSUMER_FIXED,
        )
        self._admin_config = common
        self._lock = threading.Lock()
        self._producer: Any = None
        self._admin: Any = None
        self._closed = False
        self._known: dict[str, list[int]] = {}  # topic -> partition ids, once seen
        self._listeners: dict[str, _Listener] = {}

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> NotificationClient:
        """Create the producer and admin client (librdkafka connects in the background)."""
        with self._lock:
            self._check_open()
            if self._producer is None:
                self._producer = _kafka_new(Producer, self._producer_config)
                self._admin = _kafka_new(AdminClient, self._admin_config)
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
            left = producer.flush(self._delivery_timeout)
            if left:
                log.warning("notification client closed with %d events undelivered", left)
                producer.purge()
            producer.close()

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
        if not namespace:
            raise ValueError("a namespace must be a non-empty string")
        return self._topics.get(namespace) or f"{self.topic_prefix}{namespace}"

    def ensure_topic(self, namespace: str | None = None) -> str:
        """Make sure the namespace's topic exists (creating it if allowed); return its name."""
        topic = self.topic_for(namespace or self.namespace)
        self._partitions_of(topic)
        return topic

    def _partitions_of(self, topic: str) -> list[int]:
        known = self._known.get(topic)
        if known is not None:
            return known
        admin = self._clients()[1]
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
                if _code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    return None  # retriable for Kafka, but here it is the answer
                raise
            return sorted(p.id for p in description.partitions)

        return _retried(f"describing topic {topic!r}", describe, self._request_timeout)

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
                if _code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                    raise
            log.info("created topic %s with %d partitions", topic, self._partitions)

        _retried(f"creating topic {topic!r}", create, self._request_timeout)

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
        ``BrokerUnavailable``) when that does not happen within ``delivery_timeout``.
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
                    key=key.encode(),
                    value=record_value(event),
                    headers=record_headers(event),
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
            cls = BrokerUnavailable if err.code() in _UNREACHABLE_DELIVERY else KafkaClientError
            raise cls(f"event {event.event_id} not written to {topic}: {err.str()}")
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
        it receives are described in the module docstring.
        """
        if begin_offset is not None and begin_time is not None:
            raise ValueError("give begin_offset or begin_time, not both")
        keys = _KeyFilter(event_keys)
        ns = namespace or self.namespace
        topic = self.topic_for(ns)
        group = group_id or _derived_group(ns, listener_processor, keys)
        with self._lock:
            self._check_registrable(group)
        offsets = begin_offset.values() if isinstance(begin_offset, Mapping) else [begin_offset]
        if any(o is not None and o < 0 for o in offsets) or (begin_time or 0) < 0:
            raise ValueError("begin_offset and begin_time must not be negative")
        partitions = self._partitions_of(topic)
        if isinstance(begin_offset, Mapping) and not set(begin_offset) <= set(partitions):
            raise ValueError(f"begin_offset names partitions that {topic!r} does not have")
        consumer = _kafka_new(Consumer, {**self._consumer_config, "group.id": group})
        try:
            starts = self._start_offsets(consumer, topic, partitions, begin_offset, begin_time)
            consumer.assign([TP(topic, p, offset) for p, offset in starts.items()])
        except BaseException:
            consumer.close()
            raise
        listener = _Listener(
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

    def _start_offsets(
        self,
        consumer: Any,
        topic: str,
        partitions: list[int],
        begin_offset: int | Mapping[int, int] | None,
        begin_time: int | None,
    ) -> dict[int, int]:
        timeout = self._attempt_timeout
        tps = [TP(topic, p) for p in partitions]
        at_time: dict[int, int] = {}
        if begin_time is not None:
            wanted = [TP(topic, p, begin_time) for p in partitions]
            found = self._call(
                "finding offsets by time", consumer.offsets_for_times, wanted, timeout
            )
            at_time = {tp.partition: tp.offset for tp in _checked(found)}
        committed = {
            tp.partition: tp.offset
            for tp in _checked(
                self._call("reading committed offsets", consumer.committed, tps, timeout)
            )
        }
        starts: dict[int, int] = {}
        for p in partitions:
            low, high = self._call(
                f"reading the range of {topic}[{p}]", _watermarks, consumer, TP(topic, p), timeout
            )
            if begin_time is not None:
                start = at_time[p] if at_time[p] >= 0 else high  # -1: nothing that late yet
            elif isinstance(begin_offset, int):
                start = begin_offset
            elif begin_offset is not None and p in begin_offset:
                start = begin_offset[p]
            else:
                start = committed[p] if committed[p] >= 0 else high
            starts[p] = min(max(start, low), high)
        # Pin the start in the group, so a listener unregistered before a partition had
        # any record resumes there rather than at a later end (losing what came between).
        moved = [TP(topic, p, o) for p, o in starts.items() if o != committed[p]]
        if moved:

            def commit() -> list[Any]:
                return _checked(consumer.commit(offsets=moved, asynchronous=False))

            _retried("committing the start offsets", commit, self._request_timeout)
        return starts

    # -- helpers ---------------------------------------------------------------------

    @property
    def _attempt_timeout(self) -> float:
        return min(_ATTEMPT_TIMEOUT, self._request_timeout)

    def _call(self, what: str, call: Callable[..., T], *args: Any) -> T:
        return _retried(what, lambda: call(*args), self._request_timeout)

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


class _Listener:
    """One registered listener: a thread that owns its consumer (see the module docstring)."""

    def __init__(
        self,
        listener_id: str,
        processor: ListenerProcessor,
        keys: _KeyFilter,
        *,
        namespace: str,
        topic: str,
        group_id: str,
        consumer: Any,
        max_batch: int,
        poll_timeout: float,
        backoff: tuple[float, float],
    ) -> None:
        self.listener_id = listener_id
        self.group_id = group_id
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"kec-listener-{listener_id}", daemon=True
        )
        self._processor = processor
        self._keys = keys
        self._namespace = namespace
        self._topic = topic
        self._consumer = consumer
        self._max_batch = max_batch
        self._poll_timeout = poll_timeout
        self._backoff = backoff  # (first wait, longest wait) between process() attempts
        self._pending: dict[int, int] = {}  # partition -> next offset, processed, uncommitted

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = self._consume()
                if batch is None:
                    break
                events, offsets = batch
                if events and (self.stop.is_set() or not self._deliver(events)):
                    break  # unregistered while retrying: this batch stays uncommitted
                self._pending.update(offsets)
                self._commit()
        except Exception:
            log.exception(
                "listener %s on %s stopped by an unexpected error", self.listener_id, self._topic
            )
        finally:
            self._commit()
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("listener %s: closing its consumer failed: %s", self.listener_id, exc)

    def _consume(self) -> tuple[list[Event], dict[int, int]] | None:
        """Steps 1: the next batch of matching events and the offsets it moves past."""
        try:
            messages = self._consumer.consume(self._max_batch, self._poll_timeout)
        except KafkaException as exc:
            log.error("listener %s: consumer failed, stopping: %s", self.listener_id, exc)
            return None
        events: list[Event] = []
        offsets: dict[int, int] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    log.error(
                        "listener %s: fatal consumer error: %s", self.listener_id, error.str()
                    )
                    return None
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("listener %s: %s", self.listener_id, error.str())
                continue
            offsets[msg.partition()] = msg.offset() + 1
            try:
                event = event_from_message(msg, self._namespace)
            except DecodeError as exc:
                log.warning(
                    "listener %s: skipping undecodable record %s[%d]@%d: %s",
                    self.listener_id,
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    exc,
                )
                continue
            if event.namespace == self._namespace and self._keys.matches(event.key):
                events.append(event)
        return events, offsets

    def _deliver(self, events: list[Event]) -> bool:
        """Step 2: ``process`` until it succeeds (True) or the listener is stopped (False)."""

        def failed(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.error(
                "listener %s: %s.process failed on %d events (attempt %d), same batch again "
                "in %.2fs",
                self.listener_id,
                type(self._processor).__qualname__,
                len(events),
                state.attempt_number,
                state.upcoming_sleep,
                exc_info=exc,
            )

        def pause(seconds: float) -> None:
            if self.stop.wait(seconds):  # unregistered: no further attempt
                raise _Stopped

        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=self._backoff[0], max=self._backoff[1]),
            stop=stop_when_event_set(self.stop),
            sleep=pause,
            before_sleep=failed,
        )
        try:
            retrying(lambda: self._processor.process(list(events)))
        except (RetryError, _Stopped):
            log.error(
                "listener %s: unregistered while %d events were failing; they are not "
                "committed and go to the group's next listener",
                self.listener_id,
                len(events),
            )
            return False
        return True

    def _commit(self) -> None:
        """Step 3: commit processed offsets; keep what failed for the next attempt."""
        if not self._pending:
            return
        offsets = [TP(self._topic, p, o) for p, o in sorted(self._pending.items())]
        try:
            done = self._consumer.commit(offsets=offsets, asynchronous=False)
        except (KafkaException, RuntimeError) as exc:
            log.warning("listener %s: commit failed, retried later: %s", self.listener_id, exc)
            return
        for tp in done or ():
            if tp.error is None and self._pending.get(tp.partition) == tp.offset:
                del self._pending[tp.partition]


class _Stopped(Exception):
    """The listener was unregistered during a retry backoff."""


class _KeyFilter:
    """Event keys to listen to: exact keys, or glob patterns (``*``, ``?``, ``[...]``)."""

    def __init__(self, event_keys: Iterable[str]) -> None:
        keys = [event_keys] if isinstance(event_keys, str) else list(event_keys)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError("event_keys must name at least one non-empty key")
        self.keys = tuple(sorted(set(keys)))
        self._exact = {k for k in keys if not _is_glob(k)}
        self._globs = [k for k in keys if _is_glob(k)]

    def matches(self, key: str) -> bool:
        return key in self._exact or any(fnmatch.fnmatchcase(key, g) for g in self._globs)


def _is_glob(key: str) -> bool:
    return any(c in key for c in "*?[")


def _derived_group(namespace: str, processor: ListenerProcessor, keys: _KeyFilter) -> str:
    kind = f"{type(processor).__module__}.{type(processor).__qualname__}"
    digest = hashlib.sha256("\0".join((kind, *keys.keys)).encode()).hexdigest()[:16]
    return f"kec-listener.{namespace}.{digest}"


def _fixed(config: dict[str, Any], fixed: Mapping[str, str]) -> dict[str, Any]:
    for name, value in fixed.items():
        given = config.get(name)
        allowed = {value, "-1"} if value == "all" else {value}  # acks=-1 means acks=all
        if given is not None and str(given).lower() not in allowed:
            raise ConfigError(f"property {name}={given!r} is not allowed: the client needs {value}")
    return {**config, **fixed}


def _kafka_new(kind: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    try:
        return kind(config)
    except KafkaException as exc:
        raise ConfigError(f"librdkafka refused the client properties: {exc}") from exc


def _watermarks(consumer: Any, tp: Any, timeout: float) -> tuple[int, int]:
    found = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
    if found is None:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "watermark request timed out"))
    low, high = found
    return int(low), int(high)


def _checked(partitions: list[Any]) -> list[Any]:
    for tp in partitions:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return partitions


def _code(exc: BaseException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT)


def _retried(what: str, call: Callable[[], T], within: float) -> T:
    """``call()``, retrying transient Kafka errors for ``within`` seconds; errors wrapped."""
    retrying = Retrying(
        retry=retry_if_exception(_transient),
        stop=stop_after_delay(within),
        wait=wait_exponential(multiplier=0.05, max=1.0),
        reraise=True,
    )
    try:
        return retrying(call)
    except TimeoutError as exc:
        raise BrokerUnavailable(f"{what}: no answer within {within:.0f}s") from exc
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError):
            cls = BrokerUnavailable if error.code() in _UNREACHABLE else KafkaClientError
            raise cls(f"{what}: {error.str()}") from exc
        raise KafkaClientError(f"{what}: {exc}") from exc
