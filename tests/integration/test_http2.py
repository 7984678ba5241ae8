"""The webhook target over HTTP/2, against a real HTTP/2 server (hypercorn, over TLS, in
a process of its own: tests/integration/h2_receiver.py).

An https receiver that offers ``h2`` in its handshake gets every request on one connection
(streams), when the target offers it (``http2``); one that does not, or a target without
it, gets HTTP/1.1. A slow
stream times out alone, and the outcomes by status are HTTP/1.1's.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import hyperframe.frame
import pytest

from connector.targets import WebhookTarget
from devkit.security import material
from kec.action import Action, ActionKind
from kec.errors import TargetError, TargetRejected
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]

Receiver = Callable[..., "Running"]


@dataclass(frozen=True)
class Running:
    url: str
    process: subprocess.Popen[bytes]


def _h2_target(url: str, **settings: Any) -> WebhookTarget:
    """The webhook target with HTTP/2 offered (``http2`` is off by default)."""
    return WebhookTarget("hook", url, verify=False, http2=True, **settings)


def _action(i: int, payload: dict[str, Any] | None = None) -> Action:
    return Action(
        rule="start", kind=ActionKind.START_WORKFLOW, target="hook", namespace="default",
        event_ids=(f"ev-{i}",), event_key=f"key-{i}", workflow="wf",
        payload=payload if payload is not None else {"i": i},
    )  # fmt: skip


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """Starts h2_receiver processes (``alpn``: what it offers); yields their base URLs."""
    certs = material(tmp_path / "certs")
    started: list[subprocess.Popen[bytes]] = []

    def start(alpn: str = "h2,http/1.1", max_requests: int = 1000) -> Running:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.h2_receiver", "--fd",
             str(listener.fileno()), "--cert", str(certs.broker_certificate), "--key",
             str(certs.broker_key), "--alpn", alpn, "--max-requests", str(max_requests)],
            cwd=ROOT, pass_fds=[listener.fileno()],
        )  # fmt: skip
        listener.close()
        started.append(process)
        url = f"https://127.0.0.1:{port}"
        wait_for(lambda: _answers(url), timeout=30, what="the HTTP/2 receiver to answer")
        return Running(url, process)

    yield start
    for process in started:
        process.kill()  # not a graceful stop: it would wait for the slow requests
        process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        _seen(url)
    except OSError:
        return False
    return True


def _seen(url: str) -> list[dict[str, Any]]:
    """The requests the receiver recorded."""
    seen: list[dict[str, Any]] = _ask(url)["seen"]
    return seen


def _ask(url: str) -> dict[str, Any]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(f"{url}/seen", context=context, timeout=5) as answer:
        said: dict[str, Any] = json.loads(answer.read())
    return said


def test_a_receiver_offering_h2_gets_every_request_on_one_connection(
    receiver: Receiver,
) -> None:
    url = receiver().url
    actions = [_action(i) for i in range(300)]
    with _h2_target(f"{url}/hook", concurrency=64) as target:
        assert target.deliver_many(actions) == {}
        assert target.deliver_many([_action(300)]) == {}  # the connection kept
    seen = _seen(url)
    assert sorted(s["key"] for s in seen) == sorted(a.action_id for a in [*actions, _action(300)])
    assert {s["version"] for s in seen} == {"2"}
    assert len({s["port"] for s in seen}) == 1  # 64 in flight fit on one connection
    assert _ask(url)["most"] <= 64  # concurrency still bounds the requests in flight


def test_more_in_flight_than_a_connection_takes_opens_another(receiver: Receiver) -> None:
    url = receiver().url
    actions = [_action(i, {"slow": True}) for i in range(150)]  # each held 3 s
    with _h2_target(f"{url}/hook", concurrency=150, timeout=20) as target:
        assert target.deliver_many(actions) == {}
    seen = _seen(url)
    assert len(seen) == 150 and {s["version"] for s in seen} == {"2"}
    assert len({s["port"] for s in seen}) == 2  # 100 streams a connection at most


@pytest.mark.parametrize(
    ("alpn", "http2"), [("http/1.1", True), ("h2,http/1.1", False), ("h2,http/1.1", None)]
)
def test_http11_where_the_receiver_or_the_target_does_not_want_h2(
    receiver: Receiver, alpn: str, http2: bool | None
) -> None:
    """None: the target's default, which is HTTP/1.1."""
    url = receiver(alpn).url
    actions = [_action(i) for i in range(40)]
    offer = {} if http2 is None else {"http2": http2}
    with WebhookTarget("hook", f"{url}/hook", verify=False, concurrency=8, **offer) as target:
        assert target.deliver_many(actions) == {}
    seen = _seen(url)
    assert sorted(s["key"] for s in seen) == sorted(a.action_id for a in actions)
    assert {s["version"] for s in seen} == {"1.1"}


