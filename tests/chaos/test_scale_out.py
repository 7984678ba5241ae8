"""Several connector processes in one group on one PostgreSQL store, killed and paused.

A webhook receiver in the test records which process (``User-Agent``: host and pid)
delivered each idempotency key and answers 503 to the first request of about one key in
twenty. The invariants, checked against the store and the receiver:

* every event is checkpointed once and has exactly one action, whose id is stable;
* every action is delivered (a 2xx for its key);
* without kills, no action is delivered by two processes;
* with kills, actions are delivered more than once only around a kill (the test reports
  how many);
* the first deliveries of one key's actions come in the order of its events.

And two instances completing one ``all_of`` set from two partitions: it fires once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

from confluent_kafka import Producer

from checkpoint import ActionState, open_store
from kec.action import action_id
from kec.codec import record_headers, record_value
from kec.event import Event
from tests.chaos.fleet import Fleet
from tests.chaos.receiver import Receiver
from tests.support import wait_for

SESSION_TIMEOUT_MS = 6000


def _config(
    tmp_path: Path,
    bootstrap: str,
    topic: str,
    dsn: str,
    rules: str,
    target: str,
    processes: int = 1,
) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(
        f"""
kafka:
  bootstrap_servers: "{bootstrap}"
  properties: {{session.timeout.ms: {SESSION_TIMEOUT_MS}, heartbeat.interval.ms: 500}}
group_id: g-{uuid.uuid4().hex[:10]}
namespaces:
  shop: {{topics: ["{topic}"]}}
