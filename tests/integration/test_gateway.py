"""The HTTP events gateway on a real uvicorn server, real Kafka and a real SQLite store.

Every request goes over a socket with httpx; every status code of the table in
``connector.gateway.app`` has its own test. The gateway only produces: a connector
(:class:`tests.integration.gateway_helpers.Connector`, or a ``run`` process) reads its
topic in its own group and checkpoints the events the gateway then confirms.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from checkpoint.base import CheckpointStore
from checkpoint.sqlite import MemoryStore, SqliteStore
from connector.gateway import Gateway, GatewayServer, GatewaySettings
from devkit.server import free_port
from kec.kafka import Connection
from tests.integration.gateway_helpers import Connector, groups_reading, queued
from tests.support import wait_for


class Servers:
    """Starts gateway servers for one test and stops whatever is still running after it.

    The first :meth:`start` also starts the connector that checkpoints the topic into
    the store at ``store_url`` (unless ``connector=False``: nothing confirms sends then).
    """

    def __init__(self, bootstrap: str, topic: str, store: CheckpointStore, store_url: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.store = store
        self.store_url = store_url
        self.running: list[GatewayServer] = []
        self.connector: Connector | None = None

    def start(
        self,
        *,
        port: int = 0,
        token: str | None = None,
        store: CheckpointStore | None = None,
        connector: bool = True,
        **settings: Any,
    ) -> GatewayServer:
        if connector and self.connector is None:
            self.connector = Connector(self.bootstrap, self.topic, self.store_url).start()
        options: dict[str, Any] = {
            "connection": Connection(self.bootstrap),
            "topic": self.topic,
            **settings,
        }
        gateway = Gateway(GatewaySettings(**options), store or self.store)
        server = GatewayServer(gateway, port=port, token=token, graceful=2)
        server.start()
        self.running.append(server)
        return server

    def stop(self, server: GatewayServer) -> None:
        server.stop()
        self.running.remove(server)

    def close(self) -> None:
        for server in reversed(self.running):
            server.stop()
        if self.connector is not None:
            self.connector.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "store.db", busy_timeout=1.0) as opened:
        yield opened


@pytest.fixture
def servers(
    bootstrap: str, new_topic: Callable[..., str], store: SqliteStore, tmp_path: Path
) -> Iterator[Servers]:
    made = Servers(bootstrap, new_topic(partitions=3), store, f"sqlite:///{tmp_path}/store.db")
    yield made
    made.close()


def send_url(server: GatewayServer, workflow_id: str) -> str:
    return f"{server.url}/event/send_event/{workflow_id}"


async def test_200_event_is_checkpointed_before_the_reply(
    servers: Servers, store: SqliteStore
) -> None:
    server = servers.start()
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            send_url(server, "wf-1"), json={"event_key": "approve", "event_payload": {"ok": 1}}
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    stored = store.get_event(body["event_id"])  # no waiting: stored before the reply
    assert stored is not None
    assert stored.offset == body["offset"] and stored.partition == body["partition"]
    assert stored.topic == servers.topic and stored.namespace == "http"
    assert stored.key == "approve" and stored.context == "wf-1"
    assert stored.json_value() == {"ok": 1}
    assert queued(store, "wf-1", "approve") == [body["event_id"]]


async def test_400_body_not_json(servers: Servers, store: SqliteStore) -> None:
    server = servers.start()
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            send_url(server, "wf"), content=b"{not json", headers={"content-type": "text/plain"}
        )
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_json" and reply.json()["detail"]
    assert store.count_events() == 0


@pytest.mark.parametrize(
    ("method", "path", "detail"),
    [
        ("POST", "/event/send_event/a/b", "write a '/' inside workflow_id as %2F"),
        ("GET", "/event/wait/a/b/c", "write a '/' inside workflow_id or event_key as %2F"),
        ("GET", "/event/wait/a", "write a '/' inside workflow_id or event_key as %2F"),
        ("GET", "/event/wait/a/", "event_key must not be empty"),
        ("POST", "/event/send_event/", "workflow_id must not be empty"),
        ("POST", "/event/send_event/%FF", "workflow_id must be UTF-8"),
    ],
)
async def test_400_ids_that_are_not_one_path_segment_each(
    servers: Servers, store: SqliteStore, method: str, path: str, detail: str
) -> None:
    server = servers.start()
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"event_key": "c", "event_payload": 1} if method == "POST" else None
        reply = await client.request(method, f"{server.url}{path}", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "invalid_path"
    assert detail in reply.json()["detail"]
    assert store.count_events() == 0


async def test_a_slash_in_an_id_never_reaches_another_workflows_listener(
    servers: Servers, store: SqliteStore
) -> None:
    """Workflow ``a/b`` waiting for key ``c`` and workflow ``a`` waiting for key ``b/c``:
    with the slashes written %2F (as HTTPListener does) each gets its own event only."""
    server = servers.start()
    wait = f"{server.url}/event/wait"
    async with httpx.AsyncClient(timeout=60) as client:
        slashed = asyncio.create_task(client.get(f"{wait}/a%2Fb/c", params={"timeout": 30}))
        plain = asyncio.create_task(client.get(f"{wait}/a/b%2Fc", params={"timeout": 30}))
        for _ in range(600):  # bounded: until the gateway counts both waiters
            if server_waits(servers, server, ("a/b", "c")) and server_waits(
                servers, server, ("a", "b/c")
            ):
                break
            await asyncio.sleep(0.02)
        to_a = await client.post(
            send_url(server, "a"), json={"event_key": "b/c", "event_payload": "for a"}
        )
        got_plain = await plain
        to_ab = await client.post(
            send_url(server, "a%2Fb"), json={"event_key": "c", "event_payload": "for a/b"}
        )
        got_slashed = await slashed
    assert to_a.status_code == 200 and to_ab.status_code == 200, (to_a.text, to_ab.text)
    assert got_plain.status_code == 200 and got_slashed.status_code == 200
    for got, sent, context, key in [
        (got_plain, to_a, "a", "b/c"), (got_slashed, to_ab, "a/b", "c")
    ]:  # fmt: skip
        event = got.json()["event"]
        assert event["event_id"] == sent.json()["event_id"]
        assert (event["context"], event["key"]) == (context, key)
    assert queued(store, "a/b", "c") == [to_ab.json()["event_id"]]
    assert queued(store, "a", "b/c") == [to_a.json()["event_id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_payload": 1}, "event_key"),
        ({"event_key": "k"}, "event_payload"),
        ({"event_key": 7, "event_payload": 1}, "event_key"),
        ({"event_key": "", "event_payload": 1}, "event_key"),
        ([1, 2], None),
    ],
)
async def test_422_missing_or_mistyped_fields(
    servers: Servers, store: SqliteStore, body: Any, field: str | None
) -> None:
    server = servers.start()
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(send_url(server, "wf"), json=body)
    assert reply.status_code == 422
    error = reply.json()
    assert error["error"] == "invalid_body"
    if field is not None:
        assert [field] in [e["loc"] for e in error["detail"]]
    assert store.count_events() == 0


@pytest.mark.parametrize(
    ("workflow_id", "body", "status", "error", "detail"),
    [
        ("wf", {"event_key": "k" * 1025, "event_payload": 1}, 400, "invalid_event",
         "event_key longer than 1024 bytes"),
        ("wf", {"event_key": "a\u0000b", "event_payload": 1}, 400, "invalid_event",
         "event_key contains a NUL character"),
        ("wf", {"event_key": "\ud800", "event_payload": 1}, 422, "invalid_body",
         "unable to parse raw data as a unicode string"),
        ("w" * 1025, {"event_key": "k", "event_payload": 1}, 400, "invalid_event",
         "workflow_id longer than 1024 bytes"),
        ("a%00b", {"event_key": "k", "event_payload": 1}, 400, "invalid_event",
         "workflow_id contains a NUL character"),
        ("wf", {"event_key": "k", "event_payload": "x" * 2000}, 413, "event_too_large",
         "value of 2002 bytes is over the limit of 1000"),
    ],
)  # fmt: skip
async def test_an_event_the_pipeline_would_dead_letter_is_refused_before_kafka(
    servers: Servers, store: SqliteStore, workflow_id: str, body: dict[str, Any], status: int,
    error: str, detail: str,
) -> None:  # fmt: skip
    """Sent on, it would reach the dead letters, never the store, and its client would
    be answered 500 and resend it for ever."""
    server = servers.start(max_event_bytes=1000, checkpoint_timeout=2)
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            send_url(server, workflow_id),
            content=json.dumps(body),  # as written: JSON's \ud800 stays a lone surrogate
            headers={"content-type": "application/json"},
        )
        assert (reply.status_code, reply.json()["error"]) == (status, error), reply.text
        assert detail in str(reply.json()["detail"])
        fine = await client.post(
            send_url(server, "wf"), json={"event_key": "k", "event_payload": 1}
        )
    assert fine.status_code == 200, fine.text
    low, high = _watermarks(servers.bootstrap, servers.topic)
    assert high - low == 1, "only the good event reached Kafka"
    assert store.count_events() == 1


def _watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    """Partition 0's low and high watermarks (the gateway's key ``k``: one partition)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        total = [0, 0]
        for partition in range(3):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total[0] += low
            total[1] += high
        return total[0], total[1]
    finally:
        consumer.close()


