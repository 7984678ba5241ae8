"""``QueueEventListener``: the Kafka listener of Ray Workflows, done right (docs/architecture.md).

One event goes through Ray's checkpoint-then-commit protocol, in this order:

1. ``poll_for_event(topic)``: a new consumer of the configured group is *assigned* every
   partition of ``topic`` at the group's committed offsets, the first record it returns
   becomes the :class:`~kec.event.Event` (with its topic, partition and offset), and
   the consumer is closed. Nothing is committed, so the record stays "next" for the group.
2. The caller (``wait_for_event``) checkpoints the event durably.
3. ``event_checkpointed(event)``: a new consumer of the same group commits
   ``offset + 1`` for the event's partition, synchronously — unless the group's committed
   offset is already there or beyond, so a repeated or stale call never moves it back.

A crash before 3 leaves the offset uncommitted: the next poll returns the same record
(same ``event_id``) and the store's dedup by event id makes it count once. Because the
event carries its coordinates and the group comes from configuration, steps 1 and 3 may
run on different instances and in different processes, as Ray runs them.

Assign, not subscribe. Subscribing joins the consumer group: every poll would cost a
rebalance (the broker's ``group.initial.rebalance.delay.ms``, 3 s by default, and more
while the previous consumer's leave is still pending) and would disturb any other member.
``assign()`` at the offsets read by ``committed()`` (partitions the group never committed
are looked up in the same round, see :func:`_start_positions`) costs a few requests:
about 20 ms per poll or commit on a local broker, with the ``reconnect.backoff.ms``
default explained in :meth:`KafkaSettings.consumer_config`. The price: the group has no
members, so give the listener a group of its own — Kafka rejects these member-less
commits (``UNKNOWN_MEMBER_ID``) in a group that has subscribed members.

A topic that does not exist yet is waited for like any event (the first event of a
namespace may create it), with a warning; ``timeout`` bounds that wait too.

Configuration (no constructor arguments; resolved at every call, first match wins):

a. :func:`configure` (``bootstrap_servers=``, ``group_id=``, librdkafka properties) —
   this process only;
b. ``KEC_CONFIG`` names the connector's YAML file (the one ``event-connector run -c``
   reads); its ``kafka:`` section gives the servers and client settings, and
   ``listener_group_id`` the group (default ``<group_id>-listener``: not the
   connector's own group, see below). The file's format is the connector's, so this
   listener does not read it: ``connector.queue_listener.QueueEventListener`` is the
   same listener given the file's reader (passed to :func:`resolve_settings`). Here a
   set ``KEC_CONFIG`` is an error that says so, never skipped;
c. ``KAFKA_BOOTSTRAP_SERVERS`` and ``KEC_GROUP_ID``.

(b) and (c) reach other processes through their environment (for Ray workers, e.g. the
``runtime_env``'s ``env_vars``). Nothing found raises
:class:`~kec.errors.ConfigError` saying what to set. A subclass may resolve its settings
otherwise by overriding :meth:`QueueEventListener.settings`. The listener always sets
``enable.auto.commit=false``, ``enable.auto.offset.store=false`` and
``isolation.level=read_committed``; properties that contradict them are refused.
``auto.offset.reset`` (default ``earliest``) applies while the group has no committed
offset for a partition: with ``latest``, records produced between two polls are skipped.

librdkafka's blocking calls run in a thread of their own per call, never on the event
loop, and not in the default executor, where long polls could starve other work.
Cancelling a poll stops its thread within :data:`POLL_SLICE` seconds; the consumer is
closed before the cancellation completes.

A record that cannot be decoded (*poison*: no key, not UTF-8, declared JSON that is not,
...) is not an event to return. With a dead-letter topic (``dead_letter_topic=`` of
:func:`configure`, the file's ``dead_letter_topic``, or ``KEC_DEAD_LETTER_TOPIC``) the
poll copies it there as the pipeline does (:mod:`kec.deadletter`: the record as it came
plus ``error``, ``source-topic``, ``source-partition``, ``source-offset`` headers), waits
for the broker's acknowledgement, commits the offset past it (never backwards), logs a
warning and goes on to the next record: it never reaches the store, so nothing else
would ever move the group past it. A copy that is not acknowledged raises
:class:`~kec.errors.KafkaClientError` and commits nothing (the next poll tries again);
two polls racing on one poison record may both copy it. Without a dead-letter topic the
poll raises :class:`~kec.errors.DecodeError` (naming topic, partition and offset) every
time it meets the record, until an operator moves the group's offset past it.

Limits: one record per poll (batching is the pipeline's job); "never backwards" is a
read-then-commit, serialized within a process but not across processes (Kafka has no
conditional commit): two processes committing the same partition at once can leave the
lower offset, which only causes a redelivery that the store deduplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from kec import kafka
from kec.codec import event_from_message
from kec.deadletter import DeadLetters, Poison
from kec.errors import ConfigError, DecodeError, KafkaClientError
from kec.event import DEFAULT_NAMESPACE, Event
from kec.kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_STORED,
    Connection,
    Consumer,
    KafkaException,
    KafkaTopicPartition,
    Message,
    is_eof,
    kafka_tp,
)
from listeners.base import EventListener

__all__ = [
    "ENV_BOOTSTRAP",
    "ENV_CONFIG",
    "ENV_DEAD_LETTER_TOPIC",
    "ENV_GROUP",
    "ConfigReader",
    "KafkaSettings",
    "QueueEventListener",
    "configure",
    "reset_configuration",
    "resolve_settings",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

ENV_CONFIG = "KEC_CONFIG"
ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
ENV_GROUP = "KEC_GROUP_ID"
ENV_DEAD_LETTER_TOPIC = "KEC_DEAD_LETTER_TOPIC"

POLL_SLICE = 0.2  # seconds per consumer.poll(): how soon a cancelled poll notices
CALL_TIMEOUT = 10.0  # seconds for one metadata / offset request
RETRY_FOR = 30.0  # seconds a transient coordinator or broker error is retried
TOPIC_RECHECK = 0.5  # seconds between looks for a topic that does not exist yet
DLQ_TIMEOUT = 30.0  # seconds for the broker to acknowledge a poison record's copy

# ListOffsets' special timestamps: the log start, the end (the LSO under read_committed).
_LIST_OFFSETS_AT = {OFFSET_BEGINNING: -2, OFFSET_END: -1}
_RESET_TO: dict[str, int] = {
    **dict.fromkeys(("earliest", "smallest", "beginning"), OFFSET_BEGINNING),
    **dict.fromkeys(("latest", "largest", "end"), OFFSET_END),
}


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where the listener's consumer group lives: the cluster's connection and the group;
    ``source`` says where this came from; ``dead_letter_topic`` is where poison records
    go (None: a poison record raises :class:`~kec.errors.DecodeError`)."""

    connection: Connection
    group_id: str
    source: str = "configure()"
    dead_letter_topic: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.connection, Connection):
            raise ConfigError(f"{self.source}: connection must be a kec.kafka.Connection")
        if not isinstance(self.group_id, str) or not self.group_id.strip():
            raise ConfigError(f"{self.source}: group_id must be a non-empty string")
        if self.dead_letter_topic is not None and (
            not isinstance(self.dead_letter_topic, str) or not self.dead_letter_topic.strip()
        ):
            raise ConfigError(f"{self.source}: dead_letter_topic must be a non-empty string")
        if "group.id" in self.properties:
            raise ConfigError(f"{self.source}: set group_id, not property 'group.id'")
        try:
            kafka.fixed(self.properties, kafka.CONSUMER_FIXED)
        except ConfigError as exc:
            raise ConfigError(
                f"{self.source}: {exc}; anything else would break exactly-once"
            ) from exc

    @property
    def bootstrap_servers(self) -> str:
        return self.connection.bootstrap_servers

    @property
    def properties(self) -> Mapping[str, Any]:
        """The connection's librdkafka properties (``bootstrap.servers`` aside)."""
        return self.connection.properties

    def consumer_config(self) -> dict[str, Any]:
        """The consumer's settings, :data:`kec.kafka.CONSUMER_FIXED` applied."""
        return kafka.fixed(
            {
                "auto.offset.reset": "earliest",
                # Each call makes a new consumer, and librdkafka holds its second connection
                # back for about half of this (default 100 ms): 20 ms makes a poll or a commit
                # ~3x faster on a near broker; reconnects still back off up to the max.
                "reconnect.backoff.ms": 20,
                **self.connection.client_config(),
                "group.id": self.group_id,
            },
            kafka.CONSUMER_FIXED,
        )

    def producer_config(self) -> dict[str, Any]:
        """The dead-letter producer's settings (idempotent, ``acks=all`` when built)."""
        timeout_ms = int(DLQ_TIMEOUT * 1000)
        return {"message.timeout.ms": timeout_ms, **self.connection.client_config()}

    def start_offset(self) -> int:
        """Where to start a partition that the group has not committed yet."""
        reset = str(self.properties.get("auto.offset.reset", "earliest")).lower()
        return _RESET_TO.get(reset, OFFSET_STORED)  # OFFSET_STORED: librdkafka decides


