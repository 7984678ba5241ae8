"""Exactly-once at the edges: faults that the protocol's crash points do not cover.

Each test is one finding of a review, run the way a user meets it: ``event-connector run
-c FILE`` as a real process, a real broker, plain confluent-kafka producers (no
``event-id`` header: events known by their offsets), and the operator's CLI.

* windows are event time: a set that should complete after downtime still does;
* a topic deleted and created again stops its partition (loudly, health red) instead of
  skipping the new records as "checkpointed already", until an operator resets it; the
  new records then fire under new action ids; a replay leaves the partition alone while
  it is stopped, and knows its records by those ids after the reset;
* a COMMIT that PostgreSQL applied but whose answer was lost (the nemesis swallows it) is
  not applied twice, and its actions are still delivered;
* a claim that fails while Kafka assigns a partition (the store refuses connections) is
  retried with the partition paused, never leaving it assigned and unowned;
* a partition assigned to a client that fetches nothing of it (librdkafka still fetching
  a recreated topic under its old id) is sought again, and one whose rest is transaction
  markers and aborted records is not taken for such a client.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from checkpoint import ActionState, CheckpointStore, open_store
from connector.common.ownership import State
from connector.dispatch import Dispatcher
from connector.pipeline import Pipeline, PipelineSettings
from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from connector.targets.base import Target
from devkit.server import free_port
from kec.action import Action
from kec.codec import record_headers, record_value
from kec.errors import CheckpointError, KafkaFatal
from kec.event import Event
from tests.chaos.fleet import Fleet
from tests.nemesis.pg import PgProxy
from tests.support import ROOT, wait_for


def _config(tmp_path: Path, bootstrap: str, topic: str, rules: str, **extra: Any) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            kafka: {{bootstrap_servers: "{bootstrap}"}}
            group_id: g-{tmp_path.name[-20:]}
            namespaces:
              shop: {{topics: ["{topic}"]}}
            checkpoint: {{backend: sqlite, path: "{tmp_path / "store.db"}"}}
            pipeline: {{batch_size: 100, linger_ms: 5}}
            targets:
              log: {{type: log, path: "{tmp_path / "actions.jsonl"}"}}
            metrics: {{host: 127.0.0.1, port: {extra.get("metrics_port", free_port())}}}
            rules:
            """
        )
        + textwrap.indent(textwrap.dedent(rules), "  ")
    )
    return path


def _actions(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "actions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]


def _produce(bootstrap: str, topic: str, keys: list[str], timestamp: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key in keys:
        if timestamp is None:
            producer.produce(topic, key=key, value=b"{}")
        else:
            producer.produce(topic, key=key, value=b"{}", timestamp=timestamp)
    assert producer.flush(30) == 0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[[Path], Fleet]]:
    made: list[Fleet] = []

    def make(config: Path) -> Fleet:
        made.append(Fleet(config, tmp_path))
        return made[-1]

    yield make
    for f in made:
        f.stop()


def _log(tmp_path: Path, member: str = "m0") -> str:
    path = tmp_path / f"{member}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_an_all_of_window_is_event_time_after_downtime(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    fleet: Callable[[Path], Fleet],
) -> None:
    """a, then the connector is down longer than the window, then b created 0.5 s after a
    (within the 1 s window): the set completes. A wall-clock pruner deleted it at start-up."""
    topic = new_topic(2)
    config = _config(
        tmp_path, bootstrap, topic,
        """\
        - name: join
          namespace: shop
          all_of: {keys: [a, b], window: 1, policy: latest}
          action: start
          workflow: wf
        """,
    )  # fmt: skip
    a_time = int(time.time() * 1000)
    connectors = fleet(config)
    connectors.start("m0")
    _produce(bootstrap, topic, ["a"], a_time)
    with open_store(f"sqlite://{tmp_path / 'store.db'}") as store:
        wait_for(lambda: store.count_events() == 1, timeout=90, what="a checkpointed")
    checkpointed = time.time()
    connectors.stop()
    # Down for longer than the window, by any clock: the process's and the events'.
    wait_for(lambda: time.time() > checkpointed + 2.5, timeout=10, what="the downtime")
    connectors.start("m0")
    _produce(bootstrap, topic, ["b"], a_time + 500)
    wait_for(lambda: _actions(tmp_path), timeout=90, what="the set to fire")
    (fired,) = _actions(tmp_path)
    assert fired["rule"] == "join"
    assert sorted(fired["payload"]["events"]) == ["a", "b"]


