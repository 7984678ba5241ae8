"""The crash contract of a durable step (docs/architecture.md), with a real process and SIGKILL.

A child process runs ``wait_for_event(QueueEventListener, topic)`` against the broker with
a sqlite store and ``KEC_CRASH_AT=before_event_checkpointed``: it dies by SIGKILL after
the store holds the step and before the Kafka commit. Then:

* the group's committed offset has not moved (the record is still "next" in Kafka);
* running the same step again returns the same event (same ``event_id``) without polling
  a new one: a second record produced meanwhile stays unconsumed;
* and that re-run's ``event_checkpointed`` commits the first event's offset.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition

from checkpoint import open_store
from kec.codec import record_headers, record_value
from kec.event import Event
from tests.support import run_in_repo

SIGKILLED = -9


def _produce(bootstrap: str, topic: str, value: str) -> Event:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    event = Event(key="k", value=value)
    producer.produce(topic, key=event.key, value=record_value(event), headers=record_headers(event))
    assert producer.flush(30) == 0
    return event


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        return int(tp.offset)
    finally:
        consumer.close()


def _run_step(
    bootstrap: str, group: str, topic: str, store_url: str, step: str, crash_at: str | None
) -> subprocess.CompletedProcess[str]:
    return run_in_repo(
        "-m", "tests.chaos.step_runner", bootstrap, group, topic, store_url, step,
        drop={"KEC_CRASH_AT"},
        extra={"KEC_CRASH_AT": crash_at} if crash_at else None,
        timeout=120,
    )  # fmt: skip


def test_sigkill_before_event_checkpointed_resumes_the_same_event(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(1)
    group = f"step-crash-{uuid.uuid4().hex[:10]}"
    store_url = f"sqlite:///{tmp_path / 'steps.db'}"
    first = _produce(bootstrap, topic, "first")

    crashed = _run_step(bootstrap, group, topic, store_url, "s1", "before_event_checkpointed")
    assert crashed.returncode == SIGKILLED, crashed.stderr
    assert crashed.stdout == ""  # it died before returning the event
    with open_store(store_url) as store:
        stored = store.get_step("s1")
    assert stored is not None and stored.event_id == first.event_id
    assert stored.coordinates == (topic, 0, 0)
    # Checkpointed but not committed: Kafka still has the record as the group's next.
    assert _committed(bootstrap, group, topic) == OFFSET_INVALID

    second = _produce(bootstrap, topic, "second")
    resumed = _run_step(bootstrap, group, topic, store_url, "s1", None)
    assert resumed.returncode == 0, resumed.stderr
    event = Event.from_json(resumed.stdout.strip())
    assert event == stored
    assert event.event_id != second.event_id
    # The re-run committed the first event only: the second is still unconsumed.
    assert _committed(bootstrap, group, topic) == 1
    # ... and is what the next step gets.
    following = _run_step(bootstrap, group, topic, store_url, "s2", None)
    assert following.returncode == 0, following.stderr
    assert Event.from_json(following.stdout.strip()).event_id == second.event_id
    assert _committed(bootstrap, group, topic) == 2