_configured: KafkaSettings | None = None


def configure(
    *,
    bootstrap_servers: str,
    group_id: str,
    dead_letter_topic: str | None = None,
    **properties: Any,
) -> KafkaSettings:
    """Configure the Kafka listeners of this process (resolution step a).

    ``properties`` are librdkafka's names, e.g. ``**{"security.protocol": "SSL"}``;
    ``dead_letter_topic`` is where records that are not events go (module docstring).
    """
    global _configured
    connection = _connection(bootstrap_servers, properties, "configure()")
    _configured = KafkaSettings(connection, group_id, dead_letter_topic=dead_letter_topic)
    return _configured


def _connection(servers: str, properties: Mapping[str, Any], source: str) -> Connection:
    if not isinstance(servers, str) or not servers.strip():
        raise ConfigError(f"{source}: bootstrap_servers must be a non-empty string")
    try:
        return Connection(servers, properties)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def reset_configuration() -> None:
    """Forget :func:`configure`; the environment is consulted again."""
    global _configured
    _configured = None


ConfigReader = Callable[[Path], KafkaSettings]
"""Reads the listener's settings from the file ``KEC_CONFIG`` names (resolution step b)."""

# Where the reader of KEC_CONFIG's file lives: the connector owns that file's format.
_FILE_LISTENER = "connector.queue_listener.QueueEventListener"