checkpoint: {{backend: postgres, dsn: "{dsn}"}}
pipeline: {{batch_size: 500, linger_ms: 20, processes: {processes}}}
retry: {{max_attempts: 100, initial_backoff_seconds: 0.2, max_backoff_seconds: 1}}
targets:
{target}
rules:
{rules}
"""
    )
    return path


def _produce(bootstrap: str, topic: str, events: list[Event], rate: float) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    started = time.monotonic()
    for i, event in enumerate(events):
        producer.produce(
            topic, key=event.key, value=record_value(event), headers=list(record_headers(event))
        )
        if i % 500 == 499:
            producer.poll(0)
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not waiting for a result
    assert producer.flush(60) == 0


def _run(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    dsn: str,
    receiver: Receiver,
    chaos: Callable[[Fleet, threading.Event], None] | None,
    members: Sequence[str] = ("m0", "m1", "m2"),
    processes: int = 1,
) -> dict[str, int]:
    count = 20_000
    topic = new_topic(6)
    config = _config(
        tmp_path, bootstrap, topic, dsn,
        rules='  - {name: all, namespace: shop, key: "*", action: notify, target: hook}',
        target=f'  hook: {{type: webhook, url: "{receiver.url}", concurrency: 16, timeout: 5}}',
        processes=processes,
    )  # fmt: skip
    events = [Event(key=f"k{i % 300}", value=str(i), namespace="shop") for i in range(count)]
    expected = {action_id("all", (e.event_id,)) for e in events}
    fleet = Fleet(config, tmp_path)
    for member in members:
        fleet.start(member)
    done = threading.Event()
    chaos_thread = None
    if chaos is not None:
        chaos_thread = threading.Thread(target=chaos, args=(fleet, done), daemon=True)
        chaos_thread.start()
    try:
        # Paced so that the stream lasts as long as the chaos does (about 20 s): every
        # kill lands while events flow.
        _produce(bootstrap, topic, events, rate=1000)
        if chaos_thread is not None:
            chaos_thread.join(120)

        def finished() -> bool:
            fleet.alive()
            return expected <= receiver.keys()

        wait_for(finished, timeout=300, interval=0.5, what="every action delivered")
    finally:
        done.set()  # stops the chaos early only when something above failed
        if chaos_thread is not None:
            chaos_thread.join(120)
        fleet.stop()
    with open_store(dsn) as store:
        assert store.count_events() == count, "every event checkpointed once"
        assert store.count_actions_by_rule() == {"all": count}, "one action per event"
        assert store.count_actions(ActionState.DEAD) == 0
        stored = {e.event_id for e in store.iter_events()}
    assert stored == {e.event_id for e in events}
    assert receiver.keys() == expected, "every action delivered, under its stable id"
    ranks: dict[str, list[int]] = defaultdict(list)  # event key -> first deliveries
    for e in events:
        ranks[e.key].append(receiver.first[action_id("all", (e.event_id,))])
    out_of_order = sum(b < a for r in ranks.values() for a, b in pairwise(r))
    assert out_of_order == 0, f"{out_of_order} first deliveries ahead of an older event's"
    if os.environ.get("KEC_DEBUG_SCALE"):
        where = {action_id("all", (e.event_id,)): e for e in events}
        with receiver.lock:
            twice = [(k, p) for k, p in receiver.delivered.items() if len(set(p)) > 1]
        print("\nDEBUG", sorted((where[k].key, int(where[k].value), p) for k, p in twice)[:40])
    return {
        "events": count,
        "requests": receiver.requests,
        "refused (503)": receiver.refused,
        "repeated deliveries": receiver.repeated(),
        "delivered by two processes": receiver.by_two_processes(),
    }


def test_three_instances_without_kills_deliver_each_action_from_one_process(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
    receiver: Receiver,
) -> None:
    report = _run(tmp_path, bootstrap, new_topic, pg_store_url(), receiver, None)
    print(f"\nscale-out, no kills: {report}")
    assert report["delivered by two processes"] == 0
    assert report["repeated deliveries"] == 0


def test_three_instances_with_sigkills_and_a_sigstop_lose_nothing(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
    receiver: Receiver,
) -> None:
    rng = random.Random(7)
    kills: list[str] = []

    def chaos(fleet: Fleet, abort: threading.Event) -> None:
        abort.wait(2.0)
        for round_ in range(7):
            if abort.is_set():
                break
            member = rng.choice(list(fleet.procs))
            if round_ == 3:  # paused past its session timeout, then resumed: a zombie
                fleet.signal(member, signal.SIGSTOP)
                abort.wait(SESSION_TIMEOUT_MS / 1000 + 4)
                fleet.signal(member, signal.SIGCONT)
                kills.append(f"SIGSTOP {member}")
            else:
                fleet.signal(member, signal.SIGKILL)
                kills.append(f"SIGKILL {member}")
                fleet.start(member)
            abort.wait(rng.uniform(0.8, 1.6))

    report = _run(tmp_path, bootstrap, new_topic, pg_store_url(), receiver, chaos)
    print(f"\nscale-out with {', '.join(kills)}: {report}")
    assert sum(k.startswith("SIGKILL") for k in kills) >= 6
    assert any(k.startswith("SIGSTOP") for k in kills)


def test_two_instances_of_two_processes_with_kills_of_either_lose_nothing(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
    receiver: Receiver,
) -> None:
    """``pipeline.processes: 2``: four pipeline processes in two instances. SIGKILLs of
    single pipeline processes (their supervisor restarts them), of a whole instance (its
    supervisor: the processes die with it; started again), and a pipeline process paused
    past its session timeout."""
    rng = random.Random(11)
    kills: list[str] = []

    def chaos(fleet: Fleet, abort: threading.Event) -> None:
        abort.wait(3.0)
        for round_ in range(6):
            if abort.is_set():
                break
            member = rng.choice(list(fleet.procs))
            # A supervisor just started spawns its processes in a moment (longer on a
            # loaded machine): wait for them rather than kill the instance instead.
            children = fleet.children(member)
            deadline = time.monotonic() + 30
            while not children and time.monotonic() < deadline and not abort.wait(0.2):
                children = fleet.children(member)
            if round_ == 4 or not children:
                fleet.signal(member, signal.SIGKILL)
                kills.append(f"SIGKILL instance {member}")
                fleet.start(member)
            elif round_ == 2:
                child = rng.choice(children)
                os.kill(child, signal.SIGSTOP)
                abort.wait(SESSION_TIMEOUT_MS / 1000 + 4)
                os.kill(child, signal.SIGCONT)
                kills.append(f"SIGSTOP a process of {member}")
            else:
                os.kill(rng.choice(children), signal.SIGKILL)
                kills.append(f"SIGKILL a process of {member}")
            abort.wait(rng.uniform(0.8, 1.6))

    report = _run(
        tmp_path, bootstrap, new_topic, pg_store_url(), receiver, chaos,
        members=("m0", "m1"), processes=2,
    )  # fmt: skip
    print(f"\nscale-out, 2 instances x 2 processes, {', '.join(kills)}: {report}")
    assert sum(k.startswith("SIGKILL a process") for k in kills) >= 3
    assert any(k.startswith("SIGKILL instance") for k in kills)
    assert any(k.startswith("SIGSTOP") for k in kills)


def _sets_across_two_owners(
    tmp_path: Path,
    bootstrap: str,
    topic: str,
    dsn: str,
    rule: str,
    keys: tuple[str, str],
    event_of: Callable[[str, int], Event],
    sets: int,
) -> tuple[dict[str, int], list[str]]:
    """Two processes each owning one of ``topic``'s two partitions; for each of ``sets``
    sets, the event of ``keys[0]`` on partition 0 and of ``keys[1]`` on partition 1, at
    once. Returns the actions per rule and the log target's lines."""
    log = tmp_path / "actions.jsonl"
    config = _config(
        tmp_path, bootstrap, topic, dsn, rules=rule,
        target=f'  log: {{type: log, path: "{log}"}}',
    )  # fmt: skip
    fleet = Fleet(config, tmp_path)
    fleet.start("m0")
    fleet.start("m1")
    try:
        with open_store(dsn) as store:

            def split() -> bool:
                fleet.alive()
                owners = {p.owner for p in store.partitions() if p.tp[0] == topic}
                return len(owners) == 2

            wait_for(split, timeout=90, interval=0.2, what="one partition for each process")
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        for i in range(sets):
            for partition, key in enumerate(keys):
                event = event_of(key, i)
                producer.produce(
                    topic,
                    key=key,
                    value=record_value(event),
                    headers=list(record_headers(event)),
                    partition=partition,
                )
        assert producer.flush(30) == 0
        with open_store(dsn) as store:
            wait_for(
                lambda: store.count_events() == 2 * sets and store.count_actions_by_rule(),
                timeout=120,
                what="every event",
            )
            wait_for(lambda: log.exists() and log.read_text().count("\n") >= sets, timeout=60)
            fired = store.count_actions_by_rule()
    finally:
        fleet.stop()
    return fired, log.read_text().splitlines()


