"""docker/compose.yaml for real: Kafka, PostgreSQL, two connector replicas sharing the
PostgreSQL store and the HTTP gateway come up healthy; events sent from the host become
actions at a webhook receiver; one replica is killed with `docker kill` mid-stream; every
action arrives, and no event gets two actions. The receiver dedups by idempotency key, so
an action delivered again under the same key (a resend after the kill) is applied once;
such repeats are counted and printed apart.

With the shipped docker/connector.yaml as it is, events posted to the gateway fire their
rule once each: the replicas read the gateway's topic and the gateway only produces.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from connector.ops.send import send_events
from devkit.containers import docker_host as engine_address
from devkit.server import free_port
from kec.event import Event
from kec.kafka import Connection
from tests.containers.conftest import Images
from tests.support import ROOT, read_topic, wait_for

EVENTS = 3000
RATE = 500.0  # events/s: the stream lasts long enough for the kill to land in it
PARTITIONS = 6
GROUP = "compose-test"
HERE = Path(__file__).resolve().parent / "compose"


def compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) when it is there, else Debian's ``docker-compose``."""
    plugin = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=60, check=False
    )
    if plugin.returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def compose_or_skip(request: pytest.FixtureRequest) -> list[str]:
    """:func:`compose_command`, or the test skipped (failed with --require-containers)."""
    compose = compose_command()
    if compose is None:
        reason = "neither `docker compose` nor docker-compose is installed"
        if request.config.getoption("--require-containers"):
            pytest.fail(f"--require-containers, but {reason}")
        pytest.skip(reason)
    return compose


# No http: section: the group then reads events.default alone, so both replicas own some of
# the stream's partitions and the kill lands in it (with the gateway's topic too, Kafka may
# give one replica all of one topic). The gateway's sends are the next test's.
CONFIG = """\
kafka:
  bootstrap_servers: kafka:9092
  # A killed replica's partitions move to the other one after this, not after 45s.
  properties: {{session.timeout.ms: 10000, heartbeat.interval.ms: 1000}}
group_id: {group}
namespaces:
  default: {{}}
topic_creation: {{partitions: {partitions}}}   # the replicas create events.default
checkpoint:
  backend: postgres
  dsn: ${{KEC_PG_DSN}}
pipeline: {{batch_size: 200}}
targets:
  hook: {{type: webhook, url: "http://receiver:8080/actions", timeout: 5}}
rules:
  - {{name: orders, key: "order-*", action: start, workflow: orders, target: hook}}
metrics: {{host: 0.0.0.0, port: 9464}}
"""
HTTP_EVENTS = 100


