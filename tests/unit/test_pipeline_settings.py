"""The pipeline consumer's settings (no broker)."""

from __future__ import annotations

from connector.pipeline.pipeline import HEARTBEAT_MS, PipelineSettings


def test_the_pipeline_consumer_heartbeats_every_second_unless_told() -> None:
    # Kafka's 3 s made the second of two processes started together wait ~6 s for its
    # partitions (a cooperative rebalance is noticed at a heartbeat, and takes two).
    settings = PipelineSettings("b:9092", "g", {"t": "ns"})
    assert settings.consumer_config()["heartbeat.interval.ms"] == HEARTBEAT_MS == 1000
    told = PipelineSettings(
        "b:9092", "g", {"t": "ns"}, kafka_properties={"heartbeat.interval.ms": 250}
    )
    assert told.consumer_config()["heartbeat.interval.ms"] == 250


def test_session_timeout_is_kafkas_unless_set_and_a_property_wins() -> None:
    assert "session.timeout.ms" not in PipelineSettings("b:9092", "g", {}).consumer_config()
    settings = PipelineSettings("b:9092", "g", {}, session_timeout_ms=10_000)
    assert settings.consumer_config()["session.timeout.ms"] == 10_000
    both = PipelineSettings(
        "b:9092", "g", {}, session_timeout_ms=10_000, kafka_properties={"session.timeout.ms": 7000}
    )
    assert both.consumer_config()["session.timeout.ms"] == 7000


def test_the_pipeline_consumer_looks_for_recreated_topics_every_30s_unless_told() -> None:
    # A topic deleted and created again during a rebalance was assigned to nobody until
    # librdkafka's next metadata refresh (5 min): nemesis seed 162 waited 180 s in vain.
    settings = PipelineSettings("b:9092", "g", {"t": "ns"})
    assert settings.consumer_config()["topic.metadata.refresh.interval.ms"] == 30_000
    told = PipelineSettings(
        "b:9092", "g", {"t": "ns"}, kafka_properties={"topic.metadata.refresh.interval.ms": 5000}
    )
    assert told.consumer_config()["topic.metadata.refresh.interval.ms"] == 5000
