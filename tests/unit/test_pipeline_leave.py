"""A deliberate stop waits for the consumer to leave its group for at most
``LEAVE_TIMEOUT`` beyond the pipeline's own last revoke.

librdkafka's ``close()`` can wait out a rebalance that a gone static member holds up (its
whole session); everything is committed by then, so the stop goes on without it. The
consumer here is a stand-in whose ``close()`` blocks until the test lets it go and then
runs the last revoke, as librdkafka does: what is under test is the bound, not Kafka.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from checkpoint import open_store
from connector.pipeline import pipeline as pipeline_module
from connector.pipeline.pipeline import Pipeline, PipelineSettings, Undispatched
from kec.evaluation import NotifyAll


class _Leaving:
    """A consumer whose ``close()`` waits for ``group_done``, then runs the revoke
    callback, whose unassign waits for ``revoke_done``."""

    def __init__(self) -> None:
        self.on_revoke: Any = None
        self.group_done = threading.Event()
        self.revoke_started = threading.Event()
        self.revoke_done = threading.Event()
        self.closed = threading.Event()
        self.unassigned: list[list[TopicPartition]] = []

    def close(self) -> None:
        self.group_done.wait(30)
        self.on_revoke(self, [TopicPartition("t", 0)])
        self.closed.set()

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        self.revoke_started.set()
        self.revoke_done.wait(30)
        self.unassigned.append(partitions)


@pytest.fixture
def leaving(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(pipeline_module, "LEAVE_TIMEOUT", 0.2)
    with open_store("memory://") as store:
        pipeline = Pipeline(
            PipelineSettings("127.0.0.1:1", "g", {"t": "ns"}), store, NotifyAll("log"),
            Undispatched(),
        )  # fmt: skip
        consumer = _Leaving()
        consumer.on_revoke = pipeline._on_revoke
        pipeline._consumer = consumer  # type: ignore[assignment]
        yield pipeline, consumer
        consumer.group_done.set()
        consumer.revoke_done.set()


def _close_in_thread(pipeline: Pipeline) -> threading.Thread:
    thread = threading.Thread(target=pipeline.close, daemon=True)
    thread.start()
    return thread


def test_a_close_held_up_by_the_group_is_left_behind_and_its_late_revoke_skipped(
    leaving: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline, consumer = leaving
    with caplog.at_level(logging.WARNING, "connector.pipeline.pipeline"):
        thread = _close_in_thread(pipeline)
        thread.join(10)
        assert not thread.is_alive(), "close() returned while the group still held it"
    assert "did not leave group g within 0.2s" in caplog.text
    consumer.group_done.set()
    consumer.revoke_done.set()
    assert consumer.closed.wait(10)
    assert consumer.unassigned == [], "the abandoned close's revoke did nothing"


def test_the_pipelines_own_last_revoke_is_waited_for_however_long(leaving: Any) -> None:
    pipeline, consumer = leaving
    consumer.group_done.set()
    thread = _close_in_thread(pipeline)
    assert consumer.revoke_started.wait(10)
    thread.join(1.0)  # five times the bound
    assert thread.is_alive(), "close() waits while the revoke settles its partitions"
    consumer.revoke_done.set()
    thread.join(10)
    assert not thread.is_alive()
    assert [[(p.topic, p.partition) for p in ps] for ps in consumer.unassigned] == [[("t", 0)]]
