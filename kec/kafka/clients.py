"""Every Kafka client of the project is built here.

Every client built here has the settings the guarantees rest on applied
(:data:`~kec.kafka.settings.CONSUMER_FIXED`, ``PIPELINE_FIXED``, ``PRODUCER_FIXED``;
user properties that contradict them are refused by :func:`~kec.kafka.settings.fixed`).
Those live in :mod:`kec.kafka.settings`, which loads no client, so a configuration can
check them when it is read. One route for librdkafka's own log lines (Python logging,
logger ``kec.librdkafka``, the same line at most once every :data:`LOG_EVERY` seconds
with a count of what was held back). Transient failures are retried by :func:`retried`;
callers see only the :class:`~kec.errors.ConnectorError` tree (:mod:`kec.kafka.errors`
classifies), ``ConfigError`` for client properties librdkafka refuses.

:func:`reach`, which the commands call before their first request, turns librdkafka's
client-wide errors (``error_cb``, classified by :func:`kec.kafka.errors.unreachable`)
into one line, ``cannot reach Kafka at HOST:PORT: connection refused by ...``, after a
couple of seconds rather than after the request's timeout.

Builders: :func:`consumer` (``fixed_settings=PIPELINE_FIXED`` for the pipeline's group
member), :func:`reader` (tools: a throwaway group that never commits), :func:`producer`
(idempotent, ``acks=all``), :func:`admin`. Each takes a librdkafka property mapping or
a :class:`~kec.kafka.settings.Connection`. The client classes are re-exported under
the names callers annotate with (``Consumer``, ``Producer``, ``Message``...).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from kec.errors import BrokerUnavailable, ConfigError
from kec.kafka.errors import UNREACHABLE, Unreachable, code, transient, unreachable, wrapped
from kec.kafka.settings import CONSUMER_FIXED, PRODUCER_FIXED, Connection, fixed

__all__ = [
    "ATTEMPT_TIMEOUT",
    "LIBRDKAFKA_LOG",
    "REACH_TIMEOUT",
    "AdminClient",
    "Consumer",
    "Message",
    "Producer",
    "admin",
    "close_producer",
    "consumer",
    "fetch_batch",
    "kafka_new",
    "producer",
    "reach",
    "reader",
    "retried",
    "watermarks",
]

T = TypeVar("T")
ClientConfig = Mapping[str, Any] | Connection  # librdkafka properties, or a connection

ATTEMPT_TIMEOUT = 10.0  # seconds for one admin/offset request inside a retried call

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


class _SharedProperties(logging.Filter):
    """``kafka.properties`` go to every client the connector makes, so a consumer's
    setting there (``session.timeout.ms``) is right, and librdkafka's warning that a
    producer or admin client ignores it is no news: such a line is logged at DEBUG."""

    _IGNORED = re.compile(
        r"CONFWARN .*Configuration property \S+ is a (consumer|producer) property and will "
        r"be ignored by this (producer|consumer) instance"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not self._IGNORED.search(record.getMessage()):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


LIBRDKAFKA_LOG = logging.getLogger("kec.librdkafka")
LIBRDKAFKA_LOG.addFilter(_SharedProperties())
LIBRDKAFKA_LOG.addFilter(_Quieter())


def _properties(config: ClientConfig) -> dict[str, Any]:
    return config.client_config() if isinstance(config, Connection) else dict(config)


def kafka_new(kind: Callable[[dict[str, Any]], T], config: ClientConfig) -> T:
    """A librdkafka client logging through :data:`LIBRDKAFKA_LOG`; properties it refuses
    become a ``ConfigError``."""
    try:
        return kind({"logger": LIBRDKAFKA_LOG, **_properties(config)})
    except KafkaException as exc:
        raise ConfigError(f"librdkafka refused the client properties: {exc}") from exc


def consumer(
    config: ClientConfig, *, fixed_settings: Mapping[str, str] = CONSUMER_FIXED
) -> Consumer:
    """A consumer of ``config`` (``group.id`` included) with ``fixed_settings`` applied."""
    return kafka_new(Consumer, fixed(_properties(config), fixed_settings))


def reader(config: ClientConfig, purpose: str) -> Consumer:
    """A consumer for tools: reads committed data, joins and commits nothing (a fresh
    group id per call)."""
    return consumer(
        {
            **_properties(config),
            "group.id": f"kec-{purpose}-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": False,
        }
    )


def producer(config: ClientConfig) -> Producer:
    """An idempotent producer (``acks=all``) of ``config``."""
    return kafka_new(Producer, fixed(_properties(config), PRODUCER_FIXED))


def close_producer(producer: Producer, timeout: float) -> int:
    """Flush ``producer`` for at most ``timeout`` seconds, drop what is still
    unacknowledged (its callbacks served), and close it, so the client is gone now rather
    than when Python finalizes. Returns how many records were dropped."""
    left = producer.flush(timeout)
    if left:
        producer.purge()
        producer.flush(0)  # serve the purged records' callbacks
    producer.close()
    return left


def admin(config: ClientConfig) -> AdminClient:
    """An admin client of ``config`` (no I/O until its first request)."""
    return kafka_new(AdminClient, config)


def watermarks(consumer: Any, tp: Any, timeout: float) -> tuple[int, int]:
    """The partition's (low, high) offsets, asked of the broker (not the cache)."""
    found = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
    if found is None:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "watermark request timed out"))
    low, high = found
    return int(low), int(high)


