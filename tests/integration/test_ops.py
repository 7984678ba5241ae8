"""The operator tools' logic (connector/ops/) against a real broker and real stores.

The CLI wrappers are tested in test_ops_cli.py; here each tool gets explicit collaborators
(client config, group, topic map, an opened store) and its numbers are checked against
offsets the test produced and committed itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from checkpoint import ActionState, CheckpointStore, DeadRecord, open_store
from connector.ops.dlq import list_dlq, replay_actions
from connector.ops.replay import ReplayRange, replay
from connector.ops.send import make_events, send_events, topic_for
from connector.ops.status import collect_status
from connector.ops.tail import TailOptions, format_line, tail_events
from connector.pipeline.pipeline import Pipeline, PipelineSettings, Undispatched
from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from kec.action import Action, ActionKind
from kec.errors import ConfigError, KafkaClientError
from kec.evaluation import Evaluation, NotifyAll, Result
from kec.event import Event
from kec.kafka import Connection
from tests.store_helpers import seed
from tests.support import wait_for


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    with open_store(f"sqlite://{tmp_path / 'store.db'}") as opened:
        yield opened


def client(bootstrap: str) -> Connection:
    return Connection(bootstrap)


def run_pipeline(
    bootstrap: str,
    group_id: str,
    topic: str,
    store: CheckpointStore,
    until: Callable[[], bool],
    **more: Any,
) -> None:
    """The real pipeline (steps 1-3, NotifyAll) until ``until()``; then it leaves the group.
    ``more``: further pipeline settings."""
    settings = PipelineSettings(bootstrap, group_id, {topic: "shop"}, linger_ms=50, **more)
    pipeline = Pipeline(settings, store, NotifyAll("log"), Undispatched())
    pipeline.start()
    try:
        wait_for(lambda: pipeline.run_once() >= 0 and until(), timeout=60, what="pipeline")
    finally:
        pipeline.close()


# -- send ------------------------------------------------------------------------------


def test_send_produces_decodable_events_and_reports_positions(
    bootstrap: str, new_topic: Callable[..., str], store: CheckpointStore, group_id: str
) -> None:
    topic = new_topic(partitions=1)
    events = make_events("k", "v", namespace="shop", sender="ops", context="wf-1", count=3)
    acked: list[int] = []
    report = send_events(client(bootstrap), topic, events, on_sent=acked.append)
    assert (report.topic, report.count, report.positions) == (topic, 3, [(0, 0), (0, 1), (0, 2)])
    assert sum(acked) == 3
    run_pipeline(bootstrap, group_id, topic, store, lambda: store.count_events() == 3)
    stored = list(store.iter_events())
    assert [e.value for e in stored] == ["v-0", "v-1", "v-2"]
    assert {(e.key, e.namespace, e.sender, e.context) for e in stored} == {
        ("k", "shop", "ops", "wf-1")
    }


def test_send_same_value_and_topic_choice() -> None:
    values = [e.value for e in make_events("k", "v", namespace="n", count=2, same_value=True)]
    assert values == ["v", "v"]
    topics = {"orders": "shop", "audit": "ops"}
    assert topic_for(topics, "ops", None) == ("audit", "ops")
    assert topic_for(topics, None, "orders") == ("orders", "shop")
    assert topic_for({"only": "x"}, None, None) == ("only", "x")
    with pytest.raises(ConfigError, match="no topic for namespace 'nope'"):
        topic_for(topics, "nope", None)


def test_send_with_a_rate_paces_on_the_monotonic_clock(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    slept: list[float] = []
    report = send_events(
        client(bootstrap),
        topic,
        make_events("k", "v", namespace="n", count=4),
        rate=10.0,
        sleep=slept.append,  # recorded, not waited: the schedule itself is what is checked
    )
    assert report.count == 4
    # Events 1..3 are due 0.1 s apart from the start; nothing waited, so each is pending.
    assert len(slept) == 3
    assert all(0 < s <= 0.3 for s in slept)
    assert slept == sorted(slept)


def test_send_to_an_unreachable_broker_is_a_kafka_client_error() -> None:
    config = Connection("127.0.0.1:9", {"message.timeout.ms": 1500})
    with pytest.raises(KafkaClientError, match="sent 0 of 1 events"):
        send_events(config, "t", make_events("k", "v", namespace="n"))


# -- tail ------------------------------------------------------------------------------


def test_tail_from_beginning_filters_keys_and_stops_after_max(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    for key in ("a1", "b1", "a2", "a3"):
        send_events(client(bootstrap), topic, make_events(key, key.upper(), namespace="shop"))
    seen: list[Event] = []
    count = tail_events(
        client(bootstrap),
        {topic: "shop"},
        TailOptions(key_glob="a*", from_beginning=True, max_events=3),
        seen.append,
        threading.Event(),
    )
    assert count == 3
    assert sorted(e.key for e in seen) == ["a1", "a2", "a3"]
    line = format_line(seen[0])
    assert f" shop {seen[0].key} {seen[0].key.upper()}" in line


def test_tail_from_the_end_shows_only_new_events_until_stopped(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    send_events(client(bootstrap), topic, make_events("old", "x", namespace="shop"))
    ready, stop = threading.Event(), threading.Event()
    seen: list[Event] = []
    worker = threading.Thread(
        target=tail_events,
        args=(client(bootstrap), {topic: "shop"}, TailOptions(), seen.append, stop),
        kwargs={"on_ready": ready.set},
    )
    worker.start()
    try:
        assert ready.wait(30)
        send_events(client(bootstrap), topic, make_events("new", "y", namespace="shop"))
        wait_for(lambda: seen, timeout=30, what="the new event in tail")
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert [(e.key, e.context) for e in seen] == [("new", None)]


# -- status ----------------------------------------------------------------------------


def commit(bootstrap: str, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit offsets for ``group_id`` the way the pipeline does (no subscription needed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def test_status_reports_committed_stored_end_and_lag_per_partition(
    bootstrap: str, new_topic: Callable[..., str], store: CheckpointStore, group_id: str
) -> None:
    topic = new_topic(partitions=2)
    producer = Producer(client(bootstrap).client_config())
    for _ in range(5):
        producer.produce(topic, key=b"k", value=b"v", partition=0)
    producer.produce(topic, key=b"k", value=b"v", partition=1)
    assert producer.flush(30) == 0
    commit(bootstrap, group_id, {(topic, 0): 2})
    event = Event(key="k", value="v", topic=topic, partition=0, offset=2)
    retried = Action("r-retry", ActionKind.NOTIFY, "log", "shop", (event.event_id,), "k")
    dead = Action("r-dead", ActionKind.NOTIFY, "log", "shop", ("other",), "k")
    done = Action("r-dead", ActionKind.NOTIFY, "log", "shop", ("third",), "k")
    with store.batch() as tx:
        tx.add_dead_records([DeadRecord(topic, 0, 1, "no key", "DecodeError", None, b"v")])
    seed(
        store,
        (topic, 0),
        [done, retried, dead],
        events=[event],
        next_offset=3,
        done=[done.action_id],
        retry={retried.action_id: "TargetError: down"},
        dead={dead.action_id: "TargetRejected: no"},
    )

    report = collect_status(client(bootstrap), group_id, [topic], store, ["r-never", "r-dead"])

    rows = [(p.partition, p.committed, p.stored, p.end, p.lag) for p in report.partitions]
    assert rows == [(0, 2, 3, 5, 2), (1, None, None, 1, 1)]
    assert (report.pending, report.retrying, report.done) == (1, 1, 1)
    assert (report.dead_actions, report.dead_records, report.total_lag) == (1, 1, 3)
    assert report.rules == {"r-never": 0, "r-dead": 2, "r-retry": 1}
    assert report.to_dict()["partitions"][0]["lag"] == 2


def test_status_of_an_unknown_topic_is_a_kafka_client_error(
    bootstrap: str, store: CheckpointStore, group_id: str
) -> None:
    with pytest.raises(KafkaClientError, match="not available"):
        collect_status(client(bootstrap), group_id, ["no-such-topic-ops"], store)


# -- replay ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def replay_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CheckpointStore]:
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'replay.db'}"
    else:
        new_database: Callable[[], str] = request.getfixturevalue("pg_store_url")
        url = new_database()
    with open_store(url) as opened:
        yield opened


class FixedRule:
    """The rules after a fix: NotifyAll as before, plus a rule that was missing."""

    def __init__(self) -> None:
        self._rules = (NotifyAll("log"), NotifyAll("log", rule="the-fix"))

    def state_keys(self, event: Event) -> Sequence[str]:
        return ()

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        actions = [a for rules in self._rules for a in rules.evaluate(event, state).actions]
        return Result(actions, {})


def test_replay_queues_what_a_fixed_rule_gives_and_nothing_twice(
    bootstrap: str, new_topic: Callable[..., str], replay_store: CheckpointStore, group_id: str
) -> None:
    store = replay_store
    topic = new_topic(partitions=2)
    config, topics = client(bootstrap), {topic: "shop"}
    send_events(config, topic, make_events("k", "v", namespace="shop", count=6))
    run_pipeline(bootstrap, group_id, topic, store, lambda: store.count_events() == 6)
    assert store.count_actions(ActionState.PENDING) == 6
    offsets_before = store.next_offsets(topic)

    same = replay(config, topics, store, NotifyAll("log"), ReplayRange(from_offset=0))
    assert (same.read, same.evaluated, same.actions, same.known) == (6, 6, 0, 6)
    assert store.count_actions(ActionState.PENDING) == 6

    # Records not checkpointed yet are the pipeline's: counted, not touched.
    send_events(config, topic, make_events("k2", "w", namespace="shop", count=4))
    progress: list[tuple[int, int]] = []
    fixed = replay(
        config,
        topics,
        store,
        FixedRule(),
        ReplayRange(from_offset=0),
        on_progress=lambda d, t: progress.append((d, t)),
    )
    assert (fixed.read, fixed.evaluated, fixed.unread) == (6, 6, 4)
    assert (fixed.actions, fixed.known) == (6, 6)  # the fix fires; the old rule does not
    assert progress[0] == (0, 6) and progress[-1] == (6, 6)
    assert store.count_actions_by_rule() == {"notify-all": 6, "the-fix": 6}
    assert store.next_offsets(topic) == offsets_before  # replay never moves the checkpoint
    again = replay(config, topics, store, FixedRule(), ReplayRange(from_offset=0))
    assert (again.actions, again.known) == (0, 12)
    due = store.due_retries(store.next_offsets(topic), time.time())
    assert sorted(r.action.rule for r in due) == ["the-fix"] * 6


def test_replay_of_an_unchanged_range_leaves_all_of_rules_out_and_queues_nothing(
    bootstrap: str, new_topic: Callable[..., str], store: CheckpointStore, group_id: str
) -> None:
    """a0 and b1 complete the set once; a2 starts the next one. Replaying the range with the
    same rules must not pair the old b1 with today's a2: that action never fired live."""
    topic = new_topic(partitions=1)
    config, topics = client(bootstrap), {topic: "shop"}
    rules = [
        Rule.model_validate(
            {"name": "join", "namespace": "shop", "action": "start", "workflow": "wf",
             "all_of": {"keys": ["a", "b"], "policy": "latest"}}
        ),
        Rule.model_validate(
            {"name": "each-b", "namespace": "shop", "key": "b", "action": "start", "workflow": "b"}
        ),
    ]  # fmt: skip
    engine = TriggerEngine(rules)
    for key in ("a", "b", "a"):  # one at a time: their create times are in this order
        send_events(config, topic, make_events(key, "v", namespace="shop"))
    settings = PipelineSettings(bootstrap, group_id, {topic: "shop"}, linger_ms=50)
    pipeline = Pipeline(settings, store, engine, Undispatched())
    pipeline.start()
    try:
        wait_for(
            lambda: pipeline.run_once() >= 0 and store.count_events() == 3, timeout=60, what="3"
        )
    finally:
        pipeline.close()
    assert store.count_actions_by_rule() == {"join": 1, "each-b": 1}

    report = replay(config, topics, store, engine, ReplayRange(from_offset=0))
    assert report.left_out == ("join",)
    assert (report.evaluated, report.actions, report.known) == (3, 0, 1)
    assert store.count_actions_by_rule() == {"join": 1, "each-b": 1}


