"""Every Kafka client of the project is built here, and every Kafka failure classified.

Every client built here has the settings the guarantees rest on applied
(:data:`CONSUMER_FIXED`, :data:`PIPELINE_FIXED`, :data:`PRODUCER_FIXED`; user properties
that contradict them are refused by :func:`fixed`). Those live in :mod:`kec.kafka_fixed`,
which loads no client, so a configuration can check them when it is read. One route for
librdkafka's own log lines (Python logging, logger ``kec.librdkafka``, the
same line at most once every :data:`LOG_EVERY` seconds with a count of what was held
back) and one classification of errors: transient ones are retried by :func:`retried`;
callers see only the :class:`~kec.errors.ConnectorError` tree: ``BrokerUnavailable``
when no broker answered, ``KafkaClientError`` otherwise, ``ConfigError`` for client
properties librdkafka refuses.

Why no broker answers is read from librdkafka's client-wide errors (``error_cb``), which
say it within milliseconds while a request would only time out: :func:`unreachable`
classifies one (name lookup failed, connection refused, timed out, authentication or
TLS failure, ...), and :func:`reach`, which the commands call before their first request,
turns it into one line, ``cannot reach Kafka at HOST:PORT: connection refused by ...``,
after a couple of seconds rather than after the request's timeout.

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
from dataclasses import dataclass
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
from kec.kafka_fixed import CONSUMER_FIXED as CONSUMER_FIXED
from kec.kafka_fixed import PIPELINE_FIXED as PIPELINE_FIXED
from kec.kafka_fixed import PRODUCER_FIXED as PRODUCER_FIXED
from kec.kafka_fixed import fixed as fixed

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


def wrapped(what: str, exc: KafkaException) -> KafkaClientError:
    """A librdkafka failure as the connector's error: ``BrokerUnavailable`` when no broker
    answered, ``KafkaClientError`` otherwise."""
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        cls = BrokerUnavailable if error.code() in UNREACHABLE else KafkaClientError
        return cls(f"{what}: {error.str()}")
    return KafkaClientError(f"{what}: {exc}")


# -- why no broker answers -----------------------------------------------------------------

REACH_TIMEOUT = 30.0  # seconds reach() waits for a broker when nothing says why not
REACH_SETTLE = 2.0  # seconds a cause must hold before reach() gives up: a broker may be starting

# librdkafka's "BROKER: what happened (after 3ms in state CONNECT)"; the broker is
# "host:port/bootstrap" or "host:port/ID", with the protocol before it for TLS and SASL.
_BROKER_LINE = re.compile(
    r"^(?:[a-z_]+://)?(?P<broker>\S+?)/(?:bootstrap|-?\d+): (?P<detail>.*?)"
    r"(?: \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\))?$",
    re.DOTALL,
)
_HTTP_AS_SIZE = str(int.from_bytes(b"HTTP", "big"))  # an HTTP answer read as a Kafka length
_CONNECT_TO = re.compile(r"Connect to (?:ipv[46]#)?(?P<address>\S+?:\d+) failed")


@dataclass(frozen=True, slots=True)
class Unreachable:
    """Why a broker cannot be used, from one of librdkafka's client-wide errors.

    ``cause`` is one of :data:`CAUSES`; ``broker`` the ``host:port`` librdkafka named
    (empty when it named none); ``detail`` its own words, without broker and timing.
    """

    cause: str
    broker: str
    detail: str

    @property
    def definite(self) -> bool:
        """Whether it says why (not only that no broker is up)."""
        return self.cause != "down"

    def __str__(self) -> str:
        where = self.broker or "the broker"
        match self.cause:
            case "resolve":
                reason = self.detail.rpartition(": ")[2]
                return f"name lookup failed for {where} ({reason})"
            case "refused":
                return f"connection refused by {where} (no broker listens there)"
            case "timeout":
                return f"timed out connecting to {where} ({self.detail})"
            case "auth":
                return f"authentication failed at {where}: {self.detail} (check the SASL settings)"
            case "tls":
                return (
                    f"TLS failed with {where}: {self.detail} (check security_protocol and the "
                    "SSL settings)"
                )
            case "not-kafka":
                if _HTTP_AS_SIZE in self.detail:
                    return f"{where} is not a Kafka broker: it answers like an HTTP server"
                return f"{where} is not a Kafka broker ({self.detail})"
            case "closed":
                return f"{where} closed the connection: {self.detail}"
            case "network":
                return f"no network path to {where} ({self.detail})"
        return f"no broker is up ({self.detail})"


CAUSES = ("resolve", "refused", "timeout", "auth", "tls", "not-kafka", "closed", "network", "down")

# Looked for in librdkafka's text, first match wins; the error code decides when none does.
_BY_TEXT = (
    ("resolve", ("Failed to resolve",)),
    # A plaintext client at a TLS or SASL listener: librdkafka's detail says so itself.
    ("closed", ("Disconnected while requesting ApiVersion",)),
    ("auth", ("SASL", "Authentication failed", "authentication")),
    ("tls", ("SSL", "TLS", "certificate")),
    ("refused", ("Connection refused",)),
    ("timeout", ("timed out", "Timed out")),
    ("not-kafka", ("Invalid response size",)),
    ("network", ("No route to host", "Network is unreachable")),
)
_BY_CODE = {
    KafkaError._RESOLVE: "resolve",
    KafkaError._AUTHENTICATION: "auth",
    KafkaError.SASL_AUTHENTICATION_FAILED: "auth",
    KafkaError._SSL: "tls",
    KafkaError._TIMED_OUT: "timeout",
    KafkaError._BAD_MSG: "not-kafka",
    KafkaError._TRANSPORT: "closed",
    KafkaError._ALL_BROKERS_DOWN: "down",
}


def unreachable(err: KafkaError) -> Unreachable | None:
    """Why no broker can be used, when ``err`` (from ``error_cb``) says so; None for
    errors that are about something else."""
    code_ = err.code()
    if code_ not in _BY_CODE:
        return None
    text = err.str()
    line = _BROKER_LINE.match(text)
    broker, detail = (line["broker"], line["detail"]) if line else ("", text)
    if not broker:
        # "GroupCoordinator: Connect to ipv4#127.0.0.1:9092 failed: ...": no host:port/id
        # before the colon, but the address is in the words.
        named = _CONNECT_TO.search(text)
        broker = named["address"] if named else ""
    if code_ == KafkaError._ALL_BROKERS_DOWN:
        return Unreachable("down", "", text)
    for cause, words in _BY_TEXT:
        if any(word in detail for word in words):
            return Unreachable(cause, broker, detail)
    return Unreachable(_BY_CODE[code_], broker, detail)


class _Demoted:
    """A librdkafka logger that sends its lines to DEBUG: :func:`reach` says it in one line."""

    def log(self, level: int, fmt: str, *args: Any) -> None:
        LIBRDKAFKA_LOG.debug(fmt, *args)


def reach(
    config: Mapping[str, Any],
    within: float = REACH_TIMEOUT,
    *,
    settle: float = REACH_SETTLE,
    stop: threading.Event | None = None,
) -> None:
    """Return once a broker of ``config`` answers (or ``stop`` is set); otherwise raise
    :class:`~kec.errors.BrokerUnavailable` saying why, in one line.

    Once every bootstrap server has said why it cannot be used (name lookup failed,
    connection refused, authentication or TLS failed, ...: see :func:`unreachable`) and
    the first said so ``settle`` seconds ago, the wait ends; otherwise ``within``
    seconds end it, and the last reason heard is given.
    """
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
            raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {definite[-1]}")
        if now - started >= within:
            break
    if stop is not None and stop.is_set():
        return
    definite = [c for c in causes if c.definite]
    if definite:
        why = str(definite[-1])
    else:
        why = f"no broker answered within {time.monotonic() - started:.0f}s"
        why += f" ({causes[-1].detail})" if causes else ""
    raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {why}")


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
