"""``run`` waits out a broker it cannot reach yet, and not settings Kafka refuses
(connector.cli._once_kafka_answers; the real broker case: tests/integration/test_kafka_reach.py)."""

from __future__ import annotations

import logging
import threading

import pytest

from connector import cli
from kec.errors import BrokerUnavailable, KafkaMisconfigured


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "KAFKA_RETRY_SECONDS", 0.001)


def test_an_unreachable_broker_is_tried_again_until_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries: list[int] = []

    def step() -> None:
        tries.append(1)
        if len(tries) < 4:
            raise BrokerUnavailable("cannot reach Kafka at k:9092: connection refused by k:9092")

    with caplog.at_level(logging.INFO, logger="connector.cli"):
        cli._once_kafka_answers(step, threading.Event())
    assert len(tries) == 4
    said = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("waiting for Kafka: cannot reach Kafka at k:9092") for m in said) == 1
    assert any(m.startswith("Kafka answers after ") for m in said)


def test_settings_kafka_refuses_are_not_waited_for() -> None:
    tries: list[int] = []

    def step() -> None:
        tries.append(1)
        raise KafkaMisconfigured("cannot reach Kafka at k:9093: authentication failed")

    with pytest.raises(KafkaMisconfigured):
        cli._once_kafka_answers(step, threading.Event())
    assert len(tries) == 1


def test_a_stop_ends_the_wait() -> None:
    stop = threading.Event()
    tries: list[int] = []

    def step() -> None:
        tries.append(1)
        if len(tries) == 3:
            stop.set()  # SIGTERM while waiting
        raise BrokerUnavailable("cannot reach Kafka at k:9092: no broker answered within 30s")

    cli._once_kafka_answers(step, stop)
    assert len(tries) == 3
