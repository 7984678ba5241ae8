"""QueueEventListener against a real broker: Ray's poll / checkpoint / commit protocol.

Every call uses a fresh listener instance, as Ray does; some run in other processes
(``python -c`` children configured through the environment), one of which is killed
with SIGKILL between the store checkpoint and the Kafka commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # (confluent_kafka.admin does not re-export it)

from checkpoint import open_store
from kec.codec import record_headers, record_value
from kec.errors import DecodeError
from kec.event import CONTENT_BINARY, H_CONTENT_TYPE, Event
from listeners import kafka
from listeners.kafka import QueueEventListener
from tests.support import read_topic

ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0  # bound on any single wait in these tests; never reached when things work

# The other process of a test. Its configuration comes from its environment only.
CHILD = textwrap.dedent(
    """
    import asyncio, os, pickle, sys
    if "KEC_CONFIG" in os.environ:  # the connector's file: its own listener reads it
        from connector.queue_listener import QueueEventListener
    else:
        from listeners.kafka import QueueEventListener

    mode, topic = sys.argv[1], sys.argv[2]
    if mode == "poll":
        event = asyncio.run(QueueEventListener().poll_for_event(topic, timeout=60))
        print(event.to_json(), flush=True)
    elif mode == "commit":
        event = pickle.loads(sys.stdin.buffer.read())
        asyncio.run(QueueEventListener().event_checkpointed(event))
    elif mode == "checkpoint-then-hang":
        from checkpoint import open_store

        event = asyncio.run(QueueEventListener().poll_for_event(topic, timeout=60))
        store = open_store(sys.argv[3])
        store.open()
        assert store.put_step("wf-1/order", event) == event
        print(event.to_json(), flush=True)  # durable now; event_checkpointed never runs
        sys.stdin.read()
    """
)


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
def configured(bootstrap: str, group_id: str) -> Iterator[kafka.KafkaSettings]:
    settings = kafka.configure(bootstrap_servers=bootstrap, group_id=group_id)
    yield settings
    kafka.reset_configuration()


@pytest.fixture
def producer(bootstrap: str) -> Iterator[Producer]:
    made = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    yield made
    made.flush(30)
    made.close()


def send(producer: Producer, topic: str, events: list[Event], partition: int = -1) -> list[Event]:
    """Produce ``events`` the way our clients do; return them with their coordinates."""
    placed: dict[str, tuple[int, int]] = {}

    def on_delivery(event_id: str) -> Callable[[KafkaError | None, Message], None]:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            placed[event_id] = (partition, offset)

        return delivered

    for event in events:
        producer.produce(
            topic,
            key=event.key.encode(),
            value=record_value(event),
            headers=list[tuple[str, str | bytes | None]](record_headers(event)),
            timestamp=event.create_time,
            partition=partition,
            on_delivery=on_delivery(event.event_id),
        )
    assert producer.flush(30) == 0
    return [e.with_coordinates(topic, *placed[e.event_id]) for e in events]


def events(count: int, keys: int = 4, prefix: str = "e") -> list[Event]:
    return [
        Event(key=f"k{i % keys}", value=f"{prefix}{i}", event_id=f"{prefix}{i}")
        for i in range(count)
    ]


def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> dict[int, int]:
    """The group's committed offset per partition (OFFSET_INVALID when none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


async def poll(topic: str, namespace: str | None = None) -> Event:
    return await QueueEventListener().poll_for_event(topic, timeout=WAIT, namespace=namespace)


async def checkpointed(event: Event) -> None:
    await QueueEventListener().event_checkpointed(event)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition()`` holds; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def listener_threads(topic: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith(f"-{topic}")]


def child_env(**settings: str) -> dict[str, str]:
    own = {kafka.ENV_CONFIG, kafka.ENV_BOOTSTRAP, kafka.ENV_GROUP, kafka.ENV_DEAD_LETTER_TOPIC}
    env = {k: v for k, v in os.environ.items() if k not in own}
    env["PYTHONPATH"] = str(ROOT)
    env.update(settings)
    return env


async def start_child(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-W", "error", "-c", CHILD, *args,
        env=env, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def run_child(env: dict[str, str], *args: str, stdin: bytes = b"") -> str:
    proc = await start_child(env, *args)
    out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT)
    assert proc.returncode == 0, err.decode()
    return out.decode()


# -- polling and committing ----------------------------------------------------------


