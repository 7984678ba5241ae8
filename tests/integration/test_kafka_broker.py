"""The broker every other test relies on: idempotent writes, manual commits, transactions."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from tests.support import wait_for

RECORDS = 1_000
KEYS = 37


def _consumer(bootstrap: str, group: str, **extra: object) -> Consumer:
    conf: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **extra,
    }
    return Consumer(conf)


def _drain(consumer: Consumer, count: int, timeout: float = 60.0) -> list[Message]:
    got: list[Message] = []

    def more() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None:
            assert msg.error() is None, msg.error()
            got.append(msg)
        return len(got) >= count

    wait_for(more, timeout=timeout, interval=0, what=f"{count} records")
    return got


def test_idempotent_produce_manual_commit_resume(
    bootstrap: str, new_topic: Callable[..., str], group_id: str
) -> None:
    topic = new_topic(3)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i in range(RECORDS):
        producer.produce(topic, key=f"k{i % KEYS}", value=str(i))
    assert producer.flush(30) == 0

    first = _consumer(bootstrap, group_id)
    first.subscribe([topic])
    records = _drain(first, RECORDS)
    assert len({(m.partition(), m.offset()) for m in records}) == RECORDS
    assert {m.partition() for m in records} == {0, 1, 2}
    per_key: dict[bytes, list[int]] = defaultdict(list)
    for m in records:
        per_key[m.key()].append(int(m.value()))
    assert all(values == sorted(values) for values in per_key.values()), "per-key order"

    # Commit a point in the middle of each partition: the next consumer must start there.
    by_partition: dict[int, list[Message]] = defaultdict(list)
    for m in records:
        by_partition[m.partition()].append(m)
    commit_at = {p: msgs[len(msgs) // 2].offset() for p, msgs in by_partition.items()}
    first.commit(
        offsets=[TopicPartition(topic, p, off) for p, off in commit_at.items()],
        asynchronous=False,
    )
    committed = first.committed([TopicPartition(topic, p) for p in commit_at], timeout=10)
    assert {tp.partition: tp.offset for tp in committed} == commit_at
    first.close()

    second = _consumer(bootstrap, group_id)
    second.subscribe([topic])
    remaining = sum(len(msgs) - len(msgs) // 2 for msgs in by_partition.values())
    rest = _drain(second, remaining)
    second.close()
    starts: dict[int, int] = {}
    for m in rest:
        starts.setdefault(m.partition(), m.offset())
    assert starts == commit_at
    expected = {(p, m.offset()) for p, msgs in by_partition.items() for m in msgs[len(msgs) // 2 :]}
    assert {(m.partition(), m.offset()) for m in rest} == expected


def test_transactions_commit_visible_abort_invisible(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(1)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, key="k", value=f"committed-{i}")
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, key="k", value=f"aborted-{i}")
    # Flush first: librdkafka purges unsent records on abort, and this test wants aborted
    # records that really reached the log.
    assert producer.flush(30) == 0
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key="k", value="last")
    producer.commit_transaction(30)

    def values(isolation: str, count: int) -> list[str]:
        consumer = _consumer(bootstrap, f"g-{uuid.uuid4().hex}", **{"isolation.level": isolation})
        consumer.subscribe([topic])
        try:
            return [m.value().decode() for m in _drain(consumer, count)]
        finally:
            consumer.close()

    committed = values("read_committed", 11)
    assert committed == [f"committed-{i}" for i in range(10)] + ["last"]
    # The aborted records are really in the log: a read_uncommitted reader sees them.
    uncommitted = values("read_uncommitted", 21)
    assert [v for v in uncommitted if v.startswith("aborted")] == [
        f"aborted-{i}" for i in range(10)
    ]
