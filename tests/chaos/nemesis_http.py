"""The nemesis's HTTP side: a standalone ``event-connector gateway`` and the clients that
send through it while the nemesis kills it, the broker and PostgreSQL.

Each event is sent with an ``Idempotency-Key`` (its event id) and sent again, as a client
would, until the gateway answers 200 (the event is checkpointed): after a 500 (not
checkpointed in time), a 503 (Kafka did not take it) or no answer at all (the gateway
killed, or starting). A share is sent once more after its 200 (a client that lost the
answer). Any other answer is the run's failure: the requests are well formed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.chaos.fleet import unreached_at_start
from tests.support import ROOT, wait_for

NAMESPACE = "web"
RULE = "web"
CLIENTS = 8  # threads sending at once, each its own share of the events
RESENT_SHARE = 0.05  # of the events answered 200, sent once more


@dataclass
class Sent:
    """One HTTP event and what became of it."""

    key: str  # the Idempotency-Key: the event's id
    event_key: str
    workflow: str
    answered: tuple[int, int] | None = None  # (partition, offset) of the 200 answer
    tries: int = 0


class Gateway:
    """``event-connector gateway -c CONFIG`` on ``port``, in a process group of its own,
    killed and started again on the same port."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.unreached_restarts = 0  # started again after no broker answered at its start

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "connector", "gateway", "-c", str(self.config)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def check(self) -> None:
        """Fail if the gateway exited without being killed, unless it exited 1 at its start
        because no broker answered (started while the broker was down: it says so and
        exits, as run does, and a restart policy starts it again, as this does)."""
        if self.proc is None or self.proc.poll() is None:
            return
        text = self.log.read_text(errors="replace")
        if unreached_at_start(self.proc.returncode, text):
            self.unreached_restarts += 1
            self.start()
            return
        raise AssertionError(f"the gateway exited {self.proc.returncode}:\n{text[-3000:]}")

    def up(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            self.check()
            try:
                return httpx.get(self.url("/healthz"), timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=timeout, interval=0.2, what="the gateway's /healthz")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@dataclass
class Senders:
    """``events`` HTTP events sent through ``gateway`` by :data:`CLIENTS` threads, paced
    over ``seconds``, each resent until answered 200 (bounded by ``patience``)."""

    gateway: Gateway
    seed: int
    events: int
    seconds: float
    patience: float = 600.0
    sent: list[Sent] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    resent: int = 0
    answers: dict[int, int] = field(default_factory=dict)  # status (0: none) -> count
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, stop: threading.Event) -> None:
        self.sent = [
            Sent(f"http-{self.seed}-{i}", f"h{i % 16}", f"wf-{i % 5}") for i in range(self.events)
        ]
        for c in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(c, stop), daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        """Wait for every client to be done; fail at once if the gateway exited."""

        def done() -> bool:
            self.gateway.check()
            return not any(t.is_alive() for t in self._threads)

        wait_for(done, timeout=timeout, interval=0.5, what="the HTTP clients done")

    def _client(self, c: int, stop: threading.Event) -> None:
        rng = random.Random(self.seed * 31 + c)
        started = time.monotonic()
        mine = self.sent[c::CLIENTS]
        with httpx.Client(timeout=30) as client:
            for n, sent in enumerate(mine):
                ahead = (n + 1) * self.seconds / len(mine) - (time.monotonic() - started)
                if ahead > 0 and stop.wait(ahead):  # pacing the load, not a wait on a result
                    return
                if not self._until_200(client, sent, stop):
                    return
                if rng.random() < RESENT_SHARE:
                    with self._lock:
                        self.resent += 1
                    if not self._until_200(client, sent, stop):
                        return

    def _until_200(self, client: httpx.Client, sent: Sent, stop: threading.Event) -> bool:
        deadline = time.monotonic() + self.patience
        backoff = 0.1
        while not stop.is_set():
            sent.tries += 1
            status = 0
            try:
                reply = client.post(
                    self.gateway.url(f"/event/send_event/{sent.workflow}"),
                    json={"event_key": sent.event_key, "event_payload": {"id": sent.key}},
                    headers={"Idempotency-Key": sent.key},
                )
                status = reply.status_code
            except httpx.TransportError:
                pass  # killed or starting: tried again like a 503
            with self._lock:
                self.answers[status] = self.answers.get(status, 0) + 1
            if status == 200:
                body = reply.json()
                placed = (int(body["partition"]), int(body["offset"]))
                if body["event_id"] != sent.key or sent.answered not in (None, placed):
                    self._fail(f"{sent.key}: answered {body}, before {sent.answered}")
                sent.answered = placed
                return True
            if status not in (0, 500, 503):
                self._fail(f"{sent.key}: {status} {reply.text[:300]}")
                return False
            if time.monotonic() > deadline:
                self._fail(f"{sent.key}: no 200 within {self.patience:g}s ({sent.tries} tries)")
                return False
            stop.wait(backoff)  # a client's retry backoff
            backoff = min(1.0, backoff * 2)
        return False

    def _fail(self, why: str) -> None:
        with self._lock:
            self.failures.append(why)