def _recreate(admin: AdminClient, topic: str, partitions: int) -> None:
    admin.delete_topics([topic])[topic].result(timeout=30)

    def created() -> bool:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
        except KafkaException:  # still being deleted
            return False
        return True

    wait_for(created, timeout=60, interval=0.5, what=f"{topic} to be created again")


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return answer.status_code, answer.json()


def test_a_recreated_topic_stops_its_partition_until_an_operator_resets_it(
    tmp_path: Path,
    bootstrap: str,
    admin: AdminClient,
    new_topic: Callable[..., str],
    fleet: Callable[[Path], Fleet],
) -> None:
    topic, metrics = new_topic(1), free_port()
    config = _config(
        tmp_path, bootstrap, topic,
        '- {name: each, namespace: shop, key: "*", action: start, workflow: wf}\n',
        metrics_port=metrics,
    )  # fmt: skip
    connectors = fleet(config)
    connectors.start("m0")
    _produce(bootstrap, topic, [f"k{i % 3}" for i in range(30)])
    wait_for(lambda: len(_actions(tmp_path)) == 30, timeout=90, what="the first 30 actions")
    first_ids = {a["action_id"] for a in _actions(tmp_path)}

    # The topic is deleted and created again under the running connector; 10 new records
    # take offsets 0..9, which the store has checkpointed (for the old topic).
    _recreate(admin, topic, 1)
    _produce(bootstrap, topic, [f"new{i}" for i in range(10)])
    wait_for(lambda: "STOPPED" in _log(tmp_path), timeout=90, what="the partition to stop")
    line = next(x for x in _log(tmp_path).splitlines() if "STOPPED" in x)
    assert f"{topic}[0]" in line and "partitions reset" in line
    _, body = wait_for(
        lambda: (h := _health(metrics))[0] == 503 and h, timeout=30, what="health to turn red"
    )
    assert body["checks"]["partitions"] is False
    assert len(_actions(tmp_path)) == 30, "nothing of the new topic was taken for old records"

    listed = subprocess.run(
        [sys.executable, "-m", "connector", "partitions", "list", "-c", str(config), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (row,) = [r for r in json.loads(listed.stdout) if r["topic"] == topic]
    assert row["stopped"] and (row["next_offset"], row["low"], row["high"]) == (30, 0, 10)

    reset = subprocess.run(
        [sys.executable, "-m", "connector", "partitions", "reset", "-c", str(config),
         "--topic", topic],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert reset.returncode == 0, reset.stderr
    assert f"{topic}[0]: next offset 30 -> 0" in reset.stdout
    wait_for(lambda: len(_actions(tmp_path)) == 40, timeout=90, what="the 10 new actions")
    new = [a for a in _actions(tmp_path) if a["action_id"] not in first_ids]
    assert sorted(a["event_key"] for a in new) == sorted(f"new{i}" for i in range(10))
    wait_for(lambda: _health(metrics)[0] == 200, timeout=30, what="health to turn green")
    assert connectors.procs["m0"].poll() is None


def test_replay_leaves_a_recreated_topic_to_the_reset_then_knows_its_new_ids(
    tmp_path: Path,
    bootstrap: str,
    admin: AdminClient,
    new_topic: Callable[..., str],
    fleet: Callable[[Path], Fleet],
) -> None:
    """A topic created again holds records the store never checkpointed, at offsets it
    did: a replay leaves the stopped partition alone. After the operator's reset the
    records' ids carry the partition's generation (``topic/0/7@1``), and a replay must
    know them by those ids: with the same rules it queues nothing (taken for generation
    0, each record past the old topic's end would fire again under a new id), and a rule
    added since fires once for each, under the ids the pipeline gave."""
    topic = new_topic(1)
    each = '- {name: each, namespace: shop, key: "*", action: start, workflow: wf}\n'
    config = _config(tmp_path, bootstrap, topic, each)
    added = tmp_path / "operator.yaml"  # the same, with a rule added since
    added.write_text(
        config.read_text()
        + '  - {name: audit, namespace: shop, key: "*", action: start, workflow: audit}\n'
    )
    connectors = fleet(config)
    connectors.start("m0")
    _produce(bootstrap, topic, [f"old{i}" for i in range(5)])
    wait_for(lambda: len(_actions(tmp_path)) == 5, timeout=90, what="the first 5 actions")
    connectors.signal("m0", signal.SIGTERM)
    assert connectors.procs["m0"].wait(60) == 0
    # Created again while the connector is down, with more records than the old topic had.
    _recreate(admin, topic, 1)
    _produce(bootstrap, topic, [f"new{i}" for i in range(15)])
    connectors.start("m0")
    wait_for(lambda: "STOPPED" in _log(tmp_path), timeout=90, what="the partition to stop")

    def cli(*args: str, file: Path = config) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "connector", *args, "-c", str(file)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def by_rule() -> dict[str, int]:
        with open_store(f"sqlite://{tmp_path / 'store.db'}") as store:
            return store.count_actions_by_rule()

    early = cli("replay", "--from-offset", "0", "--no-progress", file=added)
    assert "read 0," in early and "actions queued 0 " in early, early
    assert f"not replayed: {topic}[0]: stopped until an operator resets it" in early, early
    assert by_rule() == {"each": 5}

    assert f"{topic}[0]: next offset 5 -> 0" in cli("partitions", "reset", "--topic", topic)
    wait_for(lambda: len(_actions(tmp_path)) == 20, timeout=90, what="the 15 new actions")
    new = {a["event_key"]: a["event_ids"] for a in _actions(tmp_path)[5:]}
    assert new == {f"new{i}": [f"{topic}/0/{i}@1"] for i in range(15)}

    same = cli("replay", "--from-offset", "0", "--no-progress")
    assert "read 15, evaluated again 15" in same, same
    assert "actions queued 0 (15 queued before)" in same, same
    assert by_rule() == {"each": 20}
    fixed = cli("replay", "--from-offset", "0", "--no-progress", file=added)
    assert "actions queued 15 (15 queued before)" in fixed, fixed
    assert by_rule() == {"each": 20, "audit": 15}
    wait_for(lambda: len(_actions(tmp_path)) == 35, timeout=90, what="the 15 audit actions")
    audit = {a["event_key"]: a["event_ids"] for a in _actions(tmp_path) if a["rule"] == "audit"}
    assert audit == new
    connectors.alive()


def test_a_member_frozen_inside_a_store_transaction_does_not_stall_the_group(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
    fleet: Callable[[Path], Fleet],
) -> None:
    """m0 is frozen (SIGSTOP, as a VM pause or a hung host) while a batch's transaction is
    open in PostgreSQL and never woken during the run. Its connection stays open, so its
    row locks would hold m1's claim of the partitions Kafka hands over, and m1 with them,
    until m0 woke: the server's idle-transaction timeout ends that transaction. m1 then
    fires every event's action once; m0, woken, is fenced and goes on without doubling."""
    topic, url, events = new_topic(2), pg_store_url(), 30_000
    config = tmp_path / "connector.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            kafka:
              bootstrap_servers: "{bootstrap}"
              properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 500}}
            group_id: g-{tmp_path.name[-20:]}
            namespaces:
              shop: {{topics: ["{topic}"]}}
            checkpoint: {{backend: postgres, dsn: "{url}"}}
            pipeline: {{batch_size: 2000, linger_ms: 5}}
            targets:
              log: {{type: log, path: "{tmp_path / "actions.jsonl"}"}}
            rules:
              - {{name: each, namespace: shop, key: "*", action: notify, target: log}}
              # Reads rule state: the rules run inside each batch's transaction.
              - {{name: join, namespace: shop, all_of: {{keys: [left, right], policy: first}},
                 action: notify, target: log}}
            """
        )
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(events):
        producer.produce(topic, key=("left", "right")[i // 10 % 2] if i % 10 == 0 else f"k{i % 7}",
                         value=b"{}", headers=[("context", f"c{i // 20}".encode())])  # fmt: skip
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    connectors = fleet(config)
    connectors.start("m0")
    m0 = connectors.procs["m0"]
    frozen: list[int] = []
    with psycopg.connect(url, autocommit=True) as watch:

        def caught_in_a_transaction() -> bool:
            connectors.alive()
            if not frozen:  # the whole process group: a supervisor and its pipelines
                connectors.signal("m0", signal.SIGSTOP, group=True)
            (open_writes,) = watch.execute(
                # Holding what m1 will need: a row written, or a set's advisory lock.
                "SELECT count(*) FROM pg_stat_activity a WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND (backend_xid IS NOT NULL OR EXISTS "
                "(SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'))"
            ).fetchone() or (0,)
            if open_writes:
                frozen.append(open_writes)
                return True
            connectors.signal("m0", signal.SIGCONT, group=True)
            return False

        wait_for(caught_in_a_transaction, timeout=90, interval=0.05,
                 what="m0 frozen with a store transaction open")  # fmt: skip
    try:
        connectors.start("m1")

        def each_fired() -> int:
            return len({a["action_id"] for a in _actions(tmp_path) if a["rule"] == "each"})

        wait_for(lambda: each_fired() == events, timeout=150, interval=0.5,
                 what=f"m1 to fire all {events} events with m0 frozen")  # fmt: skip
        assert m0.poll() is None and "State:\tT" in Path(f"/proc/{m0.pid}/status").read_text()
    finally:
        connectors.signal("m0", signal.SIGCONT, group=True)
    with open_store(url) as store:
        wait_for(lambda: store.count_events() == events, timeout=60, what="every event stored")
        assert store.count_actions_by_rule() == {"each": events, "join": events // 20}
    fired = _actions(tmp_path)
    assert len({a["action_id"] for a in fired if a["rule"] == "join"}) == events // 20
    connectors.alive()


# -- the store's edges, through the nemesis (a proxy in front of PostgreSQL) -------------


class Recorder(Target):
    """Records each delivery (ids may repeat: a repeat carries the same idempotency key)."""

    name = "log"
    concurrency = 4

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: list[Action] = []

    def deliver(self, action: Action) -> None:
        with self.lock:
            self.delivered.append(action)

    def ids(self) -> list[str]:
        with self.lock:
            return [a.action_id for a in self.delivered]


@contextlib.contextmanager
def _running(
    bootstrap: str, group_id: str, topic: str, store: CheckpointStore, rules: list[Rule],
    **more: Any,
) -> Iterator[tuple[Pipeline, Dispatcher, Recorder]]:  # fmt: skip
    """The real pipeline and dispatcher in threads, as ``run`` wires them (``more``:
    further pipeline settings)."""
    target = Recorder()
    dispatcher = Dispatcher(store, {"log": target})
    # No idle marks of event time: the only writes are the batches' and settlements'.
    settings = PipelineSettings(
        bootstrap, group_id, {topic: "shop"}, linger_ms=20, idle_interval=3600, **more
    )
    pipeline = Pipeline(settings, store, TriggerEngine(rules), dispatcher)
    stop = threading.Event()
    dispatcher.start()
    thread = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield pipeline, dispatcher, target
    finally:
        stop.set()
        thread.join(60)
        pipeline.close()
        dispatcher.stop()


def _produce_events(bootstrap: str, topic: str, events: list[Event]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for event in events:
        producer.produce(
            topic, key=event.key, value=record_value(event), headers=record_headers(event)
        )
    assert producer.flush(30) == 0


_JOIN_RULES = [
    Rule.model_validate(
        {"name": "join", "namespace": "shop", "all_of": {"keys": ["a", "b"], "policy": "latest"},
         "action": "start", "workflow": "wf"}
    ),
    Rule.model_validate(
        {"name": "each-c", "namespace": "shop", "key": "c", "action": "start", "workflow": "c"}
    ),
]  # fmt: skip


def test_a_batch_whose_commit_acknowledgement_was_lost_is_applied_once(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    pg_store_url: Callable[[], str],
    pg_proxy: PgProxy,
) -> None:
    """PostgreSQL commits the batch holding b1 and c (an explicit id), the client sees the
    connection drop. Retrying it must not pair b1 again (a later a2 would fire (a2, b1),
    an action no live run had), and the batch's actions must reach the dispatcher."""
    topic = new_topic(1)
    with (
        open_store(pg_proxy.dsn(pg_store_url())) as store,
        _running(bootstrap, group_id, topic, store, _JOIN_RULES) as (pipeline, dispatcher, target),
    ):
        _produce_events(bootstrap, topic, [Event(key="a", value="0", namespace="shop")])
        wait_for(lambda: store.count_events() == 1, timeout=60, what="a0")
        pg_proxy.swallow_commit_acks(1)
        swallowed_before = pg_proxy.swallowed
        c = Event(key="c", value="3", namespace="shop", event_id="c-3")
        _produce_events(bootstrap, topic, [Event(key="b", value="1", namespace="shop"), c])
        wait_for(lambda: pg_proxy.swallowed > swallowed_before, timeout=60, what="a lost ack")
        wait_for(lambda: pipeline.stats.conflicts >= 1, timeout=60, what="the retry refused")
        _produce_events(bootstrap, topic, [Event(key="a", value="2", namespace="shop")])
        wait_for(lambda: store.count_events() == 4, timeout=60, what="a2")
        wait_for(lambda: len(set(target.ids())) == 2, timeout=60, what="two actions delivered")
        wait_for(lambda: dispatcher.pending == 0, timeout=30, what="nothing pending")
        wait_for(
            lambda: store.count_actions(ActionState.PENDING) == 0,
            timeout=30,
            what="the deliveries settled in the store",
        )
        assert store.count_actions_by_rule() == {"join": 1, "each-c": 1}
        assert sorted(e.value for e in store.iter_events()) == ["0", "1", "2", "3"]
    fired = {a.rule: a for a in target.delivered}
    assert sorted(fired) == ["each-c", "join"]
    assert [e["value"] for e in fired["join"].payload["events"].values()] == ["0", "1"]


def test_a_lost_commit_answer_whose_actions_cannot_be_loaded_yet_is_caught_up_later(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    pg_store_url: Callable[[], str],
    pg_proxy: PgProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch of b1 and c2 commits, its answer is lost, and when the retry finds it
    committed, loading its actions for the dispatcher fails too (the store dropped again).
    The partition must not read on past the batch with its actions unloaded: they would
    never be delivered while the store counts them settled (the seeded nemesis found it)."""
    topic = new_topic(1)
    rules = [
        Rule.model_validate(
            {"name": "each", "namespace": "shop", "key": "*", "action": "start", "workflow": "w"}
        )
    ]
    with (
        open_store(pg_proxy.dsn(pg_store_url())) as store,
        _running(bootstrap, group_id, topic, store, rules) as (pipeline, dispatcher, target),
    ):
        _produce_events(bootstrap, topic, [Event(key="a", value="0", namespace="shop")])
        # a0 delivered and settled: the next COMMIT is the next batch's.
        wait_for(
            lambda: [p.watermark for p in store.partitions()] == [1], timeout=60, what="a0 settled"
        )
        real, failed = store.pending, []

        def pending(tp: tuple[str, int]) -> Any:
            if not failed:  # after a claim, only a catch-up asks
                failed.append(tp)
                raise CheckpointError("postgres store: reading pending actions failed: (test)")
            return real(tp)

        monkeypatch.setattr(store, "pending", pending)
        pg_proxy.swallow_commit_acks(1)
        events = [Event(key=k, value=str(i), namespace="shop") for i, k in ((1, "b"), (2, "c"))]
        _produce_events(bootstrap, topic, events)
        wait_for(lambda: failed, timeout=60, what="a catch-up that fails")
        wait_for(lambda: len(set(target.ids())) == 3, timeout=60, what="b1 and c2 delivered")
        wait_for(lambda: dispatcher.pending == 0, timeout=30, what="nothing pending")
        assert pipeline.stats.conflicts >= 2, "the batch conflicted again once it failed"
        assert store.count_events() == 3
        assert store.count_actions_by_rule() == {"each": 3}


def test_a_claim_that_fails_in_the_assignment_is_retried_while_the_partition_waits(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    pg_store_url: Callable[[], str],
    pg_proxy: PgProxy,
) -> None:
    """The store refuses connections when Kafka assigns the partition: it stays assigned,
    paused and reported, and is claimed once the store is back; nothing is skipped."""
    topic = new_topic(2)
    events = [Event(key=f"c{i % 5}", value=str(i), namespace="shop") for i in range(50)]
    rules = [
        Rule.model_validate(
            {"name": "each", "namespace": "shop", "key": "*", "action": "start", "workflow": "w"}
        )
    ]
    with open_store(pg_proxy.dsn(pg_store_url())) as store:
        pg_proxy.refuse(True)
        with _running(bootstrap, group_id, topic, store, rules) as (pipeline, _, target):
            _produce_events(bootstrap, topic, events)
            wait_for(lambda: pipeline.stats.claiming == 2, timeout=60, what="claims to fail")
            assert pipeline.owned == {}
            pg_proxy.refuse(False)
            wait_for(lambda: len(set(target.ids())) == 50, timeout=90, what="every action")
            assert pipeline.stats.claiming == 0 and len(pipeline.owned) == 2
        assert store.count_events() == 50
        assert store.count_actions_by_rule() == {"each": 50}


def _running_on_postgres(
    tmp_path: Path, bootstrap: str, topic: str, dsn: str, fleet: Callable[[Path], Fleet]
) -> Fleet:
    """Member m0 of a fleet on the PostgreSQL store at ``dsn`` (one rule, every event one
    action on the log target), once it has fired the actions of 10 events."""
    config = _config(
        tmp_path, bootstrap, topic, '- {name: each, namespace: shop, key: "*", action: start, '
        "workflow: wf}\n",
    )  # fmt: skip
    sqlite = f'{{backend: sqlite, path: "{tmp_path / "store.db"}"}}'
    text = config.read_text().replace(sqlite, f'{{backend: postgres, dsn: "{dsn}"}}')
    config.write_text(text)
    connectors = fleet(config)
    connectors.start("m0")
    _produce(bootstrap, topic, [f"k{i}" for i in range(10)])
    wait_for(lambda: len(_actions(tmp_path)) == 10, timeout=90, what="the first actions")
    return connectors


def _outage_while_events_come(pg_proxy: PgProxy, bootstrap: str, topic: str) -> None:
    """PostgreSQL refuses new connections and loses its open ones; 10 more events come."""
    pg_proxy.refuse(True)
    pg_proxy.reset_all()
    _produce(bootstrap, topic, [f"k{i}" for i in range(10, 20)])


def test_a_store_outage_is_a_line_when_it_begins_and_one_when_it_ends(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
    pg_proxy: PgProxy,
    fleet: Callable[[Path], Fleet],
) -> None:
    """PostgreSQL refuses connections for a while under a running connector: no
    traceback per retry, one line with the cause when it begins and one when it is back,
    and the events that came meanwhile are all checkpointed after."""
    topic = new_topic(2)
    _running_on_postgres(tmp_path, bootstrap, topic, pg_proxy.dsn(pg_store_url()), fleet)
    _outage_while_events_come(pg_proxy, bootstrap, topic)
    wait_for(lambda: "unavailable" in _log(tmp_path), timeout=60, what="the outage line")
    began = time.monotonic()
    # Down for a while: the connector retries with backoff (0.5 s doubling) all along.
    wait_for(lambda: time.monotonic() - began > 8, timeout=20, what="the outage to last")
    pg_proxy.refuse(False)
    wait_for(lambda: len(_actions(tmp_path)) == 20, timeout=90, what="the events after it")
    wait_for(lambda: "is back after" in _log(tmp_path), timeout=30, what="the line it is back")
    log = _log(tmp_path)
    assert "Traceback" not in log
    outage = [line for line in log.splitlines() if "unavailable" in line]
    assert 1 <= len(outage) <= 3, outage  # the pipeline's and the dispatcher's first lines
    assert all("refused" in line or "closed the connection" in line for line in outage), outage


def test_sigterm_during_a_store_outage_stops_the_connector_and_loses_nothing(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
    pg_proxy: PgProxy,
    fleet: Callable[[Path], Fleet],
) -> None:
    """SIGTERM while PostgreSQL refuses: the consumer's last revoke asks the dispatcher to
    release its partitions, and the dispatcher ran no command while the store failed, so
    the process waited for the store (the seeded nemesis found it: 60 s and more). It now
    stops within seconds; what it delivered and could not settle comes again, same ids."""
    topic = new_topic(2)
    dsn = pg_proxy.dsn(pg_store_url())
    connectors = _running_on_postgres(tmp_path, bootstrap, topic, dsn, fleet)
    _outage_while_events_come(pg_proxy, bootstrap, topic)
    wait_for(lambda: "(dispatcher) unavailable" in _log(tmp_path), timeout=60,
             what="the dispatcher's outage line")  # fmt: skip
    connectors.signal("m0", signal.SIGTERM)
    proc = connectors.procs["m0"]
    began = time.monotonic()
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit 40 s after SIGTERM:\n{_log(tmp_path)[-3000:]}") from None
    stopped_in = time.monotonic() - began
    pg_proxy.refuse(False)
    connectors.start("m0")  # the next start (same member id: at once) fires the rest
    keys = {f"k{i}" for i in range(20)}
    wait_for(lambda: {a["event_key"] for a in _actions(tmp_path)} == keys, timeout=90,
             what="every event's action after the outage")  # fmt: skip
    print(f"stopped {stopped_in:.1f}s after SIGTERM, exit {proc.returncode}")
    ids: dict[str, set[str]] = {}
    for action in _actions(tmp_path):  # a repeat after the outage keeps its id
        ids.setdefault(action["event_key"], set()).add(action["action_id"])
    assert all(len(one) == 1 for one in ids.values()), ids
    assert "Traceback" not in _log(tmp_path)


def test_a_partition_paused_by_a_failed_claim_is_read_when_assigned_back(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    pg_store_url: Callable[[], str],
    pg_proxy: PgProxy,
) -> None:
    """Both partitions wait, paused, for the store; another member takes one of them and
    leaves once the store is back, so it is assigned back. librdkafka keeps a pause across
    a revocation: the partition assigned back must be resumed, not left unread (the seeded
    nemesis found it: a member restarted during a PostgreSQL outage)."""
    topic = new_topic(2)
    events = [Event(key=f"c{i}", value=str(i), namespace="shop") for i in range(40)]
    rules = [
        Rule.model_validate(
            {"name": "each", "namespace": "shop", "key": "*", "action": "start", "workflow": "w"}
        )
    ]
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, event in enumerate(events):
        producer.produce(
            topic, key=event.key, value=record_value(event), headers=record_headers(event),
            partition=i % 2,
        )  # fmt: skip
    assert producer.flush(30) == 0
    with open_store(pg_proxy.dsn(pg_store_url())) as store:
        pg_proxy.refuse(True)
        with _running(bootstrap, group_id, topic, store, rules) as (pipeline, _, target):
            wait_for(lambda: pipeline.stats.claiming == 2, timeout=60, what="claims to fail")
            other = Consumer(
                {"bootstrap.servers": bootstrap, "group.id": group_id,
                 "partition.assignment.strategy": "cooperative-sticky",
                 "enable.auto.commit": False}
            )  # fmt: skip

            def took(consumer: Consumer, partitions: list[TopicPartition]) -> None:
                consumer.incremental_assign(partitions)
                consumer.pause(partitions)

            other.subscribe([topic], on_assign=took)

            def polled(condition: Callable[[], bool]) -> Callable[[], bool]:
                return lambda: other.poll(0.2) is None and condition()

            try:
                wait_for(
                    polled(lambda: len(other.assignment()) == 1 and pipeline.stats.claiming == 1),
                    timeout=90, what="one partition handed over",
                )  # fmt: skip
                pg_proxy.refuse(False)
                wait_for(
                    polled(lambda: pipeline.stats.claiming == 0 and len(pipeline.owned) == 1),
                    timeout=60, what="the other partition claimed",
                )  # fmt: skip
            finally:
                other.close()  # its partition goes back to the pipeline
            wait_for(lambda: len(pipeline.owned) == 2, timeout=60, what="the partition back")
            wait_for(lambda: len(set(target.ids())) == 40, timeout=60, what="every action")
        assert store.count_events() == 40


def test_a_member_fenced_by_its_own_instance_id_stops_instead_of_stalling(
    bootstrap: str, new_topic: Callable[..., str], group_id: str
) -> None:
    """Another consumer joins under the pipeline's static instance id: Kafka fences the
    pipeline's consumer for good (the nemesis saw it after a broker restart). librdkafka
    reports it as an error of code _FATAL, not flagged fatal itself; the pipeline must stop
    with KafkaFatal (a supervisor restarts it) rather than poll a dead consumer forever."""
    topic = new_topic(1)
    rules = [
        Rule.model_validate(
            {"name": "each", "namespace": "shop", "key": "*", "action": "start", "workflow": "w"}
        )
    ]
    settings = PipelineSettings(
        bootstrap, group_id, {topic: "shop"}, linger_ms=20, group_instance_id="twin",
        kafka_properties={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    )  # fmt: skip
    with open_store("memory://") as store:
        dispatcher = Dispatcher(store, {"log": Recorder()})
        pipeline = Pipeline(settings, store, TriggerEngine(rules), dispatcher)
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                pipeline.run(threading.Event())
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        dispatcher.start()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        twin = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group_id, "group.instance.id": "twin",
             "partition.assignment.strategy": "cooperative-sticky",
             "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
        )  # fmt: skip
        try:
            wait_for(lambda: pipeline.owned, timeout=60, what="the pipeline's partition")
            twin.subscribe([topic])
            wait_for(
                lambda: twin.poll(0.2) is None and outcome, timeout=90, what="the pipeline to stop"
            )
        finally:
            twin.close()
            pipeline.close()
            dispatcher.stop()
        (error,) = outcome
        assert isinstance(error, KafkaFatal), error
        assert "fenced" in str(error).lower()


# -- a partition that starts reading must read (connector.pipeline.readwatch) ------------

EACH_RULE = [
    Rule.model_validate(
        {"name": "each", "namespace": "shop", "key": "*", "action": "start", "workflow": "wf"}
    )
]


def test_an_assigned_partition_that_fetches_nothing_is_sought_again(
    bootstrap: str, new_topic: Callable[..., str], group_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A client that fetches nothing of a partition Kafka holds records of (librdkafka
    fetching a recreated topic under its old id does that silently; here the partition is
    paused behind the pipeline's back) is sought again and reads."""
    topic = new_topic(1)
    with (
        caplog.at_level("WARNING", "connector.pipeline.pipeline"),
        open_store("memory://") as store,
        _running(bootstrap, group_id, topic, store, EACH_RULE, read_watch_after=0.5) as (
            pipeline, _, target,
        ),
    ):  # fmt: skip
        tp = (topic, 0)

        def looked() -> bool:  # Kafka held nothing yet; the assignment is long done
            watched = pipeline._read_watch.get(tp)
            return watched is not None and watched.asked >= 1

        wait_for(looked, timeout=60, what="a first look at the assigned partition")
        consumer = pipeline._consumer
        assert consumer is not None
        # On the pipeline's thread: a pause from another thread waits for the client's
        # reply (tens of seconds here) while that thread keeps polling.
        pipeline.between_batches(lambda: consumer.pause([TopicPartition(topic, 0)])).result(30)
        _produce_events(
            bootstrap, topic, [Event(key=f"k{i}", value=str(i), namespace="shop") for i in range(5)]
        )
        wait_for(lambda: store.count_events() == 5, timeout=90, what="the 5 events read")
        wait_for(lambda: len(set(target.ids())) == 5, timeout=60, what="their 5 actions")
    assert f"{topic}[0]: nothing read since it was assigned though Kafka holds offsets 0..4; " \
        "seeking to 0 again" in caplog.text  # fmt: skip


def test_a_partition_whose_rest_is_transaction_markers_is_not_taken_for_a_stale_client(
    bootstrap: str, new_topic: Callable[..., str], group_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Under ``read_committed`` a partition can hold offsets that yield no event (commit and
    abort markers, aborted records): assigned at the store's offset before them, it reads
    nothing and must not be sought again or its client given up."""
    topic = new_topic(1)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    for commit, keys in ((True, ["a", "b", "c"]), (False, ["x", "y"])):
        producer.begin_transaction()
        for key in keys:
            event = Event(key=key, value=key, namespace="shop")
            producer.produce(
                topic, key=key, value=record_value(event), headers=record_headers(event)
            )
        assert producer.flush(30) == 0
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    tp = (topic, 0)
    with open_store("memory://") as store:
        with _running(bootstrap, group_id, topic, store, EACH_RULE) as (pipeline, _, _):
            wait_for(lambda: store.count_events() == 3, timeout=90, what="the 3 committed")
        # Offsets 3..6: a commit marker, two aborted records, an abort marker.
        with (
            caplog.at_level("WARNING", "connector.pipeline.pipeline"),
            _running(bootstrap, group_id, topic, store, EACH_RULE, read_watch_after=0.5) as (
                pipeline, _, _,
            ),
        ):  # fmt: skip

            def asked() -> int:
                watched = pipeline._read_watch.get(tp)
                return watched.asked if watched is not None else 0

            wait_for(lambda: asked() >= 3, timeout=60, what="three looks at the partition")
            assert pipeline.ownership.state(tp) is State.OWNED
        assert store.count_events() == 3
    assert "again" not in caplog.text and "fatal" not in caplog.text