async def test_event_round_trips_through_kafka(
    configured: kafka.KafkaSettings, new_topic: Callable[..., str], producer: Producer
) -> None:
    topic = new_topic(1)
    sent = Event(
        key="order-7",
        value=b"\x00\xffbinary",
        namespace="shop",
        sender="billing",
        context="wf-run-3",
        event_type="order.paid",
        headers=(("trace", b"\x01\x02"),),
        create_time=1_700_000_000_123,
    )
    [placed] = send(producer, topic, [sent])
    received = await poll(topic)
    assert received == placed
    assert received.event_id == sent.event_id  # the producer's id, not the coordinates


async def test_record_without_headers_gets_coordinates_and_the_given_namespace(
    configured: kafka.KafkaSettings, new_topic: Callable[..., str], producer: Producer
) -> None:
    topic = new_topic(1)
    producer.produce(topic, key=b"k", value=b"plain")
    assert producer.flush(30) == 0
    event = await poll(topic, namespace="payments")
    assert (event.key, event.value, event.namespace) == ("k", "plain", "payments")
    assert event.event_id == f"{topic}/0/0"


async def test_records_come_in_partition_order_and_checkpoints_advance(
    configured: kafka.KafkaSettings,
    new_topic: Callable[..., str],
    producer: Producer,
    bootstrap: str,
    group_id: str,
) -> None:
    topic = new_topic(3)
    sent = send(producer, topic, events(15, keys=5))
    got: list[Event] = []
    for _ in sent:
        event = await poll(topic)
        await checkpointed(event)
        got.append(event)
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in sent)
    assert {e.event_id: e for e in got} == {e.event_id: e for e in sent}
    offsets: dict[int, list[int]] = defaultdict(list)
    for e in got:
        assert e.partition is not None and e.offset is not None
        offsets[e.partition].append(e.offset)
    assert all(seen == list(range(len(seen))) for seen in offsets.values()), offsets
    values_by_key: dict[str, list[str]] = defaultdict(list)
    for e in got:
        values_by_key[e.key].append(e.text)
    assert all(v == sorted(v, key=lambda s: int(s[1:])) for v in values_by_key.values())
    assert committed(bootstrap, group_id, topic, 3) == {p: len(o) for p, o in offsets.items()}
    with pytest.raises(TimeoutError, match=topic):
        await QueueEventListener().poll_for_event(topic, timeout=0.5)


async def test_without_checkpoint_the_same_event_comes_again_then_the_next(
    configured: kafka.KafkaSettings, new_topic: Callable[..., str], producer: Producer
) -> None:
    topic = new_topic(1)
    first, second = send(producer, topic, events(2))
    assert await poll(topic) == first
    assert await poll(topic) == first  # nothing committed: still the group's next record
    await checkpointed(first)
    assert await poll(topic) == second


async def test_checkpointed_twice_is_harmless(
    configured: kafka.KafkaSettings,
    new_topic: Callable[..., str],
    producer: Producer,
    bootstrap: str,
    group_id: str,
) -> None:
    topic = new_topic(1)
    send(producer, topic, events(3))
    event = await poll(topic)
    await checkpointed(event)
    await checkpointed(event)
    assert committed(bootstrap, group_id, topic) == {0: 1}
    assert (await poll(topic)).offset == 1


async def test_an_older_offset_never_moves_the_commit_back(
    configured: kafka.KafkaSettings,
    new_topic: Callable[..., str],
    producer: Producer,
    bootstrap: str,
    group_id: str,
) -> None:
    topic = new_topic(1)
    sent = send(producer, topic, events(4))
    await checkpointed(sent[2])  # commit 3: records 0..2 are done
    assert committed(bootstrap, group_id, topic) == {0: 3}
    await checkpointed(sent[0])  # a stale call (e.g. Ray replaying an old step)
    await checkpointed(sent[2])
    assert committed(bootstrap, group_id, topic) == {0: 3}
    assert await poll(topic) == sent[3]


async def test_read_committed_skips_aborted_transactions(
    configured: kafka.KafkaSettings, new_topic: Callable[..., str], bootstrap: str
) -> None:
    topic = new_topic(1)
    tx = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}"})
    try:
        tx.init_transactions(30)
        tx.begin_transaction()
        tx.produce(topic, key=b"k", value=b"aborted")
        assert tx.flush(30) == 0  # in the log, then aborted
        tx.abort_transaction(30)
        tx.begin_transaction()
        tx.produce(topic, key=b"k", value=b"committed")
        tx.commit_transaction(30)
    finally:
        tx.close()
    event = await poll(topic)
    assert event.value == "committed"
    await checkpointed(event)
    with pytest.raises(TimeoutError):  # the commit marker after it is not an event
        await QueueEventListener().poll_for_event(topic, timeout=0.5)


