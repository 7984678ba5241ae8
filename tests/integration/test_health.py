"""Readiness that follows the broker: `run` with metrics on, its broker stopped and started
again (a dev-broker of its own, same port and data): /healthz says so both ways."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.server import free_port
from tests.support import ROOT, wait_for

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


class Broker:
    """`event-connector dev-broker` on a fixed port and data folder, restartable."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.controller = free_port(), free_port()
        self.data = tmp / "kafka-data"
        self.log = tmp / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "connector", "dev-broker", "--port", str(self.port),
                 "--controller-port", str(self.controller), "--data-dir", str(self.data)],
                cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(
            lambda: self.log.read_text(errors="replace").count("bootstrap:") >= self.starts,
            timeout=120,
            what="the broker",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    own = Broker(tmp_path)
    own.start()
    yield own
    own.stop()


def test_healthz_turns_unready_when_the_broker_goes_and_ready_when_it_is_back(
    broker: Broker, tmp_path: Path
) -> None:
    metrics = free_port()
    config = tmp_path / "connector.yaml"
    config.write_text(
        f'kafka: {{bootstrap_servers: "127.0.0.1:{broker.port}", '
        "properties: {reconnect.backoff.max.ms: 1000}}\n"
        "namespaces: {shop: {}}\n"
        f"metrics: {{host: 127.0.0.1, port: {metrics}}}\n"
    )
    log = tmp_path / "run.log"
    with open(log, "ab") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "-c", str(config)],
            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    url = f"http://127.0.0.1:{metrics}/healthz"

    def health() -> tuple[int, dict[str, object]]:
        assert run.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            answer = httpx.get(url, timeout=5)
        except httpx.HTTPError:
            return 0, {}
        return answer.status_code, answer.json()

    try:
        wait_for(lambda: health()[0] == 200, timeout=120, what="the connector to be ready")
        broker.stop()
        _, body = wait_for(
            lambda: (h := health())[0] == 503 and h, timeout=90, what="/healthz to see it go"
        )
        assert body["failing"] == ["kafka"]
        said = re.search(
            rf"Kafka at 127\.0\.0\.1:{broker.port} is not reachable \((.*)\); retrying",
            log.read_text(),
        )
        assert said is not None, log.read_text()[-3000:]
        # Why, in kec.kafka's words (the broker closed, or refuses, its connections), not
        # librdkafka's raw line with its "(after 5ms in state UP)".
        assert re.fullmatch(
            rf"connection refused by 127\.0\.0\.1:{broker.port} \(no broker listens there\)"
            rf"|127\.0\.0\.1:{broker.port} closed the connection: .*|no broker is up \(.*\)",
            said[1],
        ), said[1]
        assert "(after " not in said[1]
        broker.start()
        wait_for(lambda: health()[0] == 200, timeout=120, what="/healthz to see it back")
        wait_for(
            lambda: re.search(
                rf"Kafka at 127\.0\.0\.1:{broker.port} is reachable again after \d+\.\ds",
                log.read_text(),
            ),
            timeout=30,
            what="the line that Kafka is back",
        )
    finally:
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, log.read_text(errors="replace")[-3000:]
