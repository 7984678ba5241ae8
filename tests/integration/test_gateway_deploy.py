"""The gateway as deployed, on real Kafka and PostgreSQL: a standalone ``event-connector
gateway`` that only produces, beside two ``event-connector run --no-gateway`` replicas (one
consumer group, one store) that checkpoint its topic; and ``run`` serving the gateway
itself, which wakes its sends after each batch.
"""

from __future__ import annotations

import asyncio
import json
import os
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
import pytest
from confluent_kafka.admin import AdminClient

from checkpoint import open_store
from checkpoint.base import ActionState
from connector.assembly import build_service
from connector.config import load_config
from connector.gateway import GatewayServer
from connector.gateway import ingest as gateway_ingest
from devkit.server import free_port
from tests.integration.gateway_helpers import groups_reading, members_cover
from tests.support import ROOT, wait_for

EVENTS = 60
KEYS = 6  # event keys approve-0..5: the records spread over the topic's partitions


def config_text(**values: Any) -> str:
    return textwrap.dedent(
        """\
        kafka:
          bootstrap_servers: {bootstrap}
        group_id: {group}
        namespaces:
          default: {{topics: [{topic}]}}
        checkpoint: {store}
        pipeline: {{batch_size: 100, linger_ms: 5}}
        targets:
          log: {{type: log, path: "{log}"}}
        rules:
          - name: ship                   # the gateway's events: key = the body's event_key,
            namespace: http              # context = the URL's workflow id
            key: "approve-*"
            action: START
            workflow: fulfilment
            task: ship
        http: {{host: 127.0.0.1, port: {port}, topic: {http_topic},
                checkpoint_timeout_seconds: {timeout}}}
        """
    ).format(**values)


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[tuple[subprocess.Popen[str], Any]] = []

    def start(*args: str, log: Path, **env: str) -> subprocess.Popen[str]:
        out = log.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append((process, out))
        return process

    yield start
    for process, _ in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, out in started:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        out.close()


def test_standalone_gateway_and_two_replicas_fire_every_event_once(
    bootstrap: str,
    admin: AdminClient,
    new_topic: Callable[..., str],
    pg_store_url: Callable[[], str],
    processes: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    topic, http_topic = new_topic(partitions=1), new_topic(partitions=4)
    group, port, store_url = f"deploy-{http_topic}", free_port(), pg_store_url()
    config = tmp_path / "connector.yaml"
    config.write_text(
        config_text(
            bootstrap=bootstrap,
            group=group,
            topic=topic,
            store=json.dumps({"backend": "postgres", "dsn": store_url}),
            log="${KEC_ACTIONS}",
            port=port,
            http_topic=http_topic,
            timeout=30,
        )
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("run-1", "run-2", "gateway")}
    actions = {name: tmp_path / f"{name}.jsonl" for name in ("run-1", "run-2")}
    replicas = [
        processes("run", "-c", str(config), "--no-gateway", "--instance-id", name,
                  log=logs[name], KEC_ACTIONS=str(actions[name]))
        for name in ("run-1", "run-2")
    ]  # fmt: skip
    gateway = processes(
        "gateway", "-c", str(config), log=logs["gateway"], KEC_ACTIONS=str(tmp_path / "unused")
    )
    everything = [*replicas, gateway]

    def alive() -> None:
        for process, name in zip(everything, logs, strict=True):
            assert process.poll() is None, f"{name} exited:\n{logs[name].read_text()}"

    def both_replicas_assigned() -> bool:
        alive()
        return members_cover(admin, group, {http_topic: 4, topic: 1}, members=2)

    wait_for(both_replicas_assigned, timeout=90, interval=0.5, what="two replicas in the group")

    def gateway_up() -> bool:
        alive()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(gateway_up, timeout=60, interval=0.2, what="the gateway's /healthz")

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_connections=EVENTS)
        ) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"http://127.0.0.1:{port}/event/send_event/wf-{i}",
                        json={"event_key": f"approve-{i % KEYS}", "event_payload": {"n": i}},
                        headers={"Idempotency-Key": f"ev-{i}"},
                    )
                    for i in range(EVENTS)
                )
            )

    replies = asyncio.run(send_all())
    assert [r.status_code for r in replies] == [200] * EVENTS, [r.text for r in replies]
    partitions = {r.json()["partition"] for r in replies}

    def fired() -> list[dict[str, Any]]:
        alive()
        return [line for path in actions.values() for line in jsonl(path)]

    wait_for(lambda: len(fired()) >= EVENTS, timeout=60, what=f"{EVENTS} actions")
    with open_store(store_url) as store:
        wait_for(
            lambda: store.count_actions(ActionState.PENDING) == 0,
            timeout=30,
            what="no action pending",
        )
        assert store.count_actions(ActionState.DEAD) == 0
        assert store.count_actions_by_rule() == {"ship": EVENTS}
        assert store.count_events() == EVENTS
    lines = fired()
    assert len(lines) == EVENTS  # once each: no event fired twice
    assert sorted(tuple(a["event_ids"]) for a in lines) == sorted(
        (f"ev-{i}",) for i in range(EVENTS)
    )
    assert len({a["action_id"] for a in lines}) == EVENTS
    assert {(a["task"], a["workflow"]) for a in lines} == {("ship", "fulfilment")}
    assert {a["context"] for a in lines} == {f"wf-{i}" for i in range(EVENTS)}
    # Only the replicas' group reads the gateway's topic; the gateway joined none.
    assert groups_reading(admin, http_topic) == {group}
    assert len(partitions) > 1  # the events spread, and whoever owned them fired them
    gateway_log = logs["gateway"]
    assert f"the gateway only writes topic {http_topic}" in gateway_log.read_text()