async def test_401_without_the_configured_token(servers: Servers, store: SqliteStore) -> None:
    server = servers.start(token="s3cret")
    body = {"event_key": "k", "event_payload": None}
    async with httpx.AsyncClient(timeout=30) as client:
        missing = await client.post(send_url(server, "wf"), json=body)
        wrong = await client.post(
            send_url(server, "wf"), json=body, headers={"Authorization": "Bearer nope"}
        )
        waiting = await client.get(f"{server.url}/event/wait/wf/k", params={"timeout": 0})
        right = await client.post(
            send_url(server, "wf"), json=body, headers={"Authorization": "Bearer s3cret"}
        )
    for reply in (missing, wrong, waiting):
        assert reply.status_code == 401
        assert reply.json()["error"] == "unauthorized"
        assert reply.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200
    assert store.count_events() == 1


async def test_404_strict_mode_accepts_only_awaited_pairs(
    servers: Servers, store: SqliteStore
) -> None:
    server = servers.start(strict=True)
    body = {"event_key": "approve", "event_payload": "yes"}
    async with httpx.AsyncClient(timeout=60) as client:
        unknown = await client.post(send_url(server, "wf-1"), json=body)
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "not_found"
        # A listener's long poll for (wf-1, approve) makes the pair known; another
        # workflow's pair with the same key stays unknown.
        poll = asyncio.create_task(
            client.get(f"{server.url}/event/wait/wf-1/approve", params={"timeout": 30})
        )
        for _ in range(600):  # bounded: until the gateway counts the waiter
            if server_waits(servers, server, ("wf-1", "approve")):
                break
            await asyncio.sleep(0.02)
        other = await client.post(send_url(server, "wf-2"), json=body)
        accepted = await client.post(send_url(server, "wf-1"), json=body)
        delivered = await poll
    assert other.status_code == 404
    assert accepted.status_code == 200, accepted.text
    assert delivered.status_code == 200
    assert delivered.json()["event"]["event_id"] == accepted.json()["event_id"]
    assert store.count_events() == 1