def test_two_owners_complete_an_all_of_set_once(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
) -> None:
    """Each set's two keys arrive at once on two partitions owned by two processes."""
    sets = 300
    fired, lines = _sets_across_two_owners(
        tmp_path, bootstrap, new_topic(2), pg_store_url(),
        "  - {name: join, namespace: shop, all_of: {keys: [left, right], policy: first},"
        " action: START, workflow: wf, task: t}",
        ("left", "right"),
        lambda key, i: Event(key=key, value=str(i), namespace="shop", context=f"run-{i}"),
        sets,
    )  # fmt: skip
    contexts = Counter(line.split('"context":"', 1)[1].split('"', 1)[0] for line in lines)
    assert fired == {"join": sets}, "every set fired exactly once"
    assert set(contexts) == {f"run-{i}" for i in range(sets)}


def test_two_owners_join_sets_on_a_business_key_once(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
) -> None:
    """The same with a business key: each order's payment and shipment, on two
    partitions owned by two processes, carry the order id in their JSON values (no
    context); the set is one row per order, locked by whichever owner writes it."""
    orders = 300
    fired, text = _sets_across_two_owners(
        tmp_path, bootstrap, new_topic(2), pg_store_url(),
        "  - {name: join, namespace: shop, all_of: {keys: [payment, shipment],"
        " window: 600, policy: first}, correlate: {json: order.id, ttl: 3600},"
        " action: start, workflow: ship}",
        ("payment", "shipment"),
        lambda key, i: Event(key=key, value=f'{{"order": {{"id": {i}}}}}', namespace="shop"),
        orders,
    )  # fmt: skip
    lines = [json.loads(line) for line in text]
    joined = Counter(line["payload"]["correlation"] for line in lines)
    assert fired == {"join": orders}, "every order's set fired exactly once"
    assert joined == {str(i): 1 for i in range(orders)}
    for line in lines:
        events = line["payload"]["events"]
        assert events["payment"]["value"] == events["shipment"]["value"]
