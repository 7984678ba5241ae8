"""The gateway's bounds, one test each, on a real uvicorn server, Kafka and SQLite store:
body size (413), JSON depth (400), no token beyond loopback (refused), TLS (a round trip
with a certificate made here), the connection limit (503) and the header timeout."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import select
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from checkpoint.sqlite import SqliteStore
from connector.config import ConfigFileError, load_config
from connector.gateway import Gateway, GatewayLimits, GatewayServer, GatewaySettings, TlsFiles
from devkit.server import free_port
from kec.errors import ConfigError
from kec.kafka import Connection
from tests.integration.gateway_helpers import Connector

LIMIT = 4096


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "store.db", busy_timeout=1.0) as opened:
        yield opened


@pytest.fixture
def serve(
    bootstrap: str, new_topic: Callable[..., str], store: SqliteStore, tmp_path: Path
) -> Iterator[Callable[..., GatewayServer]]:
    topic = new_topic(partitions=1)
    running: list[GatewayServer] = []
    # `run`'s part: it checkpoints the gateway's topic, so sends are confirmed.
    connector = Connector(bootstrap, topic, f"sqlite:///{tmp_path}/store.db")

    def start(**options: Any) -> GatewayServer:
        if not running:
            connector.start()
        settings = GatewaySettings(Connection(bootstrap), topic=topic)
        server = GatewayServer(Gateway(settings, store), port=0, graceful=2, **options)
        server.start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()
    if running:
        connector.stop()


def _send(server: GatewayServer) -> str:
    return f"{server.url}/event/send_event/wf-1"


def _body(payload: Any) -> bytes:
    return json.dumps({"event_key": "approve", "event_payload": payload}).encode()


# -- body size ----------------------------------------------------------------------------


async def test_413_for_a_body_over_the_limit(
    serve: Callable[..., GatewayServer], store: SqliteStore
) -> None:
    server = serve(limits=GatewayLimits(max_body_bytes=LIMIT))
    filler = "x" * LIMIT
    async with httpx.AsyncClient(timeout=30) as client:
        declared = await client.post(_send(server), content=_body(filler))

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for _ in range(8):
                yield b" " * 1024
            yield _body("x")

        streamed = await client.post(_send(server), content=chunks())
        fits = _body("x" * (LIMIT - len(_body(""))))
        assert len(fits) == LIMIT
        accepted = await client.post(_send(server), content=fits)
    for reply in (declared, streamed):
        assert reply.status_code == 413, reply.text
        assert reply.headers["content-type"] == "application/json"
        assert reply.json()["error"] == "body_too_large"
        assert str(LIMIT) in reply.json()["detail"]
    assert accepted.status_code == 200, accepted.text
    assert store.count_events() == 1  # the one that fit


# -- JSON depth ---------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    payload = "[" * (depth - 1) + "]" * (depth - 1)  # the body's object is one more level
    return b'{"event_key": "approve", "event_payload": ' + payload.encode() + b"}"


async def test_400_for_json_nested_too_deep(
    serve: Callable[..., GatewayServer], store: SqliteStore
) -> None:
    server = serve()  # the default limits: 64 deep, 1 MiB
    async with httpx.AsyncClient(timeout=30) as client:
        deep = await client.post(_send(server), content=_nested(100_000))
        over = await client.post(_send(server), content=_nested(65))
        at = await client.post(_send(server), content=_nested(64))
    for reply in (deep, over):
        assert reply.status_code == 400, reply.text
        assert reply.json() == {
            "error": "json_too_deep",
            "detail": "the body nests arrays or objects over 64 deep",
        }
    assert at.status_code == 200, at.text
    assert store.count_events() == 1


# -- a token beyond loopback --------------------------------------------------------------


def test_no_token_on_a_public_bind_is_refused(tmp_path: Path, store: SqliteStore) -> None:
    path = tmp_path / "connector.yaml"
    base = "kafka: {bootstrap_servers: localhost:9092}\nnamespaces: {default: {}}\n"
    path.write_text(base + "http:\n  host: 0.0.0.0\n  port: 8000\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path, env={})
    [line] = info.value.errors
    assert line.startswith(f"{path}:3 http.token: required: the gateway listens on 0.0.0.0")
    path.write_text(base + 'http: {host: 0.0.0.0, token: "${GATEWAY_TOKEN:-}"}\n')
    with pytest.raises(ConfigFileError, match=r"http\.token: is empty"):
        load_config(path, env={})
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):  # loopback: no token needed
        path.write_text(base + f'http: {{host: "{host}"}}\n')
        assert load_config(path, env={}).http is not None

    # The server refuses too, however it was configured (nothing is bound: no I/O yet).
    gateway = Gateway(GatewaySettings(Connection("localhost:9092"), topic="t"), store)
    for host in ("0.0.0.0", "::", "192.0.2.10", "gateway.example"):
        with pytest.raises(ConfigError, match="beyond loopback: it needs a token"):
            GatewayServer(gateway, host=host, port=0)
    GatewayServer(gateway, host="0.0.0.0", port=0, token="t0k")  # built, never started


def test_the_gateway_command_refuses_a_public_bind_without_token(
    bootstrap: str, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "connector", "gateway", "--bootstrap", bootstrap]
    argv.extend(["--store", f"sqlite://{tmp_path}/s.db", "--listen", f"0.0.0.0:{free_port()}"])
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "beyond loopback: it needs a token" in result.stderr


# -- TLS ----------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-pass"),
        )
    )
    return cert_file, key_file


async def test_tls_round_trip_with_a_self_signed_certificate(
    serve: Callable[..., GatewayServer], store: SqliteStore, tmp_path: Path
) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    # As the config file gives them: paths relative to it, the key's password a secret.
    config = tmp_path / "connector.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            kafka: {bootstrap_servers: localhost:9092}
            namespaces: {default: {}}
            http: {tls_cert_file: cert.pem, tls_key_file: key.pem, tls_key_password: key-pass}
            """
        )
    )
    http = load_config(config, env={}).http
    assert http is not None and "key-pass" not in repr(http)
    tls = TlsFiles(cert_file, key_file, "key-pass")
    server = serve(tls=tls)
    assert server.url.startswith("https://127.0.0.1:")
    trusted = ssl.create_default_context(cafile=str(cert_file))
    async with httpx.AsyncClient(timeout=30, verify=trusted) as client:
        reply = await client.post(_send(server), content=_body({"over": "tls"}))
    assert reply.status_code == 200, reply.text
    stored = store.get_event(reply.json()["event_id"])
    assert stored is not None and stored.json_value() == {"over": "tls"}
    async with httpx.AsyncClient(timeout=30) as client:  # the system's CAs do not know it
        with pytest.raises(httpx.ConnectError):
            await client.post(_send(server), content=_body(1))
    plain = server.url.replace("https://", "http://")
    async with httpx.AsyncClient(timeout=30) as client:  # and plain HTTP is not served
        with pytest.raises(httpx.TransportError):
            await client.post(f"{plain}/event/send_event/wf-1", content=_body(1))


