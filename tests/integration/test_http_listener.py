"""HTTPListener against a real gateway (uvicorn on a free port), real Kafka and SQLite; a
connector in the test checkpoints the gateway's topic (see tests/integration/test_gateway.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from checkpoint.sqlite import SqliteStore
from connector.gateway import GatewayServer
from connector.gateway.waiters import consumed_step
from kec.errors import ConfigError
from listeners import HTTPListener
from listeners import http as http_listener
from tests.integration.test_gateway import Servers


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "store.db") as opened:
        yield opened


@pytest.fixture
def servers(
    bootstrap: str, new_topic: Callable[..., str], store: SqliteStore, tmp_path: Path
) -> Iterator[Servers]:
    made = Servers(bootstrap, new_topic(partitions=2), store, f"sqlite:///{tmp_path}/store.db")
    yield made
    made.close()


@pytest.fixture(autouse=True)
def _fresh_configuration() -> Iterator[None]:
    http_listener.reset_configuration()
    yield
    http_listener.reset_configuration()


async def send(server: GatewayServer, workflow_id: str, key: str, payload: object) -> str:
    async with httpx.AsyncClient(timeout=30, headers=_auth(server)) as client:
        reply = await client.post(
            f"{server.url}/event/send_event/{workflow_id}",
            json={"event_key": key, "event_payload": payload},
        )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["event_id"])


def _auth(server: GatewayServer) -> dict[str, str]:
    settings = http_listener.resolve_settings()
    return settings.headers()


async def until_waited(server: GatewayServer, pair: tuple[str, str]) -> None:
    """Bounded wait until the gateway counts a listener for ``pair``."""
    for _ in range(1500):
        if server._gateway.waiters.is_waited(pair):  # read-only look at the waiter count
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no listener registered for {pair} within 30s")


async def test_event_sent_before_the_listener_is_delivered_once(
    servers: Servers, store: SqliteStore
) -> None:
    server = servers.start()
    http_listener.configure(url=server.url)
    event_id = await send(server, "wf-1", "approve", {"by": "ann"})

    event = await HTTPListener().poll_for_event("approve", "wf-1", timeout=30)
    assert event.event_id == event_id
    assert event.json_value() == {"by": "ann"}
    assert event.context == "wf-1" and event.key == "approve"

    # Checkpointed (by the caller), then marked consumed: a second listener gets nothing.
    await HTTPListener().event_checkpointed(event)
    await HTTPListener().event_checkpointed(event)  # repeated after a crash: harmless
    assert store.get_step(consumed_step(event_id)) is not None
    with pytest.raises(TimeoutError):
        await HTTPListener().poll_for_event("approve", "wf-1", timeout=1)


async def test_listener_waiting_first_gets_the_event_of_its_own_pair(servers: Servers) -> None:
    server = servers.start(strict=True)
    http_listener.configure(url=server.url)
    waiting = asyncio.create_task(HTTPListener().poll_for_event("go", "wf-b", timeout=60))
    await until_waited(server, ("wf-b", "go"))
    # Same key, other workflow: refused in strict mode, and never given to this listener.
    async with httpx.AsyncClient(timeout=30) as client:
        other = await client.post(
            f"{server.url}/event/send_event/wf-a", json={"event_key": "go", "event_payload": 1}
        )
    assert other.status_code == 404
    event_id = await send(server, "wf-b", "go", 2)
    event = await waiting
    assert event.event_id == event_id and event.json_value() == 2


async def test_events_of_one_pair_come_in_order_and_are_leased(servers: Servers) -> None:
    server = servers.start()
    http_listener.configure(url=server.url)
    first = await send(server, "wf", "step", 1)
    second = await send(server, "wf", "step", 2)

    listener = HTTPListener()
    got = await listener.poll_for_event("step", "wf", timeout=30)
    assert got.event_id == first
    # While the first is leased (not yet consumed) another listener gets the next one.
    other = await HTTPListener().poll_for_event("step", "wf", timeout=30)
    assert other.event_id == second
    await listener.event_checkpointed(got)
    await listener.event_checkpointed(other)
    with pytest.raises(TimeoutError):
        await listener.poll_for_event("step", "wf", timeout=1)


async def test_listener_survives_a_gateway_restart(servers: Servers) -> None:
    server = servers.start()
    port = server.port
    http_listener.configure(url=server.url)
    waiting = asyncio.create_task(HTTPListener().poll_for_event("done", "wf-r", timeout=90))
    await until_waited(server, ("wf-r", "done"))
    # Stopping answers the open long poll (drain); the listener re-polls until it is back.
    await asyncio.to_thread(servers.stop, server)
    assert not waiting.done()
    restarted = await asyncio.to_thread(servers.start, port=port)
    event_id = await send(restarted, "wf-r", "done", "finished")
    event = await waiting
    assert event.event_id == event_id and event.json_value() == "finished"


async def test_configured_by_environment_with_token(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = servers.start(token="t0ken")
    monkeypatch.setenv(http_listener.ENV_URL, server.url)
    monkeypatch.setenv(http_listener.ENV_TOKEN, "t0ken")
    monkeypatch.setenv(http_listener.ENV_WORKFLOW_ID, f"wf-{uuid.uuid4().hex[:6]}")
    workflow_id = http_listener._workflow_id(None)
    event_id = await send(server, workflow_id, "k", [1, 2])
    event = await HTTPListener().poll_for_event("k", timeout=30)
    assert event.event_id == event_id and event.json_value() == [1, 2]

    monkeypatch.setenv(http_listener.ENV_TOKEN, "wrong")
    with pytest.raises(ConfigError, match="token"):
        await HTTPListener().poll_for_event("k", timeout=5)


async def test_workflow_id_from_context_variable(servers: Servers) -> None:
    server = servers.start()
    http_listener.configure(url=server.url)
    event_id = await send(server, "wf-ctx", "k", None)
    token = http_listener.current_workflow_id.set("wf-ctx")
    try:
        event = await HTTPListener().poll_for_event("k", timeout=30)
    finally:
        http_listener.current_workflow_id.reset(token)
    assert event.event_id == event_id and event.json_value() is None


async def test_unconfigured_listener_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(http_listener.ENV_URL, raising=False)
    with pytest.raises(ConfigError, match=http_listener.ENV_URL):
        await HTTPListener().poll_for_event("k", "wf", timeout=1)