async def test_undecodable_record_raises_and_is_not_skipped(
    configured: kafka.KafkaSettings,
    new_topic: Callable[..., str],
    producer: Producer,
    bootstrap: str,
    group_id: str,
) -> None:
    topic = new_topic(1)
    producer.produce(topic, key=b"k", value=b"\xff\xfe", headers=[(H_CONTENT_TYPE, b"text/plain")])
    producer.produce(topic, key=b"k", value=b"\xff\xfe", headers=[(H_CONTENT_TYPE, CONTENT_BINARY)])
    assert producer.flush(30) == 0
    for _ in range(2):
        with pytest.raises(DecodeError, match=rf"record {topic}\[0\]@0 is not an event"):
            await poll(topic)
    assert committed(bootstrap, group_id, topic) == {0: OFFSET_INVALID}


# Records that are not events, each for its own reason (kec.codec's messages).
HOSTILE: list[tuple[bytes | None, bytes, list[tuple[str, bytes]], str]] = [
    (b"k", b"\xff\xfe", [(H_CONTENT_TYPE, b"text/plain")], "UTF-8"),
    (None, b"no key", [], "key"),
    (b"k", b"{not json", [(H_CONTENT_TYPE, b"application/json")], "JSON"),
]


async def test_with_a_dead_letter_topic_poison_is_copied_committed_past_and_skipped(
    bootstrap: str,
    new_topic: Callable[..., str],
    producer: Producer,
    group_id: str,
) -> None:
    """Each hostile record goes to the dead-letter topic with its reason and source, the
    group's offset moves past it, and the polls return the events around it in order."""
    topic, dlq = new_topic(2), new_topic(1, prefix="dlq")
    kafka.configure(bootstrap_servers=bootstrap, group_id=group_id, dead_letter_topic=dlq)
    try:
        good: list[Event] = []
        for partition in (0, 1):  # per partition: event, the hostile ones, event
            first = events(1, prefix=f"p{partition}a")
            good += send(producer, topic, first, partition=partition)
            for key, value, headers, _ in HOSTILE:
                producer.produce(topic, key=key, value=value, headers=headers, partition=partition)
            assert producer.flush(30) == 0
            good += send(producer, topic, events(1, prefix=f"p{partition}b"), partition=partition)

        got: list[Event] = []
        for _ in good:
            event = await poll(topic)
            await checkpointed(event)
            got.append(event)
        with pytest.raises(TimeoutError):  # nothing else is an event
            await QueueEventListener().poll_for_event(topic, timeout=1.0)
    finally:
        kafka.reset_configuration()

    by_partition = defaultdict(list)
    for event in got:
        assert event.coordinates is not None
        by_partition[event.coordinates[1]].append(event.event_id)
    assert dict(by_partition) == {p: [f"p{p}a0", f"p{p}b0"] for p in (0, 1)}
    assert committed(bootstrap, group_id, topic, partitions=2) == {0: 5, 1: 5}

    copies = read_topic(bootstrap, dlq, 2 * len(HOSTILE))
    assert len(copies) == 2 * len(HOSTILE)
    sources = set()
    for msg in copies:
        headers = dict(msg.headers() or ())
        assert headers["source-topic"] == topic.encode()
        where = (int(headers["source-partition"]), int(headers["source-offset"]))
        sources.add(where)
        key, value, _, reason = HOSTILE[where[1] - 1]
        assert (msg.key(), msg.value()) == (key, value)
        assert reason.encode() in headers["error"], headers["error"]
    assert sources == {(p, o) for p in (0, 1) for o in (1, 2, 3)}


async def test_a_poll_configured_by_environment_dead_letters_through_its_variable(
    bootstrap: str, new_topic: Callable[..., str], producer: Producer, group_id: str
) -> None:
    topic, dlq = new_topic(1), new_topic(1, prefix="dlq")
    key, value, headers, _ = HOSTILE[0]
    producer.produce(topic, key=key, value=value, headers=headers)
    (event,) = send(producer, topic, events(1))
    env = child_env(
        **{
            kafka.ENV_BOOTSTRAP: bootstrap,
            kafka.ENV_GROUP: group_id,
            kafka.ENV_DEAD_LETTER_TOPIC: dlq,
        }
    )
    out = await run_child(env, "poll", topic)
    assert Event.from_json(out.strip()).event_id == event.event_id
    assert committed(bootstrap, group_id, topic) == {0: 1}  # past the copy, not the event
    (copy,) = read_topic(bootstrap, dlq, 1)
    assert copy.value() == value