class Deployment:
    """One compose project of docker/compose.yaml plus the receiver, on free loopback ports."""

    def __init__(self, compose: list[str], images: Images, config: Path) -> None:
        self.project = f"kectest{uuid.uuid4().hex[:8]}"
        self.kafka_port, self.gateway_port, self.receiver_port, self.prometheus_port = (
            free_port() for _ in range(4)
        )
        self.token = uuid.uuid4().hex
        self._compose = compose
        self.env = {
            **os.environ,
            "POSTGRES_PASSWORD": uuid.uuid4().hex,
            "KEC_GATEWAY_TOKEN": self.token,
            "KEC_KAFKA_PORT": str(self.kafka_port),
            "KEC_GATEWAY_PORT": str(self.gateway_port),
            "KEC_RECEIVER_PORT": str(self.receiver_port),
            "KEC_PROMETHEUS_PORT": str(self.prometheus_port),
            "KEC_RECEIVER_DIR": str(HERE),
            "KEC_CONFIG": str(config),
            "KEC_RESTART": "no",  # a killed replica stays down: the other one takes over
            "KEC_CONNECTOR_IMAGE": images.connector,
            "KEC_KAFKA_IMAGE": images.kafka,
            "KEC_POSTGRES_IMAGE": images.postgres,
            "KEC_PROMETHEUS_IMAGE": images.prometheus,
        }

    def run(self, *args: str, timeout: float = 600) -> str:
        files = ["-f", str(ROOT / "docker" / "compose.yaml"), "-f", str(HERE / "receiver.yaml")]
        done = subprocess.run(
            [*self._compose, "-p", self.project, *files, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    def container_id(self, service: str) -> str:
        return self.run("ps", "-q", service).strip()

    def stats(self) -> dict[str, Any]:
        reply = httpx.get(f"http://127.0.0.1:{self.receiver_port}/stats", timeout=10)
        return dict(reply.json())


def _health(client: Any, container_id: str) -> str:
    attrs = client.containers.get(container_id).attrs["State"]
    return str(attrs.get("Health", {}).get("Status", attrs["Status"]))


def test_two_replicas_lose_and_double_nothing_when_one_is_killed(
    images: Images, tmp_path: Path, report: Callable[[str], None], request: pytest.FixtureRequest
) -> None:
    compose = compose_or_skip(request)
    config = tmp_path / "connector.yaml"
    config.write_text(CONFIG.format(group=GROUP, partitions=PARTITIONS))
    deployment = Deployment(compose, images, config)
    client = docker.DockerClient(base_url=engine_address())
    started = time.monotonic()
    try:
        deployment.run("up", "-d")
        services = ("connector-1", "connector-2", "gateway")
        ids = {service: deployment.container_id(service) for service in services}
        wait_for(
            lambda: all(_health(client, cid) == "healthy" for cid in ids.values()),
            timeout=240,
            interval=0.5,
            what="both replicas and the gateway to be healthy",
        )
        healthy_after = time.monotonic() - started
        bootstrap = f"127.0.0.1:{deployment.kafka_port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = "events.default"

        def both_members_assigned() -> bool:
            group = admin.describe_consumer_groups([GROUP])[GROUP].result(10)
            assigned = [tp for m in group.members for tp in m.assignment.topic_partitions]
            return (
                len(group.members) == 2
                and len(assigned) == PARTITIONS
                and all(m.assignment.topic_partitions for m in group.members)
            )

        wait_for(both_members_assigned, timeout=120, interval=0.5, what="two group members")

        # The gateway of the deployment serves (its sends are confirmed only where the
        # replicas read its topic: the shipped config's test below).
        reply = httpx.get(f"http://127.0.0.1:{deployment.gateway_port}/healthz", timeout=30)
        assert reply.status_code == 200, reply.text

        errors: list[BaseException] = []

        def produce() -> None:
            events = (
                Event(key=f"order-{i % 50}", value=json.dumps({"n": i}), namespace="default")
                for i in range(EVENTS)
            )
            try:
                send_events(Connection(bootstrap), topic, events, rate=RATE)
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        sender = threading.Thread(target=produce, name="compose-sender")
        sender.start()
        wait_for(
            lambda: deployment.stats()["distinct"] >= EVENTS // 3,
            timeout=180,
            interval=0.2,
            what=f"{EVENTS // 3} actions before the kill",
        )
        at_kill = deployment.stats()
        subprocess.run(["docker", "kill", ids["connector-1"]], check=True, timeout=60,
                       capture_output=True, env=deployment.env)  # fmt: skip
        killed = time.monotonic()
        sender.join(120)
        assert not sender.is_alive() and not errors, errors
        wait_for(
            lambda: deployment.stats()["distinct"] >= EVENTS,
            timeout=240,
            interval=0.5,
            what=f"all {EVENTS} actions after the kill",
        )
        recovered = time.monotonic() - killed
        assert _health(client, ids["connector-2"]) == "healthy"
        stats = deployment.stats()
        covered = [value["n"] for value in stats["applied"]]  # JSON values travel as JSON
        report(
            f"compose ({' '.join(compose)}): healthy {healthy_after:.0f}s after `up`; "
            f"{EVENTS} events sent, connector-1 killed after {at_kill['distinct']} actions "
            f"({at_kill['repeated']} repeated deliveries by then); all actions in "
            f"{recovered:.1f}s after the kill"
        )
        report(
            f"compose: distinct idempotency keys {stats['distinct']}, applied "
            f"{len(covered)}, events covered {len(set(covered))}, deliveries "
            f"{stats['deliveries']}, repeated under the same key {stats['repeated']}"
        )
        assert stats["distinct"] == EVENTS  # no action lost, no event with two actions
        assert sorted(covered) == list(range(EVENTS))  # each event applied exactly once
    except BaseException:
        print(deployment.run("logs", "--tail", "40", "connector-1", "connector-2", "gateway"))
        raise
    finally:
        client.close()
        deployment.run("down", "-v", "--remove-orphans", "-t", "5")


OUTAGE_RATE = 100.0  # events/s while the broker and the database go down and come back


def test_replicas_ride_out_a_broker_and_a_database_crash_restart(
    images: Images, tmp_path: Path, report: Callable[[str], None], request: pytest.FixtureRequest
) -> None:
    """`docker kill` the Kafka container, then the PostgreSQL one, mid-stream; each comes
    back with `docker start` on its volume, as a host restart or an operator would bring
    it back. Then `docker pause` freezes connector-1 until connector-2 owns its partitions.
    Both replicas stay up throughout (no restart policy), every event is applied once at
    the receiver, and each key's events are applied in their order."""
    compose = compose_or_skip(request)
    config = tmp_path / "connector.yaml"
    config.write_text(CONFIG.format(group=GROUP, partitions=PARTITIONS))
    deployment = Deployment(compose, images, config)
    client = docker.DockerClient(base_url=engine_address())
    try:
        deployment.run("up", "-d")
        ids = {
            s: deployment.container_id(s)
            for s in ("kafka", "postgres", "connector-1", "connector-2", "gateway")
        }
        replicas = (ids["connector-1"], ids["connector-2"])

        def replicas_are(status: str) -> bool:
            return all(_health(client, cid) == status for cid in replicas)

        wait_for(lambda: replicas_are("healthy"), timeout=240, interval=0.5,
                 what="both replicas to be healthy")  # fmt: skip
        bootstrap = f"127.0.0.1:{deployment.kafka_port}"
        stop = threading.Event()
        sent: list[int] = []
        errors: list[BaseException] = []

        def produce() -> None:
            events = (
                Event(key=f"order-{i % 50}", value=json.dumps({"n": i}), namespace="default")
                for i in itertools.count()
            )
            try:
                done = send_events(
                    Connection(bootstrap), "events.default", events, rate=OUTAGE_RATE, stop=stop
                )
                sent.append(done.count)
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        sender = threading.Thread(target=produce, name="compose-sender")
        sender.start()
        outages: list[str] = []
        for service, check in (("kafka", "Kafka"), ("postgres", "the store")):
            wait_for(
                lambda: deployment.stats()["distinct"] >= 300 * (len(outages) + 1),
                timeout=180,
                interval=0.2,
                what=f"actions flowing before {service} goes down",
            )
            subprocess.run(["docker", "kill", ids[service]], check=True, timeout=60,
                           capture_output=True, env=deployment.env)  # fmt: skip
            down = time.monotonic()
            # Down until both replicas' own health checks say so (three failed probes, 5 s
            # apart): the outage is as long as an operator would see it.
            wait_for(lambda: replicas_are("unhealthy"), timeout=120, interval=0.5,
                     what=f"the replicas to report {check} out of reach")  # fmt: skip
            subprocess.run(["docker", "start", ids[service]], check=True, timeout=60,
                           capture_output=True, env=deployment.env)  # fmt: skip
            wait_for(lambda: replicas_are("healthy"), timeout=240, interval=0.5,
                     what=f"both replicas healthy again after {service} came back")  # fmt: skip
            outages.append(f"{service} {time.monotonic() - down:.0f}s")
        # connector-1 frozen (`docker pause`: SIGSTOP to its processes) past its session
        # timeout: connector-2 takes its partitions; thawed, connector-1 must write nothing
        # for them and rejoin.
        admin = AdminClient({"bootstrap.servers": bootstrap})

        def members() -> int:
            group = admin.describe_consumer_groups([GROUP])[GROUP].result(10)
            assigned = [tp for m in group.members for tp in m.assignment.topic_partitions]
            return len(group.members) if len(assigned) == PARTITIONS else 0

        wait_for(lambda: deployment.stats()["distinct"] >= 900, timeout=180, interval=0.2,
                 what="actions flowing before connector-1 is paused")  # fmt: skip
        subprocess.run(["docker", "pause", ids["connector-1"]], check=True, timeout=60,
                       capture_output=True, env=deployment.env)  # fmt: skip
        paused = time.monotonic()
        try:
            wait_for(lambda: members() == 1, timeout=120, interval=0.5,
                     what="connector-2 to own every partition")  # fmt: skip
        finally:
            subprocess.run(["docker", "unpause", ids["connector-1"]], check=True, timeout=60,
                           capture_output=True, env=deployment.env)  # fmt: skip
        wait_for(lambda: members() == 2, timeout=120, interval=0.5,
                 what="connector-1 back in the group")  # fmt: skip
        wait_for(lambda: replicas_are("healthy"), timeout=240, interval=0.5,
                 what="both replicas healthy after the pause")  # fmt: skip
        outages.append(f"connector-1 paused {time.monotonic() - paused:.0f}s")
        stop.set()
        sender.join(180)
        assert not sender.is_alive() and not errors, errors
        events = sent[0]
        wait_for(
            lambda: deployment.stats()["distinct"] >= events,
            timeout=240,
            interval=0.5,
            what=f"all {events} actions after both outages",
        )
        states = {s: client.containers.get(ids[s]).attrs for s in ("connector-1", "connector-2")}
        stats = deployment.stats()
        covered = [value["n"] for value in stats["applied"]]
        report(
            f"compose, broker and database crash-restarts: {events} events; down then healthy "
            f"again: {', '.join(outages)}; distinct keys {stats['distinct']}, deliveries "
            f"{stats['deliveries']}, repeated under the same key {stats['repeated']}"
        )
        assert all(a["State"]["Running"] and a["RestartCount"] == 0 for a in states.values()), {
            s: (a["State"], a["RestartCount"]) for s, a in states.items()
        }
        assert stats["distinct"] == events  # no action lost, no event with two actions
        assert sorted(covered) == list(range(events))  # each event applied exactly once
        by_key: dict[int, list[int]] = {}
        for n in covered:  # the receiver's order of first deliveries
            by_key.setdefault(n % 50, []).append(n)
        late = {k: ns for k, ns in by_key.items() if ns != sorted(ns)}
        assert not late, f"keys applied out of their order: {sorted(late)[:5]}"
    except BaseException:
        print(deployment.run("logs", "--tail", "60", "connector-1", "connector-2"))
        raise
    finally:
        client.close()
        deployment.run("down", "-v", "--remove-orphans", "-t", "5")


# Records no pipeline can make an event of: bad UTF-8 declared text, no key, broken JSON.
HOSTILE: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
    (b"schedule", b"\xff\xfe", [("content-type", b"text/plain")]),
    (None, b"no key at all", []),
    (b"schedule", b"{not json", [("content-type", b"application/json")]),
]


def _fired(logs: str, rule: str) -> list[dict[str, Any]]:
    """The log target's action lines of ``rule`` in ``compose logs`` output."""
    found = []
    for line in logs.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            action = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(action, dict) and action.get("rule") == rule:
            found.append(action)
    return found


def test_the_shipped_config_fires_the_rule_of_every_gateway_event_once(
    images: Images, report: Callable[[str], None], request: pytest.FixtureRequest
) -> None:
    compose = compose_or_skip(request)
    deployment = Deployment(compose, images, ROOT / "docker" / "connector.yaml")
    client = docker.DockerClient(base_url=engine_address())
    try:
        deployment.run("up", "-d")
        ids = {s: deployment.container_id(s) for s in ("connector-1", "connector-2", "gateway")}
        wait_for(
            lambda: all(_health(client, cid) == "healthy" for cid in ids.values()),
            timeout=240,
            interval=0.5,
            what="both replicas and the gateway to be healthy",
        )
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{deployment.kafka_port}"})

        def replicas_read_the_gateways_topic() -> bool:
            group = admin.describe_consumer_groups(["event-connector"])["event-connector"]
            members = group.result(10).members
            topics = {tp.topic for m in members for tp in m.assignment.topic_partitions}
            return len(members) == 2 and "http-events" in topics

        wait_for(replicas_read_the_gateways_topic, timeout=120, interval=0.5,
                 what="the replicas' group to read http-events")  # fmt: skip

        async def post_all() -> list[httpx.Response]:
            url = f"http://127.0.0.1:{deployment.gateway_port}/event/send_event"
            headers = {"Authorization": f"Bearer {deployment.token}"}
            async with httpx.AsyncClient(timeout=60, headers=headers) as http:
                return await asyncio.gather(
                    *(
                        http.post(
                            f"{url}/order-{i}",
                            json={"event_key": "approve", "event_payload": {"n": i}},
                            headers={"Idempotency-Key": f"approve-{i}"},
                        )
                        for i in range(HTTP_EVENTS)
                    )
                )

        started = time.monotonic()
        replies = asyncio.run(post_all())
        confirmed = time.monotonic() - started
        assert [r.status_code for r in replies] == [200] * HTTP_EVENTS, [r.text for r in replies]

        def all_fired() -> list[dict[str, Any]]:
            logs = deployment.run("logs", "--no-color", "connector-1", "connector-2")
            fired = _fired(logs, "ship-on-approval")
            return fired if len({a["action_id"] for a in fired}) >= HTTP_EVENTS else []

        fired = wait_for(all_fired, timeout=120, interval=1.0, what="every approve to fire")
        per_event = Counter(event_id for a in fired for event_id in a["event_ids"])
        report(
            f"compose, shipped config: {HTTP_EVENTS} HTTP events confirmed in {confirmed:.1f}s; "
            f"{len(fired)} ship-on-approval lines, {len(per_event)} events fired"
        )
        assert per_event == Counter({f"approve-{i}": 1 for i in range(HTTP_EVENTS)})
        assert len({a["action_id"] for a in fired}) == HTTP_EVENTS == len(fired)
        assert {(a["kind"], a["workflow"], a["task"]) for a in fired} == {
            ("START", "fulfilment", "ship")
        }
        assert {a["context"] for a in fired} == {f"order-{i}" for i in range(HTTP_EVENTS)}

        # Hostile records from a plain producer go to the shipped dead-letter topic, and
        # the event after them still fires its rule.
        host = f"127.0.0.1:{deployment.kafka_port}"
        producer = Producer({"bootstrap.servers": host})
        for key, value, headers in HOSTILE:
            producer.produce("events.default", key=key, value=value, headers=headers)
        producer.produce("events.default", key=b"schedule", value=b"after the hostile ones")
        assert producer.flush(30) == 0

        def scheduled() -> list[dict[str, Any]]:
            logs = deployment.run("logs", "--no-color", "connector-1", "connector-2")
            return _fired(logs, "start-workflow")

        (start,) = wait_for(scheduled, timeout=120, interval=1.0, what="the schedule event")
        assert start["payload"]["value"] == "after the hostile ones"
        copies = read_topic(host, "dead-letters", len(HOSTILE))
        assert sorted(m.value() for m in copies) == sorted(v for _, v, _ in HOSTILE)
        assert {dict(m.headers() or ())["source-topic"] for m in copies} == {b"events.default"}
    except BaseException:
        print(deployment.run("logs", "--tail", "40", "connector-1", "connector-2", "gateway"))
        raise
    finally:
        client.close()
        deployment.run("down", "-v", "--remove-orphans", "-t", "5")
