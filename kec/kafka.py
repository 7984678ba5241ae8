"""Every Kafka client of the project is built here, and every Kafka failure classified.

One place for the settings the guarantees rest on (:data:`CONSUMER_FIXED`,
:data:`PIPELINE_FIXED`, :data:`PRODUCER_FIXED`), one policy for user properties that
contradict them (refused with a :class:`~kec.errors.ConfigError`; repeating them is fine),
one route for librdkafka's own log lines (Python logging, logger ``kec.librdkafka``, the
same line at most once every :data:`LOG_EVERY` seconds with a count of what was held
back) and one classification of errors: transient ones are retried by :func:`retried`;
callers see only the :class:`~kec.errors.ConnectorError` tree: ``BrokerUnavailable``
when no broker answered, ``KafkaClientError`` otherwise, ``ConfigError`` for client
properties librdkafka refuses.

Builders: :func:`consumer` (``fixed=PIPELINE_FIXED`` for the pipeline's group member),
:func:`reader` (tools: a throwaway group that never commits), :func:`producer`
(idempotent, ``acks=all``), :func:`admin`. Importing this module loads confluent-kafka;
the rest of :mod:`kec` does not.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from kec.errors import BrokerUnavailable, ConfigError, KafkaClientError

T = TypeVar("T")

ATTEMPT_TIMEOUT = 10.0  # seconds for one admin/offset request inside a retried call
UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN}
UNREACHABLE_DELIVERY = UNREACHABLE | {KafkaError._MSG_TIMED_OUT}
# Transient although librdkafka does not always flag them retriable (e.g. leadership and
# metadata still settling right after a topic was created).
_TRANSIENT = UNREACHABLE | {
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
PRODUCER_FIXED = {"enable.idempotence": "true", "acks": "all"}
CONSUMER_FIXED = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "isolation.level": "read_committed",
}
# The pipeline's consumer also needs incremental rebalances: a revoke hands over only
# the partitions that move, after their deliveries are settled.
PIPELINE_FIXED = {**CONSUMER_FIXED, "partition.assignment.strategy": "cooperative-sticky"}

LOG_EVERY = 30.0  # seconds between two copies of the same librdkafka line


class _Quieter(logging.Filter):
    """Lets one copy of a librdkafka line through every ``LOG_EVERY`` seconds (numbers
    do not count: reconnect counters and timings differ) and says how many were held."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # shape -> (when shown, held since)

    def filter(self, record: logging.LogRecord) -> bool:
        shape = re.sub(r"\d+", "#", record.getMessage())
        now = self._clock()
        shown, held = self._seen.get(shape, (float("-inf"), 0))
        if now - shown < LOG_EVERY:
            self._seen[shape] = (shown, held + 1)
            return False
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it in {now - shown:.0f}s)"
            record.args = ()
        if len(self._seen) > 1000:  # bounded, whatever librdkafka says
            self._seen.clear()
        self._seen[shape] = (now, 0)
        return True


LIBRDKAFKA_LOG = logging.getLogger("kec.librdkafka")
LIBRDKAFKA_LOG.addFilter(_Quieter())


_ALIASES = {"request.required.acks": "acks"}  # librdkafka's other names of a setting


def fixed(config: Mapping[str, Any], fixed: Mapping[str, str]) -> dict[str, Any]:
    """``config`` with ``fixed`` applied; a conflicting value is a ``ConfigError``."""
    for alias, name in _ALIASES.items():
        if alias in config and name in fixed:
            config = {**{k: v for k, v in config.items() if k != alias}, name: config[alias]}
    for name, value in fixed.items():
        given = config.get(name)
        allowed = {value, "-1"} if value == "all" else {value}  # acks=-1 means acks=all
        if given is not None and str(given).lower() not in allowed:
            raise ConfigError(f"property {name}={given!r} is not allowed: the client needs {value}")
    return {**config, **fixed}


def kafka_new(kind: Callable[[dict[str, Any]], T], config: Mapping[str, Any]) -> T:
    """A librdkafka client logging through :data:`LIBRDKAFKA_LOG`; properties it refuses
    become a ``ConfigError``."""
    try:
        return kind({"logger": LIBRDKAFKA_LOG, **config})
    except KafkaException as exc:
        raise ConfigError(f"librdkafka refused the client properties: {exc}") from exc


def consumer(
    config: Mapping[str, Any], *, fixed_settings: Mapping[str, str] = CONSUMER_FIXED
) -> Consumer:
    """A consumer of ``config`` (``group.id`` included) with ``fixed_settings`` applied."""
    return kafka_new(Consumer, fixed(config, fixed_settings))


def reader(config: Mapping[str, Any], purpose: str) -> Consumer:
    """A consumer for tools: reads committed data, joins and commits nothing (a fresh
    group id per call)."""
    return consumer(
        {
            **config,
            "group.id": f"kec-{purpose}-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": False,
        }
    )


def producer(config: Mapping[str, Any]) -> Producer:
    """An idempotent producer (``acks=all``) of ``config``."""
    return kafka_new(Producer, fixed(config, PRODUCER_FIXED))


def admin(config: Mapping[str, Any]) -> AdminClient:
    return kafka_new(AdminClient, config)


def watermarks(consumer: Any, tp: Any, timeout: float) -> tuple[int, int]:
    """The partition's (low, high) offsets, asked of the broker (not the cache)."""
    found = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
    if found is None:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "watermark request timed out"))
    low, high = found
    return int(low), int(high)


def checked(partitions: list[Any]) -> list[Any]:
    """``partitions``, raising the first per-partition error librdkafka reported."""
    for tp in partitions:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return partitions


def code(exc: BaseException) -> int | None:
    """The ``KafkaError`` code a ``KafkaException`` carries, if any."""
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT)


def transient(exc: BaseException) -> bool:
    """Whether trying the same Kafka call again later may succeed."""
    return _transient(exc)


def wrapped(what: str, exc: KafkaException) -> KafkaClientError:
    """A librdkafka failure as the connector's error: ``BrokerUnavailable`` when no broker
    answered, ``KafkaClientError`` otherwise."""
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        cls = BrokerUnavailable if error.code() in UNREACHABLE else KafkaClientError
        return cls(f"{what}: {error.str()}")
    return KafkaClientError(f"{what}: {exc}")


def retried(
    what: str, call: Callable[[], T], within: float, stop: threading.Event | None = None
) -> T:
    """``call()``, retrying transient Kafka errors for ``within`` seconds (or until
    ``stop`` is set); errors wrapped."""
    give_up: Any = stop_after_delay(within)
    if stop is not None:
        give_up = give_up | stop_when_event_set(stop)
    retrying = Retrying(
        retry=retry_if_exception(_transient),
        stop=give_up,
        wait=wait_exponential(multiplier=0.05, max=1.0),
        reraise=True,
    )
    try:
        return retrying(call)
    except TimeoutError as exc:
        raise BrokerUnavailable(f"{what}: no answer within {within:.0f}s") from exc
    except KafkaException as exc:
        raise wrapped(what, exc) from exc
