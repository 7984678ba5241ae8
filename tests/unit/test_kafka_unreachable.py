"""Why no broker answers, read from librdkafka's client-wide errors (``kec.kafka``).

The texts are librdkafka's own, as its error callback hands them over; the table pins
the one line an operator reads for each. No broker needed.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from kec.kafka import Unreachable, unreachable

AFTER = " (after 3ms in state CONNECT)"


@pytest.mark.parametrize(
    ("code", "text", "cause", "line"),
    [
        (
            KafkaError._RESOLVE,
            "no-such-host.invalid:9092/bootstrap: Failed to resolve 'no-such-host.invalid:9092'"
            ": Name or service not known" + AFTER,
            "resolve",
            "name lookup failed for no-such-host.invalid:9092 (Name or service not known)",
        ),
        (
            KafkaError._TRANSPORT,
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused" + AFTER,
            "refused",
            "connection refused by 127.0.0.1:1 (no broker listens there)",
        ),
        (
            KafkaError._TRANSPORT,
            "10.0.0.9:9092/bootstrap: Connection setup timed out in state CONNECT"
            " (after 30029ms in state CONNECT)",
            "timeout",
            "timed out connecting to 10.0.0.9:9092 (Connection setup timed out in state CONNECT)",
        ),
        (
            KafkaError._AUTHENTICATION,
            "sasl_ssl://b1:9093/1: SASL authentication error: Authentication failed: Invalid "
            "username or password (after 12ms in state AUTH_REQ, 4 identical error(s) "
            "suppressed)",
            "auth",
            "authentication failed at b1:9093: SASL authentication error: Authentication "
            "failed: Invalid username or password (check the SASL settings)",
        ),
        (
            KafkaError._TRANSPORT,
            "ssl://127.0.0.1:9092/bootstrap: SSL handshake failed: Disconnected: SSL connection "
            "closed by peer: connecting to a PLAINTEXT broker listener?" + AFTER,
            "tls",
            "TLS failed with 127.0.0.1:9092: SSL handshake failed: Disconnected: SSL connection "
            "closed by peer: connecting to a PLAINTEXT broker listener? (check "
            "security_protocol and the SSL settings)",
        ),
        (
            KafkaError._TRANSPORT,
            "127.0.0.1:9093/bootstrap: Disconnected while requesting ApiVersion: might be "
            "caused by incorrect security.protocol configuration (connecting to a SSL "
            "listener?) or broker version is < 0.10 (see api.version.request)" + AFTER,
            "closed",
            "127.0.0.1:9093 closed the connection: Disconnected while requesting ApiVersion: "
            "might be caused by incorrect security.protocol configuration (connecting to a SSL "
            "listener?) or broker version is < 0.10 (see api.version.request)",
        ),
        (
            KafkaError._BAD_MSG,
            "web:80/bootstrap: Receive failed: Invalid response size 1213486160 "
            "(0..100000000): increase receive.message.max.bytes" + AFTER,
            "not-kafka",
            "web:80 is not a Kafka broker: it answers like an HTTP server",
        ),
        (
            KafkaError._TRANSPORT,
            "10.1.1.1:9092/bootstrap: Connect to ipv4#10.1.1.1:9092 failed: No route to host"
            + AFTER,
            "network",
            "no network path to 10.1.1.1:9092 (Connect to ipv4#10.1.1.1:9092 failed: No route "
            "to host)",
        ),
        (
            KafkaError._ALL_BROKERS_DOWN,
            "1/1 brokers are down",
            "down",
            "no broker is up (1/1 brokers are down)",
        ),
    ],
)
def test_each_reason_is_one_line(code: int, text: str, cause: str, line: str) -> None:
    found = unreachable(KafkaError(code, text))
    assert found is not None
    assert found.cause == cause
    assert str(found) == line
    assert found.definite == (cause != "down")


@pytest.mark.parametrize(
    "code",
    [KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF, KafkaError.NOT_COORDINATOR],
)
def test_errors_about_something_else_are_not_reasons(code: int) -> None:
    assert unreachable(KafkaError(code, "b:9092/1: something")) is None


def test_a_text_without_a_broker_keeps_all_of_it() -> None:
    found = unreachable(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    assert found == Unreachable("refused", "", "Connection refused")
