"""Time-driven rules (debounce, batch, absence) end to end: ``event-connector run`` as a
real process on a real broker and a SQLite store, records produced with explicit
timestamps (event time), the process SIGKILLed while a window is open (its state is in
the store, its action not made yet: checked before the kill), then restarted: every
expected action is made once, with the id derived from the events it closes.

The idle rule fires what the restart finds due: ``pipeline.idle_interval: 1`` moves an
idle partition's event time to the present every second (docs/architecture.md,
"Time-driven rules").
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from checkpoint import open_store
from kec.action import action_id
from kec.errors import StoreMissing
from tests.support import start_run, wait_for


def _config(
    tmp_path: Path,
    bootstrap: str,
    topic: str,
    group_id: str,
    rule: str,
    *,
    store: str = "",
    name: str = "connector",
    actions: str = "actions.jsonl",
) -> Path:
    path = tmp_path / f"{name}.yaml"
    store = store or f"{{backend: sqlite, path: {tmp_path}/state/checkpoints.db}}"
    path.write_text(
        textwrap.dedent(
            f"""\
            kafka:
              bootstrap_servers: "{bootstrap}"
              properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 500}}
            group_id: {group_id}
            namespaces:
              shop: {{topics: [{topic}]}}
            checkpoint: {store}
            pipeline: {{idle_interval: 1, linger_ms: 50}}
            targets:
              log: {{type: log, path: {tmp_path}/{actions}}}
            rules:
            """
        )
        + textwrap.indent(textwrap.dedent(rule), "  ")
    )
    return path


def _produce(
    bootstrap: str, topic: str, records: Sequence[tuple[str, Any, int]], partition: int = -1
) -> list[str]:
    """Send (key, JSON value, timestamp ms) in order, one partition per key as the
    connector's producers do (or all to ``partition``); return each record's event id
    (``topic/partition/offset``)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    ids: dict[int, str] = {}

    def delivered(i: int) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            ids[i] = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"

        return done

    for i, (key, value, timestamp) in enumerate(records):
        producer.produce(
            topic, key=key, value=json.dumps(value), timestamp=timestamp,
            on_delivery=delivered(i), partition=partition,
        )  # fmt: skip
    assert producer.flush(30) == 0
    return [ids[i] for i in range(len(records))]


def _actions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _missing(url: str) -> bool:
    return url.startswith("sqlite://") and not Path(url.removeprefix("sqlite://")).exists()


def _state(url: str, prefix: str) -> dict[str, Any]:
    """The committed rule-state rows whose keys start with ``prefix``, parsed."""
    if _missing(url):
        return {}
    with open_store(url, create=False) as store:
        return {k: json.loads(v) for k, v in store.read_rule_state_range(prefix, 100)}


def _events(url: str) -> int:
    if _missing(url):
        return 0
    with open_store(url, create=False) as store:
        return store.count_events()