def server_waits(servers: Servers, server: GatewayServer, pair: tuple[str, str]) -> bool:
    gateway = server._gateway  # the test reads the waiter count, it changes nothing
    return gateway.waiters.is_waited(pair)


async def test_500_when_checkpointing_fails(
    servers: Servers, store: SqliteStore, tmp_path: Path
) -> None:
    server = servers.start(checkpoint_timeout=3)
    body = {"event_key": "k", "event_payload": 1}
    headers = {"Idempotency-Key": "retry-me"}
    async with httpx.AsyncClient(timeout=30) as client:
        first = await client.post(send_url(server, "wf"), json=body)
        assert first.status_code == 200
        # Another process holds SQLite's write lock: the connector's batch cannot commit.
        blocker = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            failed = await client.post(send_url(server, "wf"), json=body, headers=headers)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # The record is in Kafka; resends with the same key are safe. The connector
        # retries its batch with a growing pause, so a resend may time out once more.
        deadline = time.monotonic() + 60
        while True:
            again = await client.post(send_url(server, "wf"), json=body, headers=headers)
            if again.status_code != 500 or time.monotonic() > deadline:
                break
    assert failed.status_code == 500
    error = failed.json()
    assert error["error"] == "processing_failed"
    assert "is in Kafka" in error["detail"]
    assert "'Idempotency-Key: retry-me' is safe" in error["detail"]
    assert again.status_code == 200 and again.json()["event_id"] == "retry-me"
    assert store.count_events() == 2
    assert queued(store, "wf", "k") == [first.json()["event_id"], "retry-me"]