async def test_a_topic_that_does_not_exist_yet_is_waited_for(
    configured: kafka.KafkaSettings, admin: AdminClient, producer: Producer, group_id: str
) -> None:
    topic = f"later-{group_id}"
    with pytest.raises(TimeoutError, match=f"topic '{topic}' does not exist"):
        await QueueEventListener().poll_for_event(topic, timeout=0.5)
    waiting = asyncio.create_task(poll(topic))
    await eventually(lambda: bool(listener_threads(topic)), "the poll's thread")
    await asyncio.to_thread(admin.create_topics([NewTopic(topic, 1, 1)])[topic].result, 30)
    try:
        [sent] = await asyncio.to_thread(send, producer, topic, events(1))
        assert await asyncio.wait_for(waiting, WAIT) == sent
    finally:
        admin.delete_topics([topic])[topic].result(30)


# -- the event loop ------------------------------------------------------------------


async def test_the_loop_keeps_running_while_a_poll_waits(
    configured: kafka.KafkaSettings, new_topic: Callable[..., str], producer: Producer
) -> None:
    topic = new_topic(1)
    waiting = asyncio.create_task(poll(topic))
    await eventually(lambda: bool(listener_threads(topic)), "the poll's thread")
    ticks = 0
    while ticks < 50:  # other work runs while librdkafka blocks in the poll's thread
        await asyncio.sleep(0.005)
        ticks += 1
        assert not waiting.done(), waiting
    [sent] = await asyncio.to_thread(send, producer, topic, events(1))
    assert await asyncio.wait_for(waiting, WAIT) == sent


async def test_cancelled_poll_closes_its_consumer_and_consumes_nothing(
    configured: kafka.KafkaSettings, new_topic: Callable[..., str], producer: Producer
) -> None:
    topic = new_topic(1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await QueueEventListener().poll_for_event(topic)
    # The consumer was closed before the cancellation completed; the thread ends with it.
    await eventually(lambda: not listener_threads(topic), "the poll's thread to end")
    [sent] = send(producer, topic, events(1))
    assert await poll(topic) == sent


# -- other instances, other processes ------------------------------------------------


async def test_poll_and_commit_in_different_processes(
    configured: kafka.KafkaSettings,
    new_topic: Callable[..., str],
    producer: Producer,
    bootstrap: str,
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic(1)
    first, second, third = send(producer, topic, events(3))

    # Polled in a child configured by KAFKA_BOOTSTRAP_SERVERS + KEC_GROUP_ID, committed here.
    by_env = child_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, KEC_GROUP_ID=group_id)
    polled = Event.from_json(await run_child(by_env, "poll", topic))
    assert polled == first
    await checkpointed(polled)
    assert committed(bootstrap, group_id, topic) == {0: 1}

    # Polled here, committed in a child configured by KEC_CONFIG, the event pickled.
    config = tmp_path / "connector.yaml"
    config.write_text(
        f"kafka:\n  bootstrap_servers: {bootstrap}\n"
        f"listener_group_id: {group_id}\nnamespaces: {{default: {{}}}}\n"
    )
    event = await poll(topic)
    assert event == second
    await run_child(child_env(KEC_CONFIG=str(config)), "commit", topic, stdin=pickle.dumps(event))
    assert committed(bootstrap, group_id, topic) == {0: 2}
    assert await poll(topic) == third


async def test_crash_after_store_checkpoint_before_commit_redelivers_and_dedups(
    configured: kafka.KafkaSettings,
    new_topic: Callable[..., str],
    producer: Producer,
    bootstrap: str,
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic(1)
    first, second = send(producer, topic, events(2))
    url = "sqlite:///" + str(tmp_path / "store.db")
    env = child_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, KEC_GROUP_ID=group_id)
    child = await start_child(env, "checkpoint-then-hang", topic, url)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), WAIT)
        assert line, (await child.communicate())[1].decode()
        in_store = Event.from_json(line)
    finally:
        with contextlib.suppress(ProcessLookupError):  # (already gone if it failed)
            child.send_signal(signal.SIGKILL)  # after the checkpoint, before the commit
        await child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert in_store == first
    assert committed(bootstrap, group_id, topic) == {0: OFFSET_INVALID}

    again = await poll(topic)  # a new process and instance: the same record again
    assert again == first and again.event_id == in_store.event_id
    with open_store(url) as store:
        assert store.get_step("wf-1/order") == first
        assert store.put_step("wf-1/order", again) == first  # the step keeps its event
    await checkpointed(again)
    assert committed(bootstrap, group_id, topic) == {0: 1}
    assert await poll(topic) == second