def resolve_settings(read_config: ConfigReader | None = None) -> KafkaSettings:
    """The settings to use now: configure(), else KEC_CONFIG, else the two variables.

    ``read_config`` reads the file ``KEC_CONFIG`` names; without one, a set ``KEC_CONFIG``
    is a :class:`~kec.errors.ConfigError` rather than skipped.
    """
    if _configured is not None:
        return _configured
    if config_file := os.environ.get(ENV_CONFIG):
        if read_config is None:
            raise ConfigError(
                f"{ENV_CONFIG}={config_file} names the connector's YAML file, which this "
                f"listener does not read: use {_FILE_LISTENER} (the same listener, reading "
                f"it), or unset {ENV_CONFIG} and call configure() or set {ENV_BOOTSTRAP} "
                f"and {ENV_GROUP}"
            )
        return read_config(Path(config_file))
    servers, group = os.environ.get(ENV_BOOTSTRAP), os.environ.get(ENV_GROUP)
    if servers and group:
        source = f"{ENV_BOOTSTRAP}/{ENV_GROUP}"
        return KafkaSettings(
            _connection(servers, {}, source),
            group,
            source=source,
            dead_letter_topic=os.environ.get(ENV_DEAD_LETTER_TOPIC) or None,
        )
    if servers:
        raise ConfigError(f"{ENV_BOOTSTRAP} is set but {ENV_GROUP} is not: set the group id")
    raise ConfigError(
        "the Kafka listener is not configured: call listeners.kafka.configure("
        f"bootstrap_servers=..., group_id=...), set {ENV_BOOTSTRAP} and {ENV_GROUP}, or "
        f"set {ENV_CONFIG} to the connector's YAML file and use {_FILE_LISTENER}"
    )


# -- the listener ----------------------------------------------------------------------


class QueueEventListener(EventListener):
    """Returns the group's next uncommitted record of a topic; commits it once checkpointed.

    Stateless: every call makes (and closes) its own consumer. See the module docstring
    for the protocol, the configuration and why partitions are assigned, not subscribed.
    """

    def settings(self) -> KafkaSettings:
        """Where the group lives, resolved at every call (in the call's own thread):
        :func:`resolve_settings`, without a reader for ``KEC_CONFIG``'s file."""
        return resolve_settings()

    async def poll_for_event(
        self,
        topic: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - enforced in the thread, see below
        namespace: str | None = None,
    ) -> Event:
        """The next record of ``topic`` not committed by the group, as an Event.

        ``namespace`` is the namespace of events without a ``namespace`` header (default
        ``"default"``). Raises :class:`TimeoutError` when ``timeout`` seconds pass without
        a record, :class:`~kec.errors.DecodeError` (naming topic, partition and
        offset) for a record that is not an event, and
        :class:`~kec.errors.KafkaClientError` when Kafka fails. A topic that does
        not exist yet is waited for (with a warning), like any event: the first event of
        a namespace may create it. ``timeout`` is checked between consumer polls, so the
        thread ends on its own; cancelling (``asyncio.timeout``) works as well.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = functools.partial(
            _poll, self.settings, topic, namespace or DEFAULT_NAMESPACE, deadline
        )
        return await _in_thread(f"kec-poll-{topic}", poll)

    async def event_checkpointed(self, event: Event) -> None:
        """Commit ``offset + 1`` of the event's partition unless the group is already past it."""
        if event.coordinates is None:
            raise ValueError(f"event {event.event_id} has no Kafka topic/partition/offset")
        topic, partition, offset = event.coordinates
        commit = functools.partial(_commit, self.settings, topic, partition, offset + 1)
        await _in_thread(f"kec-commit-{topic}", commit)