@contextmanager
def _running(config: Path, log: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The ``run`` processes started in the block (a list: the test restarts it); each
    is killed at the end if still running."""
    processes = [start_run(config, log)]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def _claimed(url: str, topic: str, partitions: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until ``run`` owns the topic's partitions (it reads them from then on)."""

    def owned() -> bool:
        assert process.poll() is None, "run exited"
        if _missing(url):
            return False
        try:
            with open_store(url, create=False) as store:
                owned = [p for p in store.partitions() if p.tp[0] == topic and p.owner]
        except StoreMissing:  # run has not created it yet
            return False
        return len(owned) == partitions

    wait_for(owned, timeout=90, interval=0.2, what="the partitions claimed")


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def _finish(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log.read_text()[-3000:]


def _by_id(path: Path) -> dict[str, dict[str, Any]]:
    """The actions delivered, by id; a line repeated after the kill has the same id."""
    return {str(a["idempotency_key"]): a for a in _actions(path)}


def test_debounce_sigkilled_mid_burst_fires_each_burst_once(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(2)
    rule = """\
    - name: settle
      namespace: shop
      key: "item-*"
      action: notify
      debounce: {quiet: 12, carry: last}
    """
    config, log = _config(tmp_path, bootstrap, topic, group_id, rule), tmp_path / "run.log"
    url, actions = f"sqlite://{tmp_path}/state/checkpoints.db", tmp_path / "actions.jsonl"
    with _running(config, log) as processes:
        _claimed(url, topic, 2, processes[-1])
        base = int(time.time() * 1000)
        burst = [("item-1", {"n": i}, base + 100 * i) for i in range(3)]
        burst += [("item-2", {"n": i}, base + 50 * i) for i in range(2)]
        first_ids = _produce(bootstrap, topic, burst)

        def open_groups() -> int:
            ended = processes[-1].poll()  # only by the test's SIGKILL or SIGTERM
            assert ended in (None, 0, -signal.SIGKILL), log.read_text()[-3000:]
            rows = _state(url, '["timed","settle"')
            return sum(row["groups"][g]["n"] for row in rows.values() for g in row["groups"])

        wait_for(lambda: open_groups() == 5, timeout=90, what="both bursts checkpointed")
        killed_at = int(time.time() * 1000)
        _kill(processes[-1])
        # The kill fell inside the window: both bursts open in the store, nothing made, and
        # the quiet period (12 s after each burst's last event) not over yet.
        assert killed_at < base + 12_000, "the burst was closed before the kill"
        assert _actions(actions) == []
        assert open_groups() == 5

        processes.append(start_run(config, log))
        wait_for(lambda: len(_by_id(actions)) == 2, timeout=90, what="two bursts fired")
        second = _produce(bootstrap, topic, [("item-1", {"n": 9}, int(time.time() * 1000))])
        wait_for(lambda: len(_by_id(actions)) == 3, timeout=90, what="the third burst")
        _finish(processes[-1], log)

    expected = {
        action_id("settle", (first_ids[0], first_ids[2])): ("item-1", 3, first_ids[2]),
        action_id("settle", (first_ids[3], first_ids[4])): ("item-2", 2, first_ids[4]),
        action_id("settle", (second[0],)): ("item-1", 1, second[0]),
    }
    made = _by_id(actions)
    assert set(made) == set(expected)
    for key, (item, count, last) in expected.items():
        assert made[key]["event_key"] == item
        assert made[key]["payload"]["count"] == count
        assert made[key]["payload"]["event_id"] == last
    with open_store(url, create=False) as store:
        assert store.count_actions_by_rule() == {"settle": 3}, "each queued once"
    assert _state(url, '["timed"') == {}, "no burst left open"


def test_batch_sigkilled_with_a_batch_open_fires_it_once_after_the_restart(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(1)
    rule = """\
    - name: bulk
      namespace: shop
      key: "row-*"
      action: start
      workflow: loader
      batch: {size: 5, within: 12}
    """
    config, log = _config(tmp_path, bootstrap, topic, group_id, rule), tmp_path / "run.log"
    url, actions = f"sqlite://{tmp_path}/state/checkpoints.db", tmp_path / "actions.jsonl"
    with _running(config, log) as processes:
        _claimed(url, topic, 1, processes[-1])
        base = int(time.time() * 1000)
        ids = _produce(bootstrap, topic, [(f"row-{i}", {"i": i}, base + i) for i in range(12)])

        def held() -> int:
            ended = processes[-1].poll()  # only by the test's SIGKILL or SIGTERM
            assert ended in (None, 0, -signal.SIGKILL), log.read_text()[-3000:]
            rows = _state(url, '["timed","bulk"')
            return sum(len(g["events"]) for row in rows.values() for g in row["groups"].values())

        wait_for(lambda: _events(url) == 12 and held() == 2, timeout=90, what="12 checkpointed")
        wait_for(lambda: len(_by_id(actions)) == 2, timeout=30, what="the two full batches")
        killed_at = int(time.time() * 1000)
        _kill(processes[-1])
        assert killed_at < base + 12_000, "the open batch's time was up before the kill"
        assert held() == 2 and len(_by_id(actions)) == 2

        processes.append(start_run(config, log))
        wait_for(lambda: len(_by_id(actions)) == 3, timeout=90, what="the open batch fired")
        _finish(processes[-1], log)

    made = _by_id(actions)
    expected = [tuple(ids[0:5]), tuple(ids[5:10]), tuple(ids[10:12])]
    assert set(made) == {action_id("bulk", group) for group in expected}
    for group in expected:
        action = made[action_id("bulk", group)]
        assert [e["event_id"] for e in action["payload"]["events"]] == list(group)
        assert [e["value"]["i"] for e in action["payload"]["events"]] == [
            int(i.rsplit("/", 1)[1]) for i in group
        ]
    reasons = Counter(a["payload"]["reason"] for a in made.values())
    assert reasons == {"size": 2, "time": 1}
    with open_store(url, create=False) as store:
        assert store.count_actions_by_rule() == {"bulk": 3}


def test_absence_sigkilled_before_the_deadline_times_out_the_unanswered_once(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(2)
    rule = """\
    - name: unpaid
      namespace: shop
      key: order-created
      action: notify
      absence: {then: order-paid, within: 12, by: value.order}
    """
    config, log = _config(tmp_path, bootstrap, topic, group_id, rule), tmp_path / "run.log"
    url, actions = f"sqlite://{tmp_path}/state/checkpoints.db", tmp_path / "actions.jsonl"
    with _running(config, log) as processes:
        _claimed(url, topic, 2, processes[-1])
        base = int(time.time() * 1000)
        created = _produce(
            bootstrap, topic, [("order-created", {"order": n}, base + n) for n in (1, 2, 3)]
        )
        _produce(bootstrap, topic, [("order-paid", {"order": 2}, base + 1_000)])

        def pending() -> int:
            ended = processes[-1].poll()  # only by the test's SIGKILL or SIGTERM
            assert ended in (None, 0, -signal.SIGKILL), log.read_text()[-3000:]
            return sum(len(row.get("a", [])) for row in _state(url, '["absence"').values())

        wait_for(lambda: _events(url) == 4 and pending() == 2, timeout=90, what="A, A, A, B")
        killed_at = int(time.time() * 1000)
        _kill(processes[-1])
        assert killed_at < base + 12_000, "the deadline passed before the kill"
        assert _actions(actions) == [] and pending() == 2

        processes.append(start_run(config, log))
        wait_for(lambda: len(_by_id(actions)) == 2, timeout=90, what="two timeouts")
        _finish(processes[-1], log)

    made = _by_id(actions)
    assert set(made) == {action_id("unpaid", (created[0],)), action_id("unpaid", (created[2],))}
    assert sorted(a["payload"]["value"]["order"] for a in made.values()) == [1, 3]
    assert all(a["payload"]["deadline"] == a["payload"]["create_time"] + 12_000
               for a in made.values())  # fmt: skip
    with open_store(url, create=False) as store:
        assert store.count_actions_by_rule() == {"unpaid": 2}
    rows = _state(url, '["absence"')
    assert all("a" not in row for row in rows.values()), "no A left pending"


def test_throttle_sigkilled_within_a_period_counts_the_rest_in_the_next_action(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(1)
    rule = """\
    - name: page
      namespace: shop
      key: "sensor-*"
      action: notify
      throttle: {period: 60}
    """
    config, log = _config(tmp_path, bootstrap, topic, group_id, rule), tmp_path / "run.log"
    url, actions = f"sqlite://{tmp_path}/state/checkpoints.db", tmp_path / "actions.jsonl"
    with _running(config, log) as processes:
        _claimed(url, topic, 1, processes[-1])
        base = int(time.time() * 1000)
        first = _produce(bootstrap, topic, [("sensor-1", {"t": i}, base + i) for i in range(4)])

        def counted() -> int:
            ended = processes[-1].poll()  # only by the test's SIGKILL or SIGTERM
            assert ended in (None, 0, -signal.SIGKILL), log.read_text()[-3000:]
            rows = _state(url, '["timed","page"')
            return sum(g["n"] for row in rows.values() for g in row["groups"].values())

        wait_for(lambda: _events(url) == 4 and counted() == 3, timeout=90, what="3 counted")
        wait_for(lambda: len(_by_id(actions)) == 1, timeout=30, what="the first page")
        _kill(processes[-1])
        assert counted() == 3 and len(_by_id(actions)) == 1, "the kill fell inside the period"

        processes.append(start_run(config, log))
        # The next period (event time: the record's timestamp, a minute on).
        later = _produce(bootstrap, topic, [("sensor-1", {"t": 9}, base + 61_000)])
        wait_for(lambda: len(_by_id(actions)) == 2, timeout=90, what="the next page")
        _finish(processes[-1], log)

    made = _by_id(actions)
    assert set(made) == {action_id("page", (first[0],)), action_id("page", (later[0],))}
    assert made[action_id("page", (first[0],))]["payload"]["suppressed"] == 0
    assert made[action_id("page", (later[0],))]["payload"]["suppressed"] == 3
    with open_store(url, create=False) as store:
        assert store.count_actions_by_rule() == {"page": 2}


def test_absence_across_partitions_of_two_instances_on_postgresql_one_sigkilled(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    pg_store_url: Callable[[], str],
) -> None:
    """Two instances share a PostgreSQL store and the topic's four partitions; A and B of
    one order live on different partitions. One instance is SIGKILLed with every deadline
    ahead; the other takes its partitions over and fires each unanswered A once, from
    the partition A came from."""
    topic, url = new_topic(4), pg_store_url()
    rule = """\
    - name: unpaid
      namespace: shop
      key: "created-*"
      action: notify
      absence: {then: "paid-*", within: 15, by: value.order}
    """
    store = f'{{backend: postgres, dsn: "{url}"}}'
    configs = [
        _config(tmp_path, bootstrap, topic, group_id, rule, store=store, name=f"m{i}",
                actions=f"actions-{i}.jsonl")
        for i in (0, 1)
    ]  # fmt: skip
    logs = [tmp_path / "m0.log", tmp_path / "m1.log"]
    outputs = [tmp_path / "actions-0.jsonl", tmp_path / "actions-1.jsonl"]

    def made() -> dict[str, dict[str, Any]]:
        return {k: v for path in outputs for k, v in _by_id(path).items()}

    def owners() -> dict[int, str]:
        with open_store(url, create=False) as opened:
            return {p.tp[1]: p.owner for p in opened.partitions() if p.tp[0] == topic and p.owner}

    def split() -> bool:
        return len(set(owners().values())) == 2

    first, second = start_run(configs[0], logs[0]), start_run(configs[1], logs[1])
    processes = [first, second]
    try:
        _claimed(url, topic, 4, first)
        wait_for(split, timeout=90, interval=0.3, what="each instance owning some")
        # The instance to be killed (its owner id holds its pid) owns `doomed`.
        doomed = min(p for p, owner in owners().items() if f"-{first.pid}-" in owner)
        kept = min(p for p, owner in owners().items() if f"-{first.pid}-" not in owner)
        base = int(time.time() * 1000)
        created = [
            _produce(bootstrap, topic, [(f"created-{n}", {"order": n}, base + n)],
                     doomed if n % 2 else kept)[0]
            for n in range(1, 9)
        ]  # fmt: skip
        for n in (2, 4, 6, 8):  # B on the other instance's partition, or on A's own
            _produce(bootstrap, topic, [(f"paid-{n}", {"order": n}, base + 2_000)],
                     doomed if n % 4 else kept)  # fmt: skip

        def pending() -> int:
            return sum(len(row.get("a", [])) for row in _state(url, '["absence"').values())

        wait_for(lambda: _events(url) == 12 and pending() == 4, timeout=90, what="8 A, 4 B")
        killed_at = int(time.time() * 1000)
        _kill(first)
        assert killed_at < base + 15_000, "a deadline passed before the kill"
        assert made() == {} and pending() == 4, "the kill fell inside the window"

        def fired() -> bool:
            assert second.poll() is None, logs[1].read_text()[-3000:]
            return len(made()) == 4

        wait_for(fired, timeout=120, interval=0.3, what="the four timeouts, after the takeover")
        restarted = start_run(configs[0], logs[0])  # a rebalance again: nothing more fires
        processes.append(restarted)
        wait_for(split, timeout=90, interval=0.3, what="each instance owning some")
        _finish(restarted, logs[0])
        _finish(second, logs[1])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    assert set(made()) == {action_id("unpaid", (created[n - 1],)) for n in (1, 3, 5, 7)}
    # The unanswered As were all on the killed instance's partition: the survivor fired
    # them, and the killed one, restarted, fired nothing again.
    assert {e.split("/")[1] for e in created[0::2]} == {str(doomed)}
    assert set(_by_id(outputs[1])) == set(made()) and _by_id(outputs[0]) == {}
    with open_store(url, create=False) as opened:
        assert opened.count_actions_by_rule() == {"unpaid": 4}, "each queued once"
    assert pending() == 0
