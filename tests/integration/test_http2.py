"""The webhook target over HTTP/2, against a real HTTP/2 server (hypercorn, over TLS, in
a process of its own: tests/integration/h2_receiver.py).

An https receiver that offers ``h2`` in its handshake gets every request on one connection
(streams); one that does not, or a target with ``http2: false``, gets HTTP/1.1. A slow
stream times out alone, and the outcomes by status are HTTP/1.1's.
"""

from __future__ import annotations

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

    def start(alpn: str = "h2,http/1.1") -> Running:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.h2_receiver", "--fd",
             str(listener.fileno()), "--cert", str(certs.broker_certificate), "--key",
             str(certs.broker_key), "--alpn", alpn],
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
    with WebhookTarget("hook", f"{url}/hook", verify=False, concurrency=64) as target:
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
    with WebhookTarget("hook", f"{url}/hook", verify=False, concurrency=150,
                       timeout=20) as target:  # fmt: skip
        assert target.deliver_many(actions) == {}
    seen = _seen(url)
    assert len(seen) == 150 and {s["version"] for s in seen} == {"2"}
    assert len({s["port"] for s in seen}) == 2  # 100 streams a connection at most


@pytest.mark.parametrize(("alpn", "http2"), [("http/1.1", True), ("h2,http/1.1", False)])
def test_http11_where_the_receiver_or_the_target_does_not_want_h2(
    receiver: Receiver, alpn: str, http2: bool
) -> None:
    url = receiver(alpn).url
    actions = [_action(i) for i in range(40)]
    with WebhookTarget("hook", f"{url}/hook", verify=False, concurrency=8,
                       http2=http2) as target:  # fmt: skip
        assert target.deliver_many(actions) == {}
    seen = _seen(url)
    assert sorted(s["key"] for s in seen) == sorted(a.action_id for a in actions)
    assert {s["version"] for s in seen} == {"1.1"}


def test_a_slow_stream_times_out_alone_and_the_connection_goes_on(receiver: Receiver) -> None:
    url = receiver().url
    fast, slow = _action(1), _action(2, {"slow": True})
    with WebhookTarget("hook", f"{url}/hook", verify=False, timeout=1.0) as target:
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
    with WebhookTarget("hook", f"{url}/hook", verify=False) as target:
        failures = target.deliver_many([busy, bad, big, _action(4)])
    assert set(failures) == {busy.action_id, bad.action_id}
    assert failures[busy.action_id].retriable and "503" in str(failures[busy.action_id])
    assert isinstance(failures[bad.action_id], TargetRejected)
    assert "400" in str(failures[bad.action_id])
    assert {s["version"] for s in _seen(url)} == {"2"}


def test_a_receiver_gone_fails_its_requests_retriably(receiver: Receiver) -> None:
    running = receiver()
    with WebhookTarget("hook", f"{running.url}/hook", verify=False, timeout=5) as target:
        assert target.deliver_many([_action(1)]) == {}
        running.process.kill()  # the connection ends under the target
        running.process.wait(timeout=10)
        failures = target.deliver_many([_action(2), _action(3)])
    assert set(failures) == {_action(2).action_id, _action(3).action_id}
    assert all(isinstance(e, TargetError) and e.retriable for e in failures.values())


def test_a_body_larger_than_the_flow_control_window_is_sent_whole(receiver: Receiver) -> None:
    url = receiver().url
    large = [_action(i, {"blob": "y" * 300_000}) for i in range(3)]  # HTTP/2's window: 64 KiB
    with WebhookTarget("hook", f"{url}/hook", verify=False) as target:
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
        with WebhookTarget("hook", url, verify=False, timeout=1, concurrency=40) as target:
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
    with WebhookTarget("hook", f"{running.url}/hook", verify=False, timeout=20) as target:
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
