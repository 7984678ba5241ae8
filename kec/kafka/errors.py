"""The one place Kafka failures are classified and mapped to the connector's error tree.

librdkafka reports failures three ways: a ``KafkaException`` raised by a call, a
``KafkaError`` in a message or a delivery report, and client-wide errors handed to
``error_cb``. Everything that decides what one of them means lives here: whether it is
transient (:func:`transient`, retried by :func:`kec.kafka.retried`), fatal for the client
(:func:`is_fatal`), the end of a partition (:func:`is_eof`), a topic the cluster does not
have, a record that can never be produced (:func:`rejected`), a create-topic request a
person has to fix (:func:`create_refusal`), and why no broker answers
(:func:`unreachable`). Callers see the :class:`~kec.errors.ConnectorError` tree:
``BrokerUnavailable`` when no broker answered, ``KafkaClientError`` otherwise
(:func:`wrapped`, :func:`delivery_error`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from kec.errors import BrokerUnavailable, KafkaClientError, KafkaNotAuthorized, KafkaSettingRefused

__all__ = [
    "CAUSES",
    "UNREACHABLE",
    "UNREACHABLE_DELIVERY",
    "KafkaError",
    "KafkaException",
    "Unreachable",
    "already_exists",
    "checked",
    "code",
    "create_refusal",
    "delivery_error",
    "error_of",
    "error_text",
    "is_eof",
    "is_fatal",
    "not_authorized",
    "refused_resource",
    "refused_setting",
    "rejected",
    "transient",
    "unknown_topic",
    "unreachable",
    "wrapped",
]

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


_AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "consumer group",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
}


def refused_resource(error: KafkaError | None) -> str | None:
    """What an ACL is missing on (``topic``, ``consumer group``...), when ``error`` is an
    authorization failure; else None."""
    return _AUTHORIZATION.get(error.code()) if error is not None else None


def refused_setting(error: KafkaError, config: dict[str, Any]) -> KafkaSettingRefused | None:
    """One line for a consumer setting the group coordinator refuses, naming the setting
    and its value in ``config`` (the consumer's); None for any other error."""
    if error.code() != KafkaError.INVALID_SESSION_TIMEOUT:
        return None
    value = config.get("session.timeout.ms", "45000 (Kafka's default)")
    return KafkaSettingRefused(
        f"the group coordinator refuses session.timeout.ms={value} ({error.str()}): set "
        "kafka.properties session.timeout.ms within the broker's "
        "group.min.session.timeout.ms and group.max.session.timeout.ms (6000 to 1800000 "
        "unless the cluster changed them)"
    )


def not_authorized(what: str, error: KafkaError, principal: str) -> KafkaNotAuthorized:
    """One line for an authorization failure on ``what`` (``topic 'orders'``), naming who
    needs the ACL (``principal``: see :func:`kec.kafka.settings.Connection.principal`)."""
    return KafkaNotAuthorized(
        f"not authorized by the cluster's ACLs on {what} ({error.str()}): grant {principal} "
        "access to it (Describe and Read to consume, Write to produce, Read on the consumer "
        "group), or check which user the kafka: section logs in as"
    )


def _tls_hint(detail: str) -> str:
    """The setting to look at for a failed TLS handshake, from OpenSSL's reason."""
    if "mismatch" in detail:  # "Hostname mismatch", "IP address mismatch"
        return (
            "the broker's certificate does not name the host connected to: check "
            "bootstrap_servers, or kafka.ssl_endpoint_identification on a test cluster only"
        )
    if "local issuer" in detail or "self-signed" in detail or "self signed" in detail:
        return "the broker's certificate is signed by a CA not trusted here: check ssl_ca_location"
    return "check security_protocol and the SSL settings"


def transient(exc: BaseException) -> bool:
    """Whether trying the same Kafka call again later may succeed."""
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


def error_of(exc: BaseException) -> KafkaError | None:
    """The ``KafkaError`` a ``KafkaException`` carries, if any."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return error if isinstance(error, KafkaError) else None


def error_text(exc: BaseException) -> str:
    """librdkafka's own words for a failure (the ``KafkaError``'s text when it has one)."""
    error = error_of(exc)
    return str(error.str()) if error is not None else str(exc)


def is_fatal(err: KafkaError) -> bool:
    """Whether the client is unusable. A consumer's fatal error (a static member fenced by
    another with its instance id, say) reaches the application as an error of code _FATAL
    that is not itself flagged fatal: polling on would stall for ever."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def is_eof(err: KafkaError) -> bool:
    """Whether a consumed message's error only says the partition was read to its end."""
    return bool(err.code() == KafkaError._PARTITION_EOF)


def unknown_topic(err: KafkaError | BaseException | None) -> bool:
    """Whether the cluster does not have the topic (retriable for Kafka, an answer here)."""
    if isinstance(err, BaseException):
        err = error_of(err)
    return err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


# Errors of produce() that no retry can cure: the record itself is unacceptable.
_REJECTED = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})


def rejected(exc: BaseException) -> bool:
    """Whether ``produce()`` refused the record itself (too large): no retry can cure it."""
    error = error_of(exc)
    return error is not None and error.code() in _REJECTED


def delivery_error(what: str, err: KafkaError) -> KafkaClientError:
    """A failed delivery report as the connector's error: ``BrokerUnavailable`` when no
    broker acknowledged in time, ``KafkaClientError`` otherwise."""
    cls = BrokerUnavailable if err.code() in UNREACHABLE_DELIVERY else KafkaClientError
    return cls(f"{what}: {err.str()}")


# Create-topic errors that a person has to fix: said instead of retried.
_REFUSED: dict[int, str] = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "the connector is not authorised to create topics",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "the connector is not authorised to create topics",
    KafkaError.INVALID_REPLICATION_FACTOR: "the replication factor is not possible here",
    KafkaError.INVALID_PARTITIONS: "the partition count is not valid",
    KafkaError.POLICY_VIOLATION: "the cluster's create-topic policy refused it",
    KafkaError.TOPIC_EXCEPTION: "the name is not a valid topic name",
}


def create_refusal(exc: BaseException) -> str | None:
    """Why the cluster refused to create a topic, when a person has to fix it; else None."""
    error = error_of(exc)
    return _REFUSED.get(error.code()) if error is not None else None


def already_exists(exc: BaseException) -> bool:
    """Whether a create-topic request failed only because the topic exists (a lost race)."""
    error = error_of(exc)
    return error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS


# -- why no broker answers -----------------------------------------------------------------

# librdkafka's "BROKER: what happened (after 3ms in state CONNECT)"; the broker is
# "host:port/bootstrap" or "host:port/ID", with the protocol before it for TLS and SASL.
_TIMING_TEXT = r" \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)"
_BROKER_LINE = re.compile(
    rf"^(?:[a-z_]+://)?(?P<broker>\S+?)/(?:bootstrap|-?\d+): (?P<detail>.*?)(?:{_TIMING_TEXT})?$",
    re.DOTALL,
)
_TIMING = re.compile(_TIMING_TEXT + "$")
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
                return f"TLS failed with {where}: {self.detail} ({_tls_hint(self.detail)})"
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
    # A line without a host:port/id ("GroupCoordinator: ...") keeps its timing otherwise.
    broker, detail = (line["broker"], line["detail"]) if line else ("", _TIMING.sub("", text))
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