# -- blocking work (runs in its own thread) --------------------------------------------


class _Stopped(Exception):
    """The awaiting coroutine was cancelled or the interpreter is exiting."""


def _poll(
    resolve: Callable[[], KafkaSettings],
    topic: str,
    namespace: str,
    deadline: float | None,
    stop: threading.Event,
) -> Event:
    settings = resolve()
    consumer = _new_consumer(settings)
    dead: _DeadLetterProducer | None = None
    try:
        partitions = _partitions(consumer, topic, stop)
        if not partitions:
            log.warning("topic %r does not exist (yet); waiting for it", topic)
        while not partitions:
            stop.wait(_slice(deadline, stop, TOPIC_RECHECK, f"topic {topic!r} does not exist"))
            partitions = _partitions(consumer, topic, stop)
        consumer.assign(_start_positions(consumer, settings, topic, partitions, stop))
        while True:
            msg = consumer.poll(_slice(deadline, stop, POLL_SLICE, f"no event on {topic!r}"))
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if is_eof(error):
                    continue
                raise KafkaClientError(f"consuming {topic}: {error.str()}")
            try:
                return _decode(msg, namespace)
            except DecodeError as exc:
                if settings.dead_letter_topic is None:
                    raise
                if dead is None:
                    dead = _DeadLetterProducer(settings, settings.dead_letter_topic)
                dead.send(Poison.of(msg, exc), stop)
    except KafkaException as exc:  # from assign() or poll(); the lookups wrap their own
        raise kafka.wrapped(f"consuming {topic}", exc) from exc
    finally:
        _close(consumer)
        if dead is not None:
            dead.close()


class _DeadLetterProducer:
    """One poll's dead-letter copies: produced, acknowledged, then the group's offset
    committed past each (module docstring); the producer is made at the first one."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._producer = kafka.producer(settings.producer_config())
        self._letters = DeadLetters(self._producer, topic, flush_timeout=DLQ_TIMEOUT)

    def send(self, poison: Poison, stop: threading.Event) -> None:
        self._letters.send([poison])  # raises, committing nothing, unless acknowledged
        _commit_past(self._settings, poison.topic, poison.partition, poison.offset + 1, stop)
        log.warning(
            "record %s[%d]@%d is not an event (%s): copied to dead-letter topic %s and "
            "committed past",
            poison.topic, poison.partition, poison.offset, poison.error, self._topic,
        )  # fmt: skip

    def close(self) -> None:
        # Every copy was acknowledged or raised (nothing committed past it): drop the rest.
        kafka.close_producer(self._producer, 0)


def _start_positions(
    consumer: Consumer,
    settings: KafkaSettings,
    topic: str,
    partitions: list[int],
    stop: threading.Event,
) -> list[KafkaTopicPartition]:
    """Each partition at the group's committed offset, else where auto.offset.reset says."""
    committed = _kafka(
        f"reading the committed offsets of {topic} for group {settings.group_id}",
        lambda: consumer.committed(
            [kafka_tp((topic, p)) for p in partitions], timeout=CALL_TIMEOUT
        ),
        stop,
    )
    offsets = {tp.partition: tp.offset for tp in _checked(committed, topic)}
    start = settings.start_offset()
    missing = [p for p, offset in offsets.items() if offset < 0]
    if missing and start in _LIST_OFFSETS_AT:
        # Look them up now, in one request: left to librdkafka, each is looked up on its
        # own, and a first fetch without them waits fetch.wait.max.ms (0.5 s) for nothing.
        wanted = [kafka_tp((topic, p), _LIST_OFFSETS_AT[start]) for p in missing]
        found = _kafka(
            f"looking up the start offsets of {topic}",
            lambda: consumer.offsets_for_times(wanted, timeout=CALL_TIMEOUT),
            stop,
        )
        offsets.update({tp.partition: tp.offset for tp in _checked(found, topic)})
    return [kafka_tp((topic, p), offset if offset >= 0 else start) for p, offset in offsets.items()]