async def test_500_when_no_connector_reads_the_topic(servers: Servers, store: SqliteStore) -> None:
    server = servers.start(connector=False, checkpoint_timeout=2)
    body = {"event_key": "k", "event_payload": "alone"}
    headers = {"Idempotency-Key": "lonely-1"}
    async with httpx.AsyncClient(timeout=30) as client:
        lonely = await client.post(send_url(server, "wf"), json=body, headers=headers)
        assert lonely.status_code == 500
        assert lonely.headers["content-type"] == "application/json"
        error = lonely.json()
        assert error["error"] == "processing_failed"
        assert f"is in Kafka (topic {servers.topic})" in error["detail"]
        assert "'Idempotency-Key: lonely-1' is safe" in error["detail"]
        assert "event-connector run" in error["detail"]
        assert store.count_events() == 0
        # The record waited in Kafka: a connector started now checkpoints it, and the
        # resend is confirmed as that one event.
        servers.connector = Connector(servers.bootstrap, servers.topic, servers.store_url)
        await asyncio.to_thread(servers.connector.start)
        again = await client.post(send_url(server, "wf"), json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["event_id"] == "lonely-1"
    assert store.count_events() == 1
    assert queued(store, "wf", "k") == ["lonely-1"]


async def test_the_gateway_joins_no_consumer_group(servers: Servers, admin: AdminClient) -> None:
    server = servers.start()
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            send_url(server, "wf"), json={"event_key": "k", "event_payload": None}
        )
    assert reply.status_code == 200, reply.text
    reading = groups_reading(admin, servers.topic)
    assert servers.connector is not None
    assert reading == {servers.connector.group}  # the connector's group, nobody else
    listed = [g.group_id for g in admin.list_consumer_groups().result(30).valid]
    assert f"kec-gateway-{servers.topic}" not in listed  # the old gateway's own group


async def test_503_when_kafka_is_unreachable(servers: Servers) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    server = servers.start(
        store=opened_memory_store(),
        connection=Connection(f"127.0.0.1:{closed}"),
        deliver_timeout=3,
    )
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            send_url(server, "wf"), json={"event_key": "k", "event_payload": 1}
        )
    assert reply.status_code == 503
    assert reply.json()["error"] == "kafka_unavailable"
    assert "Kafka" in reply.json()["detail"]