def test_standalone_gateway_waits_for_a_store_that_does_not_answer_yet(
    bootstrap: str,
    new_topic: Callable[..., str],
    processes: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    """Started while PostgreSQL is down (restarting beside it, say), the gateway retries
    the store as run does, saying so, rather than exit; SIGTERM still stops it at once."""
    topic, http_topic = new_topic(partitions=1), new_topic(partitions=1)
    port, nothing = free_port(), free_port()  # no PostgreSQL listens on the second
    config = tmp_path / "connector.yaml"
    config.write_text(
        config_text(
            bootstrap=bootstrap,
            group=f"down-{http_topic}",
            topic=topic,
            store=json.dumps(
                {"backend": "postgres", "dsn": f"postgresql://kec@127.0.0.1:{nothing}/kec"}
            ),
            log=tmp_path / "actions.jsonl",
            port=port,
            http_topic=http_topic,
            timeout=5,
        )
    )
    log = tmp_path / "gateway.log"
    gateway = processes("gateway", "-c", str(config), log=log)

    def retrying() -> bool:
        assert gateway.poll() is None, f"the gateway exited:\n{log.read_text()}"
        return "checkpoint store unavailable" in log.read_text()

    wait_for(retrying, timeout=60, interval=0.2, what="the gateway's line about the store")
    assert gateway.poll() is None
    gateway.send_signal(signal.SIGTERM)
    assert gateway.wait(30) == 0, log.read_text()


def test_run_serves_the_gateway_and_wakes_its_sends_after_a_batch(
    bootstrap: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic, http_topic = new_topic(partitions=1), new_topic(partitions=2)
    config = tmp_path / "connector.yaml"
    config.write_text(
        config_text(
            bootstrap=bootstrap,
            group=f"inrun-{http_topic}",
            topic=topic,
            store=json.dumps({"backend": "sqlite", "path": str(tmp_path / "store.db")}),
            log=tmp_path / "actions.jsonl",
            port=0,
            http_topic=http_topic,
            timeout=90,
        )
    )
    # Without the pipeline's wake-up a send would look at the store again only after 30s.
    monkeypatch.setattr(gateway_ingest, "POLL_FIRST", 30.0)
    monkeypatch.setattr(gateway_ingest, "POLL_MAX", 30.0)
    service = build_service(load_config(config))
    [server] = [c for c in service.companions if isinstance(c, GatewayServer)]
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # reported below
            failure.append(exc)

    thread = threading.Thread(target=run, name="test-run", daemon=True)
    thread.start()
    try:

        def owned() -> bool:
            assert not failure, failure
            pipeline = service.pipeline
            return pipeline is not None and len(pipeline.owned) == 3

        wait_for(owned, timeout=60, what="the pipeline to own both topics' partitions")
        with httpx.Client(timeout=60) as client:
            took = []
            for i in range(3):
                started = time.monotonic()
                reply = client.post(
                    f"{server.url}/event/send_event/wf-{i}",
                    json={"event_key": "approve-1", "event_payload": i},
                )
                took.append(time.monotonic() - started)
                assert reply.status_code == 200, reply.text
        # Woken by the batch that checkpointed it, not by the 30s poll.
        assert max(took) < 15, took
        wait_for(lambda: len(jsonl(tmp_path / "actions.jsonl")) == 3, what="three actions")
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive() and not failure, failure
    assert {a["context"] for a in jsonl(tmp_path / "actions.jsonl")} == {"wf-0", "wf-1", "wf-2"}
