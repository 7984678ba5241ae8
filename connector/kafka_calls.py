"""Kafka calls retried when transient, errors wrapped (the notification client, topics).

librdkafka reports failures as ``KafkaException``/``KafkaError`` codes; callers see only
the :class:`~kec.errors.ConnectorError` tree: ``BrokerUnavailable`` when no broker
answered, ``KafkaClientError`` otherwise, and ``ConfigError`` for client properties
librdkafka refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

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
CONSUMER_FIXED = {"enable.auto.commit": "false", "enable.auto.offset.store": "false"}


def fixed(config: dict[str, Any], fixed: Mapping[str, str]) -> dict[str, Any]:
    """``config`` with ``fixed`` applied; a conflicting value is a ``ConfigError``."""
    for name, value in fixed.items():
        given = config.get(name)
        allowed = {value, "-1"} if value == "all" else {value}  # acks=-1 means acks=all
        if given is not None and str(given).lower() not in allowed:
            raise ConfigError(f"property {name}={given!r} is not allowed: the client needs {value}")
    return {**config, **fixed}


def kafka_new(kind: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """A librdkafka client; properties it refuses become a ``ConfigError``."""
    try:
        return kind(config)
    except KafkaException as exc:
        raise ConfigError(f"librdkafka refused the client properties: {exc}") from exc


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


def retried(what: str, call: Callable[[], T], within: float) -> T:
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
            cls = BrokerUnavailable if error.code() in UNREACHABLE else KafkaClientError
            raise cls(f"{what}: {error.str()}") from exc
        raise KafkaClientError(f"{what}: {exc}") from exc