def _slice(deadline: float | None, stop: threading.Event, longest: float, why: str) -> float:
    """How long the next blocking step may take; raise if the poll should end instead."""
    if stop.is_set() or not threading.main_thread().is_alive():
        raise _Stopped
    if deadline is None:
        return longest
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"{why} (timeout reached)")
    return min(longest, left)


def _commit(
    resolve: Callable[[], KafkaSettings],
    topic: str,
    partition: int,
    next_offset: int,
    stop: threading.Event,
) -> None:
    _commit_past(resolve(), topic, partition, next_offset, stop)


def _commit_past(
    settings: KafkaSettings, topic: str, partition: int, next_offset: int, stop: threading.Event
) -> None:
    """Commit ``next_offset`` for the group unless its committed offset is there already."""
    where = f"{topic}[{partition}] for group {settings.group_id}"
    # Kafka commits unconditionally; the lock makes read-then-commit atomic in-process.
    with _commit_lock(settings, topic, partition):
        consumer = _new_consumer(settings)
        try:
            current = _kafka(
                f"reading the committed offset of {where}",
                lambda: consumer.committed([kafka_tp((topic, partition))], timeout=CALL_TIMEOUT),
                stop,
            )
            if _checked(current, topic)[0].offset >= next_offset:
                return  # already there or beyond: a repeated or stale call
            done = _kafka(
                f"committing offset {next_offset} of {where}",
                lambda: consumer.commit(
                    offsets=[kafka_tp((topic, partition), next_offset)], asynchronous=False
                ),
                stop,
            )
            _checked(done, topic)
        finally:
            _close(consumer)


def _new_consumer(settings: KafkaSettings) -> Consumer:
    try:
        return kafka.consumer(settings.consumer_config())
    except ConfigError as exc:
        raise ConfigError(f"{settings.source}: {exc}") from exc


def _close(consumer: Consumer) -> None:
    # Nothing is committed on close (auto-commit is off), so a failure here loses nothing
    # and must not hide the poll's or commit's own outcome.
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        log.warning("closing a Kafka listener consumer failed: %s", exc)


def _partitions(consumer: Consumer, topic: str, stop: threading.Event) -> list[int]:
    """The topic's partitions; none when it does not exist (the metadata is fresh)."""

    def lookup() -> list[int]:
        # A transient error (LEADER_NOT_AVAILABLE right after creation) is retried.
        return kafka.partition_ids(consumer, topic, CALL_TIMEOUT) or []

    return _kafka(f"reading the partitions of {topic}", lookup, stop)


def _checked(partitions: list[KafkaTopicPartition], topic: str) -> list[KafkaTopicPartition]:
    for tp in partitions:
        if tp.error is not None:
            raise KafkaClientError(f"{topic}[{tp.partition}]: {tp.error.str()}")
    return partitions


def _decode(msg: Message, namespace: str) -> Event:
    try:
        return event_from_message(msg, namespace)
    except DecodeError as exc:
        raise DecodeError(
            f"record {msg.topic()}[{msg.partition()}]@{msg.offset()} is not an event: {exc}"
        ) from exc


def _kafka(what: str, call: Callable[[], T], stop: threading.Event) -> T:
    """``call()``, retrying transient Kafka errors for a while; others wrapped."""
    return kafka.retried(what, call, RETRY_FOR, stop)


_locks_guard = threading.Lock()
_commit_locks: dict[tuple[str, str, str, int], threading.Lock] = {}


def _commit_lock(settings: KafkaSettings, topic: str, partition: int) -> threading.Lock:
    key = (settings.bootstrap_servers, settings.group_id, topic, partition)
    with _locks_guard:
        return _commit_locks.setdefault(key, threading.Lock())


# -- thread plumbing -------------------------------------------------------------------


async def _in_thread(name: str, work: Callable[[threading.Event], T]) -> T:
    """Run ``work(stop)`` in a new thread; on cancellation set ``stop`` and wait for it.

    A thread of its own (not the default executor) so that many long polls cannot starve
    other ``to_thread`` work, and non-daemon so its consumer is always closed; the work
    also stops once the main thread has finished, so it never holds up interpreter exit.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    done.add_done_callback(_consume_outcome)
    stop = threading.Event()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(cast(T, result))

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work(stop)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):
            await done  # the thread closes its consumer within POLL_SLICE
        raise


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    # Mark a failure as retrieved even when the awaiting task was cancelled meanwhile.
    if not future.cancelled():
        future.exception()