async def test_idempotency_key_resend_is_delivered_once(
    servers: Servers, store: SqliteStore
) -> None:
    server = servers.start()
    body = {"event_key": "paid", "event_payload": {"amount": 5}}
    headers = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    async with httpx.AsyncClient(timeout=30) as client:
        # Concurrent copies all reach Kafka; the store keeps one. Then a late resend.
        racing = await asyncio.gather(
            *(client.post(send_url(server, "wf"), json=body, headers=headers) for _ in range(3))
        )
        late = await client.post(send_url(server, "wf"), json=body, headers=headers)
    replies = [*racing, late]
    assert [r.status_code for r in replies] == [200] * 4
    assert {r.json()["event_id"] for r in replies} == {headers["Idempotency-Key"]}
    assert len({(r.json()["partition"], r.json()["offset"]) for r in replies}) == 1
    assert store.count_events() == 1
    assert queued(store, "wf", "paid") == [headers["Idempotency-Key"]]


async def test_fifty_concurrent_senders_all_stored_once(
    servers: Servers, store: SqliteStore
) -> None:
    server = servers.start()
    count = 60
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        replies = await asyncio.gather(
            *(
                client.post(
                    send_url(server, f"wf-{i % 7}"),
                    json={"event_key": f"k-{i}", "event_payload": i},
                )
                for i in range(count)
            )
        )
    assert [r.status_code for r in replies] == [200] * count
    ids = [r.json()["event_id"] for r in replies]
    assert len(set(ids)) == count
    assert store.count_events() == count
    stored = {e.event_id: e for e in store.iter_events()}
    assert {stored[eid].json_value() for eid in ids} == set(range(count))


async def test_gateway_restart_between_two_sends(servers: Servers, store: SqliteStore) -> None:
    first_server = servers.start()
    port = first_server.port
    async with httpx.AsyncClient(timeout=30) as client:
        before = await client.post(
            send_url(first_server, "wf"), json={"event_key": "a", "event_payload": 1}
        )
        servers.stop(first_server)
        with pytest.raises(httpx.ConnectError):
            await client.post(
                send_url(first_server, "wf"), json={"event_key": "a", "event_payload": 0}
            )
        second_server = servers.start(port=port)  # same store, topic and port
        after = await client.post(
            send_url(second_server, "wf"), json={"event_key": "b", "event_payload": 2}
        )
    assert before.status_code == 200 and after.status_code == 200
    assert store.count_events() == 2
    # One connector read both gateways' records: nothing inserted twice or lost.
    assert [e.json_value() for e in store.iter_events()] == [1, 2]
    assert sum(store.next_offsets(servers.topic).values()) == 2


def opened_memory_store() -> MemoryStore:
    store = MemoryStore()
    store.open()
    return store


def test_cli_gateway_serves_and_stops_on_sigterm(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic, port = new_topic(partitions=1), free_port()
    db = tmp_path / "cli.db"
    connector = Connector(bootstrap, topic, f"sqlite:///{db}").start()  # `run`'s part
    command = [sys.executable, "-m", "connector", "gateway", "--bootstrap", bootstrap]
    command += ["--store", f"sqlite:///{db}", "--listen", f"127.0.0.1:{port}", "--topic", topic]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            def healthy() -> bool:
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    assert process.poll() is None, "the gateway process exited"
                    return False

            wait_for(healthy, timeout=60, what="the gateway's /healthz")
            reply = client.post(
                "/event/send_event/wf", json={"event_key": "k", "event_payload": "cli"}
            )
        assert reply.status_code == 200, reply.text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        connector.stop()
    assert process.returncode == 0, stderr
    # Its start-up says where it writes and that a connector must read it.
    assert f"the gateway only writes topic {topic}: a connector" in stderr
    with SqliteStore(db) as store:
        event = store.get_event(reply.json()["event_id"])
    assert event is not None and event.json_value() == "cli"


def test_cli_gateway_bad_listen_is_a_usage_error(bootstrap: str) -> None:
    command = [sys.executable, "-m", "connector", "gateway", "--bootstrap", bootstrap]
    done = subprocess.run(
        [*command, "--listen", "nowhere", "--store", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "HOST:PORT" in done.stderr