def test_tls_files_must_exist_and_come_in_pairs(tmp_path: Path) -> None:
    base = "kafka: {bootstrap_servers: localhost:9092}\nnamespaces: {default: {}}\n"
    path = tmp_path / "connector.yaml"
    path.write_text(base + "http:\n  tls_cert_file: missing.pem\n  tls_key_file: key.pem\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path, env={})
    assert info.value.errors[0].startswith(f"{path}:4 http.tls_cert_file: no such file: ")
    (tmp_path / "cert.pem").write_text("-")
    path.write_text(base + "http: {tls_cert_file: cert.pem}\n")
    with pytest.raises(ConfigFileError, match="both tls_cert_file and tls_key_file"):
        load_config(path, env={})


# -- connections and the header timeout ---------------------------------------------------


async def test_503_past_the_connection_limit(serve: Callable[..., GatewayServer]) -> None:
    server = serve(limits=GatewayLimits(max_connections=2))
    waiters = server._gateway.waiters  # read only: whether a long poll is being held

    async def held(client: httpx.AsyncClient, key: str) -> asyncio.Task[httpx.Response]:
        task = asyncio.create_task(client.get(f"{server.url}/event/wait/wf-1/{key}?timeout=20"))
        deadline = time.monotonic() + 30
        while not waiters.is_waited(("wf-1", key)):  # bounded wait on the server's state
            assert time.monotonic() < deadline, "the long poll never arrived"
            await asyncio.sleep(0.02)
        return task

    async with (
        httpx.AsyncClient(timeout=60) as first,
        httpx.AsyncClient(timeout=60) as second,
        httpx.AsyncClient(timeout=60) as other,
    ):
        tasks = [await held(first, "a")]
        try:
            # One held, one more: two connections, within the limit.
            assert (await other.get(f"{server.url}/healthz")).status_code == 200
            await other.aclose()  # its kept-alive connection would count too
            tasks.append(await held(second, "b"))
            async with httpx.AsyncClient(timeout=60) as third:
                refused = await third.get(f"{server.url}/healthz")
            assert refused.status_code == 503
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _closed_by_server(sock: socket.socket, within: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (sending ``trickle``
    now and then, as a slow client would)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                return sock.recv(1024) == b""
            except ConnectionResetError:
                return True
        if trickle:
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return True
    return False


@pytest.mark.parametrize("trickle", [b"", b"x"], ids=["silent", "a-byte-at-a-time"])
def test_a_slow_request_head_is_cut_off(
    serve: Callable[..., GatewayServer], trickle: bytes
) -> None:
    server = serve(limits=GatewayLimits(header_timeout=1.0))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /event/send_event/wf-1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert _closed_by_server(sock, within=20, trickle=trickle)
    # A client that sends its request in time is served as ever, on a kept-alive
    # connection too (the timer restarts after each response).
    with httpx.Client(timeout=30) as client:
        for _ in range(2):
            assert client.get(f"{server.url}/healthz").status_code == 200
