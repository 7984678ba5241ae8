"""kec.kafka: the one policy for user properties, and librdkafka's lines kept readable."""

from __future__ import annotations

import logging

import pytest

from kec import kafka
from kec.errors import ConfigError


def test_properties_may_repeat_a_fixed_setting_not_change_it() -> None:
    same = kafka.fixed({"acks": "-1", "enable.idempotence": True}, kafka.PRODUCER_FIXED)
    assert same["acks"] == "all" and same["enable.idempotence"] == "true"
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit='true' is not allowed"):
        kafka.fixed({"enable.auto.commit": "true"}, kafka.CONSUMER_FIXED)
    with pytest.raises(ConfigError, match="acks"):
        kafka.fixed({"request.required.acks": 1}, kafka.PRODUCER_FIXED)
    assert kafka.PIPELINE_FIXED["partition.assignment.strategy"] == "cooperative-sticky"


def test_the_config_file_refuses_a_property_that_breaks_exactly_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from connector.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        "kafka:\n  bootstrap_servers: b:9092\n  properties: {isolation.level: read_uncommitted}\n"
        "namespaces: {default: {}}\n"
    )
    with pytest.raises(ConfigError, match=r"c.yaml:3 kafka.properties: .*isolation.level"):
        load_config(path)


def test_the_same_librdkafka_line_is_held_back_and_counted() -> None:
    now = [0.0]
    quiet = kafka.clients._Quieter(clock=lambda: now[0])

    def line(text: str) -> logging.LogRecord:
        return logging.LogRecord("kec.librdkafka", logging.ERROR, __file__, 1, text, (), None)

    assert quiet.filter(line("FAIL 127.0.0.1:9/bootstrap: Connect failed (after 0ms)"))
    for ms in range(1, 50):
        now[0] += 0.5
        assert not quiet.filter(line(f"FAIL 127.0.0.1:9/bootstrap: Connect failed (after {ms}ms)"))
    assert quiet.filter(line("another line"))
    now[0] += kafka.clients.LOG_EVERY
    again = line("FAIL 127.0.0.1:9/bootstrap: Connect failed (after 3ms)")
    assert quiet.filter(again)
    assert again.getMessage().endswith("(49 more like it in 54s)")  # 49 x 0.5 s, then 30 s


def test_a_consumer_property_is_no_warning_for_a_producer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kafka.properties reach every client: a real producer given a consumer's setting
    says so at DEBUG only; librdkafka's other configuration warnings stay warnings."""
    caplog.set_level(logging.INFO, logger="kec.librdkafka")
    producer = kafka.producer({"bootstrap.servers": "127.0.0.1:9", "session.timeout.ms": 6000})
    producer.poll(0)  # librdkafka's lines are served by poll
    assert not [r for r in caplog.records if "session.timeout.ms" in r.getMessage()]
    caplog.set_level(logging.DEBUG, logger="kec.librdkafka")
    producer = kafka.producer({"bootstrap.servers": "127.0.0.1:9", "heartbeat.interval.ms": 500})
    producer.poll(0)
    said = [r for r in caplog.records if "heartbeat.interval.ms" in r.getMessage()]
    assert said and {r.levelname for r in said} == {"DEBUG"}
    other = logging.LogRecord(
        "kec.librdkafka", logging.WARNING, __file__, 1,
        "CONFWARN [rdkafka#producer-1] [thrd:app]: Configuration property x is deprecated",
        (), None,
    )  # fmt: skip
    assert kafka.clients._SharedProperties().filter(other) and other.levelname == "WARNING"


def test_a_connection_is_the_servers_and_the_other_properties() -> None:
    conn = kafka.Connection.of({"bootstrap.servers": "b:1", "sasl.password": "s3cret"})
    assert conn.bootstrap_servers == "b:1"
    assert conn.properties == {"sasl.password": "s3cret"}
    assert conn.client_config() == {"bootstrap.servers": "b:1", "sasl.password": "s3cret"}
    assert "s3cret" not in repr(conn) and "sasl.password" in repr(conn)
    more = conn.with_properties({"client.rack": "a"})
    assert more.client_config()["client.rack"] == "a" and "client.rack" not in conn.properties


def test_a_connection_refuses_missing_or_doubled_servers() -> None:
    with pytest.raises(ConfigError, match="bootstrap servers"):
        kafka.Connection(" ")
    with pytest.raises(ConfigError, match=r"name no bootstrap\.servers"):
        kafka.Connection.of({"client.rack": "a"})
    with pytest.raises(ConfigError, match="not as a property"):
        kafka.Connection("b:1", {"bootstrap.servers": "c:2"})
