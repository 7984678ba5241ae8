"""Correlation rules in a real ``run`` against the real broker, SIGKILLed mid-window.

Plain producers write payments and shipments to two topics of one namespace, the order id
in each JSON value. A correlated ``all_of`` joins them per order; a ``sequence`` fires
when the payment happened before the shipment (event time: the records' timestamps). The
connector is SIGKILLed once some orders' payments are checkpointed and their shipments
not (their sets are open rows in the store: the kill falls inside their windows), then
started again. Each order's actions then exist exactly once, in the store and in the log
target, with the ids ``action_id(rule, event ids)`` computed here from the records'
offsets.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from checkpoint import open_store
from kec.action import action_id
from tests.support import start_run, wait_for

T0 = 1_700_000_000_000
ORDERS = 40
EARLY = 24  # orders whose shipment is produced before the kill


def _late(i: int) -> bool:
    """Orders whose shipment happened (event time) before their payment."""
    return i % 4 == 3


def _produce(bootstrap: str, topic: str, key: str, rows: list[tuple[int, int]]) -> dict[int, str]:
    """Write ``(order, timestamp)`` records; the event id (topic/partition/offset) of each
    order's record."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    ids: dict[int, str] = {}

    def delivered(order: int) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            assert err is None, err
            ids[order] = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"

        return report

    for order, ts in rows:
        producer.produce(
            topic, key=key, value=json.dumps({"order": {"id": order}}), timestamp=ts,
            on_delivery=delivered(order),
        )  # fmt: skip
    assert producer.flush(30) == 0
    return ids


def test_joins_and_sequences_survive_a_sigkill_mid_window(
    tmp_path: Path, bootstrap: str, new_topic: Callable[..., str]
) -> None:
    payments, shipments = new_topic(2), new_topic(2)
    log, store_path = tmp_path / "actions.jsonl", tmp_path / "store.db"
    config = tmp_path / "connector.yaml"
    config.write_text(
        f"""
kafka:
  bootstrap_servers: "{bootstrap}"
  # the killed member's partitions move to the restarted one after this
  properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 500}}
group_id: g-{payments}
namespaces:
  orders: {{topics: ["{payments}", "{shipments}"]}}
checkpoint: {{backend: sqlite, path: "{store_path}"}}
pipeline: {{batch_size: 50, linger_ms: 20}}
targets:
  log: {{type: log, path: "{log}"}}
rules:
  - name: join
    namespace: orders
    all_of: {{keys: [payment, shipment], window: 600, policy: first}}
    correlate: {{json: order.id, ttl: 3600}}
    action: start
    workflow: ship
  - name: seq
    namespace: orders
    sequence: {{keys: [payment, shipment], window: 600}}
    correlate: {{json: order.id}}
    action: notify
"""
    )
    pay_at = {i: T0 + i * 1000 for i in range(ORDERS)}
    ship_at = {i: pay_at[i] + (-500 if _late(i) else 500) for i in range(ORDERS)}
    pay_ids = _produce(bootstrap, payments, "payment", list(pay_at.items()))
    ship_ids = _produce(bootstrap, shipments, "shipment", [(i, ship_at[i]) for i in range(EARLY)])

    stderr = tmp_path / "run.log"
    first = start_run(config, stderr)
    try:
        wait_for(lambda: store_path.exists(), timeout=60, what="the store")
        with open_store(f"sqlite:///{store_path}") as store:

            def checkpointed() -> bool:
                assert first.poll() is None, stderr.read_text()[-3000:]
                return store.count_events() == ORDERS + EARLY

            try:
                wait_for(checkpointed, timeout=90, what="the first events checkpointed")
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}: {store.count_events()} of {ORDERS + EARLY}; "
                    f"log: {stderr.read_text()[-3000:]}"
                ) from None
            open_sets = store.read_rule_state_range('["join","join",', 1000)
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    # Inside the windows: the orders whose shipment is still to come have open sets.
    assert {json.loads(k)[3] for k, _ in open_sets} == {str(i) for i in range(EARLY, ORDERS)}

    ship_ids |= _produce(
        bootstrap, shipments, "shipment", [(i, ship_at[i]) for i in range(EARLY, ORDERS)]
    )
    second = start_run(config, stderr)
    expected = {action_id("join", (pay_ids[i], ship_ids[i])) for i in range(ORDERS)} | {
        action_id("seq", (pay_ids[i], ship_ids[i])) for i in range(ORDERS) if not _late(i)
    }
    try:

        def delivered() -> set[str]:
            assert second.poll() is None, stderr.read_text()[-3000:]
            if not log.exists():
                return set()
            ids = {json.loads(line)["action_id"] for line in log.read_text().splitlines()}
            return ids if ids >= expected else set()

        try:
            wait_for(delivered, timeout=90, what="every action delivered")
        except AssertionError:
            seen = log.read_text().splitlines() if log.exists() else []
            got = {json.loads(line)["action_id"] for line in seen}
            raise AssertionError(
                f"{len(expected - got)} of {len(expected)} actions missing; "
                f"log: {stderr.read_text()[-4000:]}"
            ) from None
        with open_store(f"sqlite:///{store_path}") as store:
            wait_for(lambda: store.count_events() == 2 * ORDERS, timeout=30, what="every event")
            by_rule = store.count_actions_by_rule()
            left = store.read_rule_state_range('["join","join",', 1000)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(60)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait(30)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {line["action_id"] for line in lines} == expected, "stable ids, nothing else"
    assert by_rule == {"join": ORDERS, "seq": ORDERS - ORDERS // 4}, "each action once"
    # a redelivery after the kill carries the same id (the target deduplicates by it)
    repeats = Counter(line["action_id"] for line in lines)
    assert all(n <= 2 for n in repeats.values())
    assert left == [], "every set completed and was deleted"
