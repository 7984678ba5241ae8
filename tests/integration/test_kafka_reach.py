"""A wrong Kafka address, or wrong security settings, said in one line within seconds,
by the commands operators run first (``send``, ``topics list``, ``status``, ``tail``),
instead of ``Local: Timed out`` after 30 s.

The wrong-address cases need no broker (a reserved name, a free port nobody listens on);
the TLS and SASL cases talk to the real broker's plaintext listener.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devkit.server import free_port
from kec.kafka import reach
from tests.support import ROOT

BOUND = 10.0  # seconds: "within a few seconds", with room for a loaded machine


def connector(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done, time.monotonic() - started


def only_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [["send", "k", "v", "--topic", "t"], ["topics", "list"], ["tail", "--topic", "t"]],
)
def test_an_unresolvable_name_is_said_within_seconds(command: list[str], tmp_path: Path) -> None:
    address = "no-such-host.invalid:9092"
    result, took = connector(*command, "--bootstrap", address, cwd=tmp_path)
    assert result.returncode == 1
    assert only_line(result).startswith(
        f"error: cannot reach Kafka at {address}: name lookup failed for {address} ("
    )
    assert took < BOUND


@pytest.mark.parametrize(
    "command",
    [["send", "k", "v", "--topic", "t"], ["topics", "list"], ["status", "--topic", "t"]],
)
def test_a_refused_port_is_said_within_seconds(command: list[str], tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    if command[0] == "status":
        from checkpoint import open_store

        with open_store(f"sqlite://{tmp_path / 's.db'}"):
            pass  # status reads a store before it asks Kafka
        command = [*command, "--store", f"sqlite://{tmp_path / 's.db'}"]
    result, took = connector(*command, "--bootstrap", address, cwd=tmp_path)
    assert result.returncode == 1
    assert only_line(result) == (
        f"error: cannot reach Kafka at {address}: connection refused by {address} "
        "(no broker listens there)"
    )
    assert took < BOUND


def config(tmp_path: Path, bootstrap: str, security: str) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(
        f"kafka:\n  bootstrap_servers: {bootstrap}\n{security}namespaces: {{x: {{}}}}\n"
    )
    return path


def test_tls_at_a_plaintext_listener_is_said_within_seconds(bootstrap: str, tmp_path: Path) -> None:
    path = config(tmp_path, bootstrap, "  security_protocol: SSL\n")
    result, took = connector("topics", "list", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    line = only_line(result)
    assert line.startswith(f"error: cannot reach Kafka at {bootstrap}: TLS failed with ")
    assert line.endswith("(check security_protocol and the SSL settings)")
    assert took < BOUND


def test_sasl_at_a_plaintext_listener_is_said_within_seconds(
    bootstrap: str, tmp_path: Path
) -> None:
    security = (
        "  security_protocol: SASL_PLAINTEXT\n  sasl_mechanism: PLAIN\n"
        "  sasl_username: kec\n  sasl_password: not-this-one\n"
    )
    path = config(tmp_path, bootstrap, security)
    result, took = connector("send", "k", "v", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    line = only_line(result)
    assert line.startswith(f"error: cannot reach Kafka at {bootstrap}: authentication failed at ")
    assert line.endswith("(check the SASL settings)")
    assert "not-this-one" not in result.stderr
    assert took < BOUND


def test_a_broker_that_answers_is_reached_at_once(bootstrap: str) -> None:
    started = time.monotonic()
    reach({"bootstrap.servers": bootstrap})
    assert time.monotonic() - started < 5


def test_a_session_timeout_the_broker_refuses_stops_run_with_one_line(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    """The group coordinator refuses to let the consumer join (the broker's range is
    6 to 1800 s by default): run says which setting, not "consumer error" for ever."""
    path = tmp_path / "connector.yaml"
    path.write_text(
        f"kafka:\n  bootstrap_servers: {bootstrap}\n"
        "  properties: {session.timeout.ms: 1000, heartbeat.interval.ms: 300}\n"
        f"group_id: {group_id}\nnamespaces: {{shop: {{topics: [{new_topic(1)}]}}}}\n"
        f"checkpoint: {{backend: sqlite, path: {tmp_path}/checkpoints.db}}\n"
        f"targets: {{log: {{type: log, path: {tmp_path}/actions.jsonl}}}}\n"
        'rules: [{name: all, namespace: shop, key: "*", action: notify, target: log}]\n'
    )
    result, _ = connector("run", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: the group coordinator refuses session.timeout.ms=1000 ("), line
    assert "group.min.session.timeout.ms" in line, line
