"""NotificationClient against a real broker: send_event, listeners, resume, start points."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.config import load_config
from connector.notification import (
    ENV_CONTEXT,
    ENV_NAMESPACE,
    ENV_SENDER,
    ListenerProcessor,
    NotificationClient,
)
from kec.codec import event_from_message
from kec.errors import ConfigError, KafkaClientError
from kec.event import Event
from tests.support import wait_for

MakeClient = Callable[..., NotificationClient]


class Counter(ListenerProcessor):
    """The seed's example processor."""

    def __init__(self) -> None:
        self.counter = 0

    def process(self, events: list[Event]) -> None:
        self.counter += len(events)


class Recorder(ListenerProcessor):
    """Keeps every batch it was offered; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.offered: list[list[str]] = []
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def process(self, events: list[Event]) -> None:
        with self._lock:
            self.offered.append([e.event_id for e in events])
            if self.failures:
                self.failures -= 1
                raise RuntimeError("processor failure on purpose")
            self.events.extend(events)

    @property
    def ids(self) -> list[str]:
        with self._lock:
            return [e.event_id for e in self.events]


def _name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_client(
    bootstrap: str, admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MakeClient]:
    """Factory of clients on a topic prefix of this test's own; all closed, topics deleted."""
    for var in (ENV_NAMESPACE, ENV_SENDER, ENV_CONTEXT):
        monkeypatch.delenv(var, raising=False)
    prefix = f"{_name('ev')}."
    clients: list[NotificationClient] = []

    def make(namespace: str | None = None, **options: Any) -> NotificationClient:
        options.setdefault("topic_prefix", prefix)
        options.setdefault("retry_backoff", 0.02)
        options.setdefault("retry_backoff_max", 0.1)
        client = NotificationClient(bootstrap, namespace, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if mine:
        for future in admin.delete_topics(mine).values():
            future.result(timeout=30)


def _caught_up(bootstrap: str, topic: str, group: str) -> None:
    """Wait until ``group`` has committed every partition of ``topic`` up to its end."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in parts]

        def done() -> bool:
            committed = {tp.partition: tp.offset for tp in probe.committed(tps, timeout=10)}
            ends = {p: probe.get_watermark_offsets(tp, timeout=10)[1] for p, tp in enumerate(tps)}
            return all(committed[p] == ends[p] for p in ends)

        wait_for(done, timeout=30, interval=0.1, what=f"group {group} at the end of {topic}")
    finally:
        probe.close()


def _read_back(bootstrap: str, sent: Event) -> Event:
    """The record at the sent event's coordinates, decoded."""
    assert sent.coordinates is not None
    topic, partition, offset = sent.coordinates
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": _name("g"), "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        msg = wait_for(lambda: consumer.poll(0.2), timeout=30, what="the sent record")
        assert msg is not None
        assert msg.error() is None, msg.error()
        return event_from_message(msg)
    finally:
        consumer.close()


def _thread_alive(listener_id: str) -> bool:
    return any(t.name == f"kec-listener-{listener_id}" for t in threading.enumerate())


# -- sending -----------------------------------------------------------------------------


def test_send_event_returns_acknowledged_event_whose_headers_round_trip(
    bootstrap: str, make_client: MakeClient
) -> None:
    ns = _name("ns")
    client = make_client(ns)
    sent = client.send_event(
        "model_ready",
        "This is a custom message.",
        sender="task1",
        context="exec-42",
        event_type="custom",
        event_id="evt-1",
    )
    assert sent.topic == client.topic_for(ns)
    assert sent.partition is not None
    assert sent.offset is not None
    assert sent.offset >= 0
    assert (sent.namespace, sent.sender, sent.context, sent.event_id) == (
        ns,
        "task1",
        "exec-42",
        "evt-1",
    )
    assert _read_back(bootstrap, sent) == sent

    binary = client.send_event("blob", b"\x00\xff")
    back = _read_back(bootstrap, binary)
    assert back.value == b"\x00\xff"
    assert back == binary
    assert binary.event_id != sent.event_id


def test_environment_fills_namespace_sender_and_context(
    bootstrap: str, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = _name("ns")
    monkeypatch.setenv(ENV_NAMESPACE, ns)
    monkeypatch.setenv(ENV_SENDER, "task-a")
    monkeypatch.setenv(ENV_CONTEXT, "exec-7")
    client = make_client()

    from_env = _read_back(bootstrap, client.send_event("k", "v"))
    assert (from_env.namespace, from_env.sender, from_env.context) == (ns, "task-a", "exec-7")
    explicit = client.send_event("k", "v", sender="task-b", context="exec-8")
    assert (explicit.sender, explicit.context) == ("task-b", "exec-8")


def test_missing_topic_is_an_error_when_creation_is_off(make_client: MakeClient) -> None:
    client = make_client(_name("ns"), create_topics=False)
    with pytest.raises(KafkaClientError, match="does not exist"):
        client.send_event("k", "v")
    with pytest.raises(KafkaClientError, match="does not exist"):
        client.register_listener(Counter(), ["k"])


def test_unreachable_broker_raises_a_kafka_error() -> None:
    with (
        NotificationClient("127.0.0.1:1", "ns", request_timeout=1.0) as client,
        pytest.raises(KafkaClientError),
    ):
        client.send_event("k", "v")


def test_close_is_idempotent_and_final(make_client: MakeClient) -> None:
    with make_client(_name("ns")) as client:
        assert client.send_event("k", "v").offset == 0
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.send_event("k", "v")


def test_arguments_are_checked_before_any_io(bootstrap: str) -> None:
    with pytest.raises(ConfigError, match="acks"):
        NotificationClient(bootstrap, producer_properties={"acks": "1"})
    client = NotificationClient(bootstrap, "ns")
    try:
        with pytest.raises(ValueError, match="not both"):
            client.register_listener(Counter(), ["k"], begin_offset=0, begin_time=1)
        with pytest.raises(ValueError, match="at least one"):
            client.register_listener(Counter(), [])
        with pytest.raises(ValueError, match="non-empty"):
            client.send_event("", "v")
        # What the pipeline would only send to the dead letters never leaves the client.
        with pytest.raises(ValueError, match="record key is 1025 bytes"):
            client.send_event("k" * 1025, "v")
        with pytest.raises(ValueError, match="'context' contains a NUL"):
            client.send_event("k", "v", context="a\x00b")
        with pytest.raises(ValueError, match="shape topic/partition/offset"):
            client.send_event("k", "v", event_id="orders/0/7")
    finally:
        client.close()


# -- listening ---------------------------------------------------------------------------


def test_counter_counts_only_its_keys_in_its_namespace(
    bootstrap: str, make_client: MakeClient
) -> None:
    ns_a, ns_b = _name("ns"), _name("ns")
    client = make_client(ns_a)
    counter_a, counter_b = Counter(), Counter()
    group_a, group_b = _name("g"), _name("g")
    lid_a = client.register_listener(counter_a, ["expect_key"], group_id=group_a)
    lid_b = client.register_listener(counter_b, ["expect_key"], ns_b, group_id=group_b)

    for i in range(5):
        client.send_event("expect_key", f"a{i}")
    for i in range(3):
        client.send_event(f"other_key{i}", "a")
    for i in range(4):
        client.send_event("expect_key", f"b{i}", namespace=ns_b)

    _caught_up(bootstrap, client.topic_for(ns_a), group_a)
    _caught_up(bootstrap, client.topic_for(ns_b), group_b)
    assert (counter_a.counter, counter_b.counter) == (5, 4)
    client.unregister_listener(lid_a)
    client.unregister_listener(lid_b)


def test_namespaces_sharing_a_topic_stay_apart(bootstrap: str, make_client: MakeClient) -> None:
    ns_a, ns_b, shared = _name("ns"), _name("ns"), _name("shared")
    client = make_client(ns_a, topics={ns_a: shared, ns_b: shared})
    rec_a, rec_b = Recorder(), Recorder()
    group_a, group_b = _name("g"), _name("g")
    client.register_listener(rec_a, ["k"], group_id=group_a)
    client.register_listener(rec_b, ["k"], ns_b, group_id=group_b)

    sent_a = [client.send_event("k", str(i)) for i in range(3)]
    sent_b = [client.send_event("k", str(i), namespace=ns_b) for i in range(2)]
    assert {e.topic for e in sent_a + sent_b} == {shared}

    _caught_up(bootstrap, shared, group_a)
    _caught_up(bootstrap, shared, group_b)
    assert sorted(rec_a.ids) == sorted(e.event_id for e in sent_a)
    assert sorted(rec_b.ids) == sorted(e.event_id for e in sent_b)


def test_glob_patterns_select_keys(bootstrap: str, make_client: MakeClient) -> None:
    ns = _name("ns")
    client = make_client(ns)
    recorder, group = Recorder(), _name("g")
    client.register_listener(recorder, ["job.*", "exact"], group_id=group)
    for key in ("job.a", "job.b", "jobx", "exact", "exactly"):
        client.send_event(key, "v")
    _caught_up(bootstrap, client.topic_for(ns), group)
    assert sorted(e.key for e in recorder.events) == ["exact", "job.a", "job.b"]


def test_unregister_joins_the_thread_and_stops_processing(
    bootstrap: str, make_client: MakeClient
) -> None:
    ns = _name("ns")
    client = make_client(ns)
    counter = Counter()
    lid = client.register_listener(counter, ["k"])
    for _ in range(2):
        client.send_event("k", "v")
    wait_for(lambda: counter.counter == 2, what="2 events")
    assert _thread_alive(lid)

    client.unregister_listener(lid)
    assert not _thread_alive(lid)
    with pytest.raises(ValueError, match="no listener"):
        client.unregister_listener(lid)

    for _ in range(3):
        client.send_event("k", "v")
    # Another listener reading from the start sees all five: they were there to be seen.
    witness = Recorder()
    client.register_listener(witness, ["k"], begin_offset=0, group_id=_name("g"))
    wait_for(lambda: len(witness.events) == 5, what="5 events for the witness")
    assert counter.counter == 2


def test_failing_processor_gets_the_same_batch_again_and_nothing_is_lost(
    bootstrap: str, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="connector.notification")
    ns = _name("ns")
    client = make_client(ns)
    sent = [client.send_event(f"k{i}", str(i)) for i in range(6)]
    recorder, group = Recorder(failures=2), _name("g")
    client.register_listener(recorder, ["k*"], begin_offset=0, group_id=group)

    _caught_up(bootstrap, client.topic_for(ns), group)
    assert recorder.offered[0] == recorder.offered[1] == recorder.offered[2]
    assert sorted(recorder.ids) == sorted(e.event_id for e in sent)  # each exactly once
    failures = [r for r in caplog.records if "process failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None for r in failures)


def test_second_listener_of_the_group_resumes_where_the_first_stopped(
    bootstrap: str, make_client: MakeClient, group_id: str
) -> None:
    ns = _name("ns")
    client = make_client(ns)
    topic = client.topic_for(ns)
    first = Recorder()
    lid = client.register_listener(first, ["k"], group_id=group_id)
    before = [client.send_event("k", str(i)) for i in range(3)]
    _caught_up(bootstrap, topic, group_id)
    client.unregister_listener(lid)
    assert sorted(first.ids) == sorted(e.event_id for e in before)

    between = [client.send_event("k", str(i)) for i in range(3, 5)]
    second = Recorder()
    client.register_listener(second, ["k"], group_id=group_id)
    _caught_up(bootstrap, topic, group_id)
    assert sorted(second.ids) == sorted(e.event_id for e in between)


def test_derived_group_resumes_the_same_listener(bootstrap: str, make_client: MakeClient) -> None:
    ns = _name("ns")
    client = make_client(ns)
    topic = client.topic_for(ns)
    lid = client.register_listener(Recorder(), ["k"])
    group = client.listener_group(lid)
    with pytest.raises(ValueError, match="already registered"):
        client.register_listener(Recorder(), ["k"])
    client.send_event("k", "seen by the first")
    _caught_up(bootstrap, topic, group)
    client.unregister_listener(lid)

    between = client.send_event("k", "sent in between")
    again = Recorder()
    lid = client.register_listener(again, ["k"])
    assert client.listener_group(lid) == group
    _caught_up(bootstrap, topic, group)
    assert again.ids == [between.event_id]


def test_begin_offset_for_all_partitions_and_per_partition(
    bootstrap: str, make_client: MakeClient
) -> None:
    ns = _name("ns")
    client = make_client(ns)
    topic = client.topic_for(ns)
    sent = [client.send_event(f"k{i}", str(i)) for i in range(30)]

    everywhere, group = Recorder(), _name("g")
    client.register_listener(everywhere, ["k*"], begin_offset=1, group_id=group)
    _caught_up(bootstrap, topic, group)
    assert sorted(everywhere.ids) == sorted(e.event_id for e in sent if (e.offset or 0) >= 1)

    counts: dict[int, int] = {}
    for e in sent:
        assert e.partition is not None
        counts[e.partition] = counts.get(e.partition, 0) + 1
    busiest = max(counts, key=lambda p: counts[p])
    start = counts[busiest] // 2
    one, group = Recorder(), _name("g")
    client.register_listener(one, ["k*"], begin_offset={busiest: start}, group_id=group)
    _caught_up(bootstrap, topic, group)
    expected = [e for e in sent if e.partition == busiest and (e.offset or 0) >= start]
    assert expected
    # Partitions not named start at the end: nothing from them.
    assert sorted(one.ids) == sorted(e.event_id for e in expected)


def test_begin_time_starts_at_the_first_event_at_or_after_it(
    bootstrap: str, make_client: MakeClient
) -> None:
    ns = _name("ns")
    client = make_client(ns, partitions=1)
    topic = client.topic_for(ns)
    sent = [client.send_event("k", str(i)) for i in range(5)]
    begin = sent[2].create_time

    recorder, group = Recorder(), _name("g")
    client.register_listener(recorder, ["k"], begin_time=begin, group_id=group)
    _caught_up(bootstrap, topic, group)
    expected = [e.event_id for e in sent if e.create_time >= begin]
    assert sent[2].event_id in expected
    assert recorder.ids == expected


def test_undecodable_records_are_logged_and_skipped(
    bootstrap: str, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connector.notification")
    ns = _name("ns")
    client = make_client(ns, partitions=1)
    topic = client.ensure_topic()
    raw = Producer({"bootstrap.servers": bootstrap})
    where: list[str] = []

    def delivered(err: object, msg: Message) -> None:
        where.append(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}")

    raw.produce(topic, value=b"no key", on_delivery=delivered)
    raw.produce(topic, key=b"k", value=b"\xff\xfe", on_delivery=delivered)  # not UTF-8
    assert raw.flush(30) == 0
    good = client.send_event("k", "fine")

    recorder, group = Recorder(), _name("g")
    client.register_listener(recorder, ["k"], begin_offset=0, group_id=group)
    _caught_up(bootstrap, topic, group)
    assert recorder.ids == [good.event_id]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert len(where) == 2
    for coordinates in where:
        assert f"skipping undecodable record {coordinates}" in logged


def test_unregistering_a_failing_listener_leaves_its_batch_to_the_next(
    bootstrap: str, make_client: MakeClient, group_id: str
) -> None:
    ns = _name("ns")
    client = make_client(ns, retry_backoff=0.05, retry_backoff_max=30.0)
    topic = client.topic_for(ns)
    sent = [client.send_event("k", str(i)) for i in range(3)]
    failing = Recorder(failures=1_000_000)
    lid = client.register_listener(failing, ["k"], begin_offset=0, group_id=group_id)
    wait_for(lambda: len(failing.offered) >= 3, what="three failed attempts")
    client.unregister_listener(lid)  # cuts the (growing) backoff short
    assert not _thread_alive(lid)
    assert failing.ids == []

    healthy = Recorder()
    client.register_listener(healthy, ["k"], group_id=group_id)
    _caught_up(bootstrap, topic, group_id)
    assert sorted(healthy.ids) == sorted(e.event_id for e in sent)


def test_close_unregisters_every_listener(make_client: MakeClient) -> None:
    client = make_client(_name("ns"))
    ids = [client.register_listener(Counter(), [key]) for key in ("a", "b")]
    assert all(_thread_alive(lid) for lid in ids)
    client.close()
    assert not any(_thread_alive(lid) for lid in ids)
    with pytest.raises(RuntimeError, match="closed"):
        client.register_listener(Counter(), ["c"])


# -- issue 5 item 1: gaps closed ---------------------------------------------------------


def test_explicit_identity_beats_the_environment_and_environ_replaces_it(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_NAMESPACE, "from-env")
    monkeypatch.setenv(ENV_SENDER, "env-task")
    monkeypatch.setenv(ENV_CONTEXT, "env-exec")
    explicit = NotificationClient(bootstrap, "mine", sender="me", context="exec-1")
    assert (explicit.namespace, explicit.sender, explicit.context) == ("mine", "me", "exec-1")
    # A runner's mapping stands in for os.environ entirely (nothing leaks from it).
    given = NotificationClient(bootstrap, environ={ENV_SENDER: "task9"})
    assert (given.namespace, given.sender, given.context) == ("default", "task9", None)
    explicit.close()
    given.close()


def test_producer_guarantees_cannot_be_weakened(bootstrap: str) -> None:
    with pytest.raises(ConfigError, match=r"enable\.idempotence"):
        NotificationClient(bootstrap, producer_properties={"enable.idempotence": False})
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit"):
        NotificationClient(bootstrap, consumer_properties={"enable.auto.commit": True})
    # Repeating them (acks=-1 is acks=all) is fine.
    NotificationClient(bootstrap, producer_properties={"acks": -1}).close()


def test_processor_may_unregister_its_own_listener(
    bootstrap: str, make_client: MakeClient, group_id: str
) -> None:
    ns = _name("ns")
    client = make_client(ns)
    topic = client.topic_for(ns)
    ids: list[str] = []
    registered = threading.Event()  # the thread may call process before register returns

    class StopAfterFirst(Recorder):
        def process(self, events: list[Event]) -> None:
            assert registered.wait(30)
            super().process(events)
            client.unregister_listener(ids[0])  # from its own thread: must not deadlock

    processor = StopAfterFirst()
    first = client.send_event("k", "first")
    ids.append(client.register_listener(processor, ["k"], begin_offset=0, group_id=group_id))
    registered.set()
    wait_for(lambda: not _thread_alive(ids[0]), what="the listener thread to end")
    assert processor.ids == [first.event_id]
    _caught_up(bootstrap, topic, group_id)  # the batch it processed was committed

    later = client.send_event("k", "later")
    resumed = Recorder()
    client.register_listener(resumed, ["k"], group_id=group_id)
    _caught_up(bootstrap, topic, group_id)
    assert resumed.ids == [later.event_id]


def test_records_without_a_namespace_header_never_cross_namespaces(
    bootstrap: str, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connector.notification")
    ns_a, ns_b, ns_c, shared = _name("ns"), _name("ns"), _name("ns"), _name("shared")
    client = make_client(ns_a, topics={ns_a: shared, ns_b: shared}, partitions=1)
    own = client.ensure_topic(ns_c)
    assert client.ensure_topic(ns_a) == shared
    raw = Producer({"bootstrap.servers": bootstrap})
    for topic in (shared, own):
        raw.produce(topic, key=b"k", value=b"no namespace header")
    assert raw.flush(30) == 0
    sent_a = client.send_event("k", "for a")

    rec_a, rec_b, rec_c = Recorder(), Recorder(), Recorder()
    groups = {shared: [_name("g"), _name("g")], own: [_name("g")]}
    client.register_listener(rec_a, ["k"], begin_offset=0, group_id=groups[shared][0])
    client.register_listener(rec_b, ["k"], ns_b, begin_offset=0, group_id=groups[shared][1])
    client.register_listener(rec_c, ["k"], ns_c, begin_offset=0, group_id=groups[own][0])
    for topic, topic_groups in groups.items():
        for group in topic_groups:
            _caught_up(bootstrap, topic, group)

    # On the shared topic the headerless record is nobody's; on its own it is ns_c's.
    assert rec_a.ids == [sent_a.event_id]
    assert rec_b.ids == []
    assert [(e.namespace, e.value) for e in rec_c.events] == [(ns_c, "no namespace header")]
    skipped = [r for r in caplog.records if "without a namespace header" in r.getMessage()]
    assert len(skipped) == 2  # once per listener of the shared topic


def test_from_config_writes_where_the_connector_reads(
    bootstrap: str, new_topic: Callable[..., str], admin: AdminClient, tmp_path: Path
) -> None:
    explicit, prefix = new_topic(1), f"{_name('cfg')}."
    path = tmp_path / "connector.yaml"
    path.write_text(
        f"kafka: {{bootstrap_servers: {bootstrap}, properties: {{client.id: from-config}}}}\n"
        f"topic_prefix: {prefix}\n"
        f"namespaces:\n  shop: {{topics: [{explicit}]}}\n  audit: {{}}\n"
    )
    config = load_config(path)
    try:
        with NotificationClient.from_config(config, "shop") as client:
            to_shop = client.send_event("paid", "1")
            to_audit = client.send_event("seen", "1", namespace="audit")
        assert config.topics() == {explicit: "shop", f"{prefix}audit": "audit"}
        assert (to_shop.topic, to_shop.namespace) == (explicit, "shop")
        assert (to_audit.topic, to_audit.namespace) == (f"{prefix}audit", "audit")
    finally:
        for future in admin.delete_topics([f"{prefix}audit"]).values():
            future.result(timeout=30)


def test_from_config_sends_to_the_only_namespace_without_being_told(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(1)
    path = tmp_path / "connector.yaml"
    path.write_text(
        f"kafka: {{bootstrap_servers: '{bootstrap}'}}\n"
        f"namespaces:\n  orders: {{topics: [{topic}]}}\n"
    )
    with NotificationClient.from_config(load_config(path), environ={}) as client:
        sent = client.send_event("order-created", "{}")
    # Not events.default: the file's only namespace, in the topic the connector reads.
    assert (sent.topic, sent.namespace, sent.offset) == (topic, "orders", 0)