def test_replay_from_time_and_one_partition(
    bootstrap: str, new_topic: Callable[..., str], store: CheckpointStore, group_id: str
) -> None:
    topic = new_topic(partitions=2)
    now_ms = int(time.time() * 1000)
    hour = 3_600_000
    old = [
        Event(key="k", value=f"old{n}", namespace="shop", create_time=now_ms - hour)
        for n in range(3)
    ]
    recent = [
        Event(key="k", value=f"new{n}", namespace="shop", create_time=now_ms - hour // 2)
        for n in range(2)
    ]
    send_events(client(bootstrap), topic, iter(old + recent))
    run_pipeline(bootstrap, group_id, topic, store, lambda: store.count_events() == 5)
    report = replay(
        client(bootstrap),
        {topic: "shop"},
        store,
        FixedRule(),
        ReplayRange(from_time_ms=now_ms - 3 * hour // 4),
    )
    assert (report.read, report.evaluated, report.actions) == (2, 2, 2)
    fixed = store.due_retries(store.next_offsets(topic), time.time())
    assert sorted(r.action.payload["value"] for r in fixed) == ["new0", "new1"]
    partition = fixed[0].tp[1]
    nothing = replay(
        client(bootstrap),
        {topic: "shop"},
        store,
        FixedRule(),
        ReplayRange(from_offset=0, partition=1 - partition),
    )
    assert (nothing.read, nothing.evaluated) == (0, 0)  # one key: every event on one partition
    with pytest.raises(ConfigError, match="exactly one"):
        ReplayRange()


def test_replay_counts_undecodable_records(
    bootstrap: str, new_topic: Callable[..., str], store: CheckpointStore, group_id: str
) -> None:
    topic = new_topic(partitions=1)
    producer = Producer(client(bootstrap).client_config())
    producer.produce(topic, value=b"no key")
    assert producer.flush(30) == 0
    send_events(client(bootstrap), topic, make_events("k", "v", namespace="shop"))
    run_pipeline(
        bootstrap, group_id, topic, store, lambda: store.next_offsets(topic) == {(topic, 0): 2}
    )
    report = replay(
        client(bootstrap), {topic: "shop"}, store, FixedRule(), ReplayRange(from_offset=0)
    )
    assert (report.read, report.undecodable, report.evaluated, report.actions) == (2, 1, 1, 1)


def test_replay_refuses_a_value_over_the_pipelines_limit_as_the_pipeline_did(
    bootstrap: str, new_topic: Callable[..., str], store: CheckpointStore, group_id: str
) -> None:
    topic = new_topic(partitions=1)
    producer = Producer(client(bootstrap).client_config())
    producer.produce(topic, key=b"big", value=b"x" * 300)
    producer.produce(topic, key=b"small", value=b"x" * 30)
    assert producer.flush(30) == 0
    run_pipeline(
        bootstrap, group_id, topic, store, lambda: store.next_offsets(topic) == {(topic, 0): 2},
        max_event_bytes=100,
    )  # fmt: skip
    assert [r.offset for r in store.list_dead_records()] == [0]
    assert store.count_actions_by_rule() == {"notify-all": 1}
    same = replay(
        client(bootstrap), {topic: "shop"}, store, NotifyAll("log"), ReplayRange(from_offset=0),
        max_bytes=100,
    )  # fmt: skip
    assert (same.read, same.undecodable, same.evaluated, same.actions) == (2, 1, 1, 0)
    assert store.count_actions_by_rule() == {"notify-all": 1}


# -- dlq -------------------------------------------------------------------------------


def test_dlq_lists_dead_actions_and_records_and_replays_actions(store: CheckpointStore) -> None:
    actions = [Action("r", ActionKind.NOTIFY, "log", "shop", (f"e{n}",), "k") for n in range(3)]
    with store.batch() as tx:
        tx.add_dead_records([DeadRecord("t", 0, 7, "not UTF-8", "DecodeError", b"k", b"\xff")])
    seed(store, ("t", 0), actions, dead={a.action_id: "TargetRejected: 400" for a in actions})
    listing = list_dlq(store)
    assert [e.action.action_id for e in listing.actions] == [a.action_id for a in actions]
    data = listing.to_dict()
    assert data["records"] == [
        {
            "topic": "t",
            "partition": 0,
            "offset": 7,
            "error": "not UTF-8",
            "error_class": "DecodeError",
            "key": "k",
            "value": {"b64": "/w=="},
        }
    ]
    assert data["actions"][0]["last_error"] == "TargetRejected: 400"
    assert replay_actions(store, [actions[0].action_id]) == 1
    assert [r.action for r in store.due_retries([("t", 0)], time.time())] == [actions[0]]
    assert replay_actions(store, None) == 2
    assert store.count_actions(ActionState.DEAD) == 0
    assert store.count_actions(ActionState.PENDING) == 3
