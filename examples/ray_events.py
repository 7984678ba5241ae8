"""The Ray Workflows events seed, runnable against a real Kafka broker.

The seed's examples on this project's parts, each event a durable step of
:func:`listeners.durable.wait_for_event` in one checkpoint store:

* *Using events*: two :class:`~listeners.timer.TimerListener` steps awaited together
  (the seed's ``gather``): the workflow goes on once both have fired. The seed waits 60
  and 30 seconds; this example waits ``--delay`` and half of it.
* *Kafka queue event*: a record is produced, the
  :class:`~listeners.kafka.QueueEventListener` step returns it, and its offset is
  committed only after the step is checkpointed (the seed's ``event_checkpointed``).
* *HTTP events*: an events gateway (``event-connector gateway``; here started in this
  process on a free port) receives ``POST /event/send_event/<workflow_id>`` with
  ``{"event_key", "event_payload"}`` sent with httpx, and an
  :class:`~listeners.http.HTTPListener` step returns the payload. The reply codes are
  handled as in the seed (200, 500, 404). The gateway only writes to Kafka: the
  connector's pipeline (``event-connector run`` with an ``http:`` section; here the same
  parts in a thread) checkpoints its topic, and the gateway answers once it has.

Run it again with the same ``--store`` and ``--workflow-id`` and every step is resumed
from its checkpoint: the same events come back, nothing is polled, and nothing new is
produced or sent for a step that is already done.

Run it with a broker (``event-connector dev-broker`` prints one)::

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/ray_events.py

Its last line is a JSON summary, for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from checkpoint import open_store
from checkpoint.base import StepStore
from connector.gateway import Gateway, GatewayServer, GatewaySettings
from connector.gateway.waiters import HttpIndex
from connector.pipeline import PipelineSettings
from connector.rules.trigger import TriggerEngine
from connector.service import ConnectorService
from kec.codec import record_headers, record_value
from kec.event import Event
from kec.kafka import Connection
from listeners import HTTPListener, QueueEventListener, TimerListener
from listeners import http as http_listener
from listeners import kafka as kafka_listener
from listeners.durable import wait_for_event

EVENT_KEY = "my_event_key"
TIMEOUT = 60.0  # seconds any one event may take to arrive


def _ensure_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic]
    try:
        future.result(timeout=30)
    except KafkaException as exc:  # an existing topic (a re-run) is fine
        error = exc.args[0] if exc.args else None
        if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        return int(tp.offset)
    finally:
        consumer.close()


def _step(store: StepStore, step_id: str) -> str:
    """Say whether a step runs now or resumes from its checkpoint."""
    return "resumed" if store.get_step(step_id) is not None else "new"


# -- the seed's examples ------------------------------------------------------------------


async def timers(store: StepStore, workflow_id: str, delay: float) -> list[Event]:
    """Two timer steps, gathered: both must fire (the seed: 60 s and 30 s)."""
    now = time.time()
    steps = [f"{workflow_id}/timer-long", f"{workflow_id}/timer-short"]
    states = [_step(store, s) for s in steps]
    events = await asyncio.gather(
        wait_for_event(TimerListener, now + delay, step_id=steps[0], store=store),
        wait_for_event(TimerListener, now + delay / 2, step_id=steps[1], store=store),
    )
    for step, state, event in zip(steps, states, events, strict=True):
        print(f"timer: {step} ({state}) fired for {event.json_value():.3f}")
    return list(events)


async def queue_event(
    store: StepStore, workflow_id: str, bootstrap: str, topic: str
) -> dict[str, Any]:
    """A Kafka record as a step; its offset is committed after the checkpoint."""
    step = f"{workflow_id}/queue"
    state = _step(store, step)
    if state == "new":
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        sent = Event(key="order-1", value=json.dumps({"order": 1, "workflow": workflow_id}))
        producer.produce(
            topic, key=sent.key, value=record_value(sent), headers=record_headers(sent)
        )
        if producer.flush(30):
            raise RuntimeError(f"the record for {topic} was not delivered")
        print(f"queue: produced {sent.event_id} to {topic}")
    event = await wait_for_event(
        QueueEventListener, topic, timeout=TIMEOUT, step_id=step, store=store
    )
    group = kafka_listener.resolve_settings().group_id
    offset = await asyncio.to_thread(_committed, bootstrap, group, topic)
    print(
        f"queue: {step} ({state}) got {event.event_id} at {topic}[{event.partition}]@"
        f"{event.offset}; group {group} committed offset {offset}"
    )
    return {"event_id": event.event_id, "offset": event.offset, "committed": offset}


async def http_event(store: StepStore, workflow_id: str, gateway_url: str) -> dict[str, Any]:
    """The seed's HTTP example: a step waits for ``my_event_key``, a client sends it."""
    step = f"{workflow_id}/http"
    state = _step(store, step)
    waiting = asyncio.create_task(
        wait_for_event(
            HTTPListener, EVENT_KEY, workflow_id, timeout=TIMEOUT, step_id=step, store=store
        )
    )
    status = None
    if state == "new":
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            res = await client.post(
                f"{gateway_url}/event/send_event/{workflow_id}",
                json={"event_key": EVENT_KEY, "event_payload": "my_event_message"},
            )
        status = res.status_code
        if status == 200:
            print("http: event processed successfully")
        elif status == 500:
            print("http: request sent but workflow event processing failed")
        elif status == 404:
            print("http: request sent but either workflow_id or event_key is not found")
        else:
            print(f"http: the gateway answered {status}: {res.text}")
    event = await waiting
    print(f"http: {step} ({state}) returned payload {event.json_value()!r}")
    return {"event_id": event.event_id, "payload": event.json_value(), "status": status}