def test_a_slow_stream_times_out_alone_and_the_connection_goes_on(receiver: Receiver) -> None:
    url = receiver().url
    fast, slow = _action(1), _action(2, {"slow": True})
    with _h2_target(f"{url}/hook", timeout=1.0) as target:
        failures = target.deliver_many([fast, slow, _action(3)])
        assert set(failures) == {slow.action_id}
        assert isinstance(failures[slow.action_id], TargetError)
        assert failures[slow.action_id].retriable
        assert "within 1s" in str(failures[slow.action_id])
        assert target.deliver_many([_action(4)]) == {}
    assert len({s["port"] for s in _seen(url)}) == 1


def test_answers_over_h2_are_judged_as_over_http11(receiver: Receiver) -> None:
    url = receiver().url
    busy, bad = _action(1, {"x": "fail503"}), _action(2, {"x": "fail400"})
    big = _action(3, {"big": 1})  # answered with 1 MiB, cut at the target's limit
    with _h2_target(f"{url}/hook") as target:
        failures = target.deliver_many([busy, bad, big, _action(4)])
    assert set(failures) == {busy.action_id, bad.action_id}
    assert failures[busy.action_id].retriable and "503" in str(failures[busy.action_id])
    assert isinstance(failures[bad.action_id], TargetRejected)
    assert "400" in str(failures[bad.action_id])
    assert {s["version"] for s in _seen(url)} == {"2"}


def test_a_receiver_gone_fails_its_requests_retriably(receiver: Receiver) -> None:
    running = receiver()
    with _h2_target(f"{running.url}/hook", timeout=5) as target:
        assert target.deliver_many([_action(1)]) == {}
        running.process.kill()  # the connection ends under the target
        running.process.wait(timeout=10)
        failures = target.deliver_many([_action(2), _action(3)])
    assert set(failures) == {_action(2).action_id, _action(3).action_id}
    assert all(isinstance(e, TargetError) and e.retriable for e in failures.values())


def test_a_body_larger_than_the_flow_control_window_is_sent_whole(receiver: Receiver) -> None:
    url = receiver().url
    large = [_action(i, {"blob": "y" * 300_000}) for i in range(3)]  # HTTP/2's window: 64 KiB
    with _h2_target(f"{url}/hook") as target:
        assert target.deliver_many([*large, _action(9)]) == {}
    sizes = {s["key"]: s["size"] for s in _seen(url)}
    assert [sizes[a.action_id] for a in large] == [len(a.to_json_bytes()) for a in large]


def test_no_answer_to_the_handshake_fails_the_waiting_requests_together() -> None:
    """Until a connection says whether the server speaks HTTP/2, the other requests wait
    for it; when it cannot be made they fail with it, not one attempt after another."""
    with socket.socket() as silent:  # accepts TCP connections, never answers TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(128)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/hook"
        actions = [_action(i) for i in range(40)]
        with _h2_target(url, timeout=1, concurrency=40) as target:
            started = time.monotonic()
            failures = target.deliver_many(actions)
            took = time.monotonic() - started
    assert set(failures) == {a.action_id for a in actions}
    assert all(e.retriable and "no connection within 1s" in str(e) for e in failures.values())
    assert took < 20  # one timeout each, one after another, would be 40 s


def test_a_receiver_going_away_answers_what_it_holds_and_the_rest_fail_retriably(
    receiver: Receiver,
) -> None:
    """SIGTERM: the receiver says GOAWAY, answers the request it holds, and closes; the
    target sends nothing more on that connection."""
    running = receiver()
    slow = _action(1, {"slow": True})
    with _h2_target(f"{running.url}/hook", timeout=20) as target:
        answered: list[dict[str, BaseException]] = []
        sender = threading.Thread(target=lambda: answered.append(target.deliver_many([slow])))
        sender.start()
        wait_for(lambda: len(_seen(running.url)) == 1, timeout=10, what="the request held")
        running.process.terminate()
        sender.join(timeout=30)
        assert answered == [{}]  # answered before the receiver closed
        running.process.wait(timeout=30)
        later = target.deliver_many([_action(2)])
    assert set(later) == {_action(2).action_id} and later[_action(2).action_id].retriable