# -- why no broker answers -----------------------------------------------------------------

REACH_TIMEOUT = 30.0  # seconds reach() waits for a broker when nothing says why not
REACH_SETTLE = 2.0  # seconds a cause must hold before reach() gives up: a broker may be starting


class _Demoted:
    """A librdkafka logger that sends its lines to DEBUG: :func:`reach` says it in one line."""

    def log(self, level: int, fmt: str, *args: Any) -> None:
        LIBRDKAFKA_LOG.debug(fmt, *args)


def reach(
    config: ClientConfig,
    within: float = REACH_TIMEOUT,
    *,
    settle: float = REACH_SETTLE,
    stop: threading.Event | None = None,
) -> None:
    """Return once a broker of ``config`` answers (or ``stop`` is set); otherwise raise
    :class:`~kec.errors.BrokerUnavailable` saying why, in one line.

    Once every bootstrap server has said why it cannot be used (name lookup failed,
    connection refused, authentication or TLS failed, ...: see
    :func:`~kec.kafka.errors.unreachable`) and
    the first said so ``settle`` seconds ago, the wait ends; otherwise ``within``
    seconds end it, and the last reason heard is given.
    """
    config = _properties(config)
    bootstrap = str(config.get("bootstrap.servers", "?"))
    servers = {re.sub(r"^[A-Za-z_]+://", "", s.strip()) for s in bootstrap.split(",")} - {""}
    causes: list[Unreachable] = []

    def on_error(err: KafkaError) -> None:
        found = unreachable(err)
        if found is not None:
            causes.append(found)

    client = kafka_new(AdminClient, {**config, "error_cb": on_error, "logger": _Demoted()})
    started = time.monotonic()
    answer = client.describe_cluster(request_timeout=within)
    first_definite: float | None = None
    while not (stop is not None and stop.is_set()):
        client.poll(0.05)
        if answer.done():
            try:
                answer.result()
                return
            except KafkaException as exc:
                if code(exc) not in UNREACHABLE:
                    return  # a broker answered, if only to refuse the request
            break
        now = time.monotonic()
        definite = [c for c in causes if c.definite]
        if definite and first_definite is None:
            first_definite = now
        every = servers <= {c.broker for c in definite}
        if every and first_definite is not None and now - first_definite >= settle:
            why = str(_diagnosed(definite[-1], config))
            raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {why}")
        if now - started >= within:
            break
    if stop is not None and stop.is_set():
        return
    definite = [c for c in causes if c.definite]
    if definite:
        why = str(_diagnosed(definite[-1], config))
    else:
        why = f"no broker answered within {time.monotonic() - started:.0f}s"
        why += f" ({causes[-1].detail})" if causes else ""
    raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {why}")


def _diagnosed(cause: Unreachable, config: Mapping[str, Any]) -> Unreachable:
    """``cause``, with OpenSSL's own reason when a TLS handshake failed verifying the
    broker's certificate: librdkafka says only that it could not be verified, which reads
    the same for an untrusted CA and for a certificate of another host name. One
    handshake of our own, with the same CA file, against the same broker, tells them apart."""
    if cause.cause != "tls" or "verif" not in cause.detail or ":" not in cause.broker:
        return cause
    if str(config.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        return cause
    host, _, port = cause.broker.rpartition(":")
    context = ssl.create_default_context(cafile=config.get("ssl.ca.location"))
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=3) as raw,
            context.wrap_socket(raw, server_hostname=host.strip("[]")),
        ):
            return cause  # it verifies here: nothing to add
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        return dataclasses.replace(cause, detail=f"{cause.detail}; OpenSSL: {reason}")
    except (OSError, ValueError):
        return cause


def retried(
    what: str, call: Callable[[], T], within: float, stop: threading.Event | None = None
) -> T:
    """``call()``, retrying transient Kafka errors for ``within`` seconds (or until
    ``stop`` is set); errors wrapped."""
    give_up: Any = stop_after_delay(within)
    if stop is not None:
        give_up = give_up | stop_when_event_set(stop)
    retrying = Retrying(
        retry=retry_if_exception(transient),
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


IDLE_WAIT_MIN_MS = 10
"""The least :func:`fetch_batch` waits for a first record when none is fetched. The wait
ends as soon as one arrives, so it adds no latency; shorter, an idle loop spins (with
``linger_ms: 0`` an idle pipeline took 94% of a core, with 10 ms 4%)."""


def fetch_batch(consumer: Consumer, size: int, linger_ms: float) -> list[Message]:
    """A consumer's next batch: the records the client already holds, at once (up to
    ``size``); only when it holds none, the first record to arrive within ``linger_ms``
    (at least :data:`IDLE_WAIT_MIN_MS`) and what came with it. ``consume(size, timeout)``
    would wait the whole timeout unless the batch filled: at 5,000 records/s a 10 ms
    linger added about 10 ms to the median latency of the pipeline. A batch is then what
    arrived while the last one was being handled: small and quick under light load, full
    under heavy load."""
    messages = consumer.consume(size, 0)
    if messages:
        return messages
    first = consumer.poll(max(linger_ms, IDLE_WAIT_MIN_MS) / 1000)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]