# -- running it ---------------------------------------------------------------------------


async def workflow(
    store: StepStore, workflow_id: str, bootstrap: str, gateway_url: str, delay: float
) -> dict[str, Any]:
    topic = f"ray-events-{workflow_id}"
    await asyncio.to_thread(_ensure_topic, bootstrap, topic)
    fired = await timers(store, workflow_id, delay)
    queued = await queue_event(store, workflow_id, bootstrap, topic)
    http = await http_event(store, workflow_id, gateway_url)
    return {
        "workflow_id": workflow_id,
        "timers": [e.event_id for e in fired],
        "queue": queued,
        "http": http,
    }


def run(bootstrap: str, store_url: str, workflow_id: str, delay: float) -> dict[str, Any]:
    """Run the example; return its summary (also printed, one line per step)."""
    # The listeners take no constructor arguments: they are configured per process.
    kafka_listener.configure(bootstrap_servers=bootstrap, group_id=f"ray-events-{workflow_id}")
    http_topic = f"ray-http-{workflow_id}"
    _ensure_topic(bootstrap, http_topic)
    with open_store(store_url) as store:
        # In production the gateway is `event-connector gateway` (or served by `run`), and
        # `event-connector run` with the same http: section checkpoints its topic. Here
        # both are in this process, on the workflow's store.
        gateway = Gateway(GatewaySettings(Connection(bootstrap), topic=http_topic), store)
        connector = ConnectorService(
            PipelineSettings(bootstrap, f"ray-http-{workflow_id}", {http_topic: "http"}),
            open_store(store_url),  # the connector opens and closes its own
            HttpIndex(TriggerEngine([]), "http"),  # no rules: the waiters' queues only
            {},
            after_batch=gateway.checkpointed,
        )
        stop = threading.Event()
        pipeline = threading.Thread(target=connector.run, args=(stop,), daemon=True)
        pipeline.start()
        try:
            with GatewayServer(gateway, port=0) as server:
                http_listener.configure(url=server.url)
                print(f"gateway: listening at {server.url}")
                return asyncio.run(workflow(store, workflow_id, bootstrap, server.url, delay))
        finally:
            stop.set()
            pipeline.join(60)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Ray Workflows events seed: two timers gathered, a Kafka queue event "
        "and an HTTP event, each a durable wait_for_event step."
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--store",
        default="sqlite://ray_events.db",
        help="checkpoint store URL holding the steps (default: sqlite://ray_events.db)",
    )
    parser.add_argument(
        "--workflow-id",
        default=None,
        help="the workflow's id; reuse one (with the same --store) to resume its steps "
        "(default: a new id)",
    )
    parser.add_argument(
        "--delay", type=float, default=0.2, help="seconds until the later timer fires"
    )
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("no broker: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS")
    if args.delay < 0:
        parser.error("--delay must not be negative")
    if args.store.startswith("memory:"):
        parser.error("--store: a memory store is not shared by the connector and the workflow")
    workflow_id = args.workflow_id or f"wf-{uuid.uuid4().hex[:10]}"
    summary = run(args.bootstrap, args.store, workflow_id, args.delay)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