def test_a_receiver_ending_connections_every_few_requests_loses_nothing(
    receiver: Receiver,
) -> None:
    """hypercorn (as nginx) says GOAWAY after so many requests on a connection, then
    closes it: what it did not answer fails retriably, and sent again (as the dispatcher
    does) it gets through on a new connection."""
    url = receiver(max_requests=50).url
    actions = {a.action_id: a for a in (_action(i) for i in range(300))}
    left, rounds = dict(actions), 0
    with _h2_target(f"{url}/hook", concurrency=64) as target:
        while left and rounds < 20:
            failures = target.deliver_many(list(left.values()))
            assert all(isinstance(e, TargetError) and e.retriable for e in failures.values())
            left = {k: left[k] for k in failures}
            rounds += 1
    assert not left, f"{len(left)} never delivered in {rounds} rounds"
    seen = _seen(url)
    assert {s["key"] for s in seen} == set(actions)
    assert len({s["port"] for s in seen}) >= 6  # 300 requests, 50 a connection


def test_after_goaway_the_streams_it_names_are_answered_and_the_others_sent_again(
    tmp_path: Path,
) -> None:
    """RFC 9113, 6.8: a GOAWAY's last stream id says which streams the server may still
    answer on that connection (here: it does, after the GOAWAY) and which it did not take
    (sent again on a new connection). A scripted server on the h2 library's own state
    machine, in a thread: its first connection takes two requests, says GOAWAY naming the
    first, answers it, and closes; its second answers what comes."""
    certs = material(tmp_path / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.broker_certificate, certs.broker_key)
    context.set_alpn_protocols(["h2"])
    listener = socket.create_server(("127.0.0.1", 0))
    answered: list[list[str]] = []  # per connection, the keys answered
    server = threading.Thread(target=_scripted_h2, args=(listener, context, answered))
    server.start()
    first, second = _action(1), _action(2)
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/hook"
    try:
        with _h2_target(url, timeout=10) as target:
            assert target.deliver_many([first, second]) == {}
    finally:
        server.join(timeout=30)
        listener.close()
    assert answered == [[first.action_id], [second.action_id]]


def _scripted_h2(
    listener: socket.socket, context: ssl.SSLContext, answered: list[list[str]]
) -> None:
    for n in range(2):
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as tls:
            config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
            conn = h2.connection.H2Connection(config=config)
            conn.initiate_connection()
            keys: dict[int, str] = {}
            ended: list[int] = []
            mine: list[str] = []
            answered.append(mine)
            tls.sendall(conn.data_to_send())
            while data := tls.recv(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        keys[event.stream_id] = dict(event.headers)["idempotency-key"]
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.append(event.stream_id)
                tls.sendall(conn.data_to_send())
                if n == 0 and len(ended) < 2:
                    continue  # the first connection waits for both requests
                if n == 0:
                    # GOAWAY written by hand: h2 would refuse to answer after its own.
                    goaway = hyperframe.frame.GoAwayFrame(0)
                    goaway.last_stream_id, goaway.error_code = ended[0], 0
                    tls.sendall(goaway.serialize())
                    _answer(conn, ended[0])
                    mine.append(keys[ended[0]])
                    tls.sendall(conn.data_to_send())
                    # Closed by the client once its streams are done: closing here with
                    # its bytes unread would reset the connection under the answer.
                    tls.settimeout(10)
                    with contextlib.suppress(OSError):
                        while tls.recv(65536):
                            pass
                    break
                for stream_id in ended:
                    _answer(conn, stream_id)
                    mine.append(keys[stream_id])
                ended.clear()
                tls.sendall(conn.data_to_send())
                if n == 1 and mine:
                    break


def _answer(conn: h2.connection.H2Connection, stream_id: int) -> None:
    conn.send_headers(stream_id, [(":status", "200"), ("content-length", "2")])
    conn.send_data(stream_id, b"{}", end_stream=True)
