"""One ownership registry shared by the pipeline and the dispatcher
(:mod:`connector.common.ownership`), against a real broker and a real PostgreSQL store.

Another instance claims a partition in the store (its epoch moves on) while this one
still has it assigned by Kafka. The dispatcher finds out first, when it reads the owner
epochs back; the pipeline must then stop reading that partition at once, not only when a
batch of it is refused by the store, and keep reading the partitions it still owns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from checkpoint import open_store
from connector.pipeline import PipelineSettings
from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from connector.service import ConnectorService
from connector.targets.base import Target
from kec.action import Action
from kec.codec import record_headers, record_value
from kec.event import Event
from tests.support import wait_for

pytestmark = pytest.mark.integration

_RULES = [
    Rule.model_validate(
        {"name": "each", "namespace": "shop", "key": "*", "action": "start", "workflow": "w"}
    )
]


class Recorder(Target):
    """Records each delivery's event key."""

    name = "log"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: list[str] = []

    def deliver(self, action: Action) -> None:
        with self.lock:
            self.keys.append(action.event_key)

    def delivered(self) -> set[str]:
        with self.lock:
            return set(self.keys)


def _produce(bootstrap: str, topic: str, partition: int, keys: list[str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key in keys:
        event = Event(key=key, value="v", namespace="shop")
        producer.produce(
            topic,
            key=key,
            value=record_value(event),
            headers=record_headers(event),
            partition=partition,
        )
    assert producer.flush(30) == 0


def test_a_partition_the_dispatcher_finds_fenced_is_no_longer_read(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    pg_store_url: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = new_topic(2)
    url = pg_store_url()
    lost, kept = (topic, 0), (topic, 1)
    settings = PipelineSettings(
        bootstrap, group_id, {topic: "shop"}, linger_ms=20, idle_interval=3600
    )
    target = Recorder()
    service = ConnectorService(settings, open_store(url), TriggerEngine(_RULES), {"log": target})
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run(stop)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    caplog.set_level(logging.INFO)
    thread.start()
    try:
        _produce(bootstrap, topic, 0, ["a0", "a1"])
        _produce(bootstrap, topic, 1, ["b0", "b1"])
        wait_for(
            lambda: target.delivered() == {"a0", "a1", "b0", "b1"},
            timeout=90,
            what="the first four actions",
        )
        pipeline = service.pipeline
        assert pipeline is not None and set(pipeline.owned) == {lost, kept}
        checkpointed = pipeline.stats.records

        with open_store(url) as other:  # another instance takes partition 0 in the store
            epoch = other.claim("other-instance", [lost])[lost].epoch
            assert epoch > pipeline.owned[lost]

            # No record of partition 0 comes: only the dispatcher (reading the epochs
            # back every 2 s) can find out; the pipeline must hear it from the registry.
            # The registry drops it from `owned` as the dispatcher marks it; the pipeline
            # lets it go (and says so) at its next loop: wait for that line, not only
            # for the registry.
            def told() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "the dispatcher found" in r.getMessage()]

            wait_for(
                lambda: lost not in pipeline.owned and told(),
                timeout=15,
                what="the pipeline to let the fenced partition go",
            )
            assert kept in pipeline.owned
            assert pipeline.stats.records == checkpointed, "no batch was needed to learn it"
            lines = told()
            assert len(lines) == 1 and "[0]" in lines[0].getMessage(), lines

            # Records of both partitions now: the pipeline reads partition 1 and leaves
            # partition 0 alone (nothing of it checkpointed, no batch of it refused).
            _produce(bootstrap, topic, 0, ["a2"])
            _produce(bootstrap, topic, 1, ["b2"])
            wait_for(lambda: "b2" in target.delivered(), timeout=60, what="b2 delivered")
            assert "a2" not in target.delivered()
            assert other.next_offsets()[lost] == 2, "partition 0 stays where it was fenced"
            assert other.next_offsets()[kept] == 3
            refused = [r for r in caplog.records if "this instance stops touching" in r.message]
            assert not refused, "the store had to refuse a batch of the fenced partition"
            assert pipeline.stats.failed_batches == 0
    finally:
        stop.set()
        thread.join(60)
    assert not failure, failure
