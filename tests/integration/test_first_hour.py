"""The README's "first hour", command by command, through the real CLI.

The test reads the section from README.md, so the README cannot drift from what works:
its YAML block becomes ``connector.yaml``, and every line of its bash blocks runs in
order. ``event-connector`` is this checkout's CLI; ``dev-broker`` starts a broker of the
test's own, so the topics really are missing when ``run`` starts (no manual topic step);
``curl`` is sent with httpx (the same URL and body); ``cat`` waits for the file to hold
what the section promises. The only changes: free ports instead of 9092 and 8000.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from devkit.server import free_port
from tests.support import ROOT, wait_for

SECTION = "## The first hour"


def first_hour() -> tuple[str, list[str]]:
    """The section's config file and its command lines, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)
    (config,) = [body for lang, body in blocks if lang == "yaml"]
    commands = [
        line.strip()
        for lang, body in blocks
        if lang == "bash"
        for line in body.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return config, commands


@contextmanager
def background(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[Any]:
    """A long-running command (dev-broker, run); stopped with SIGTERM, as Ctrl-C would."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def curl_post(argv: list[str]) -> httpx.Response:
    """``curl -s URL -d BODY`` (a POST, as curl makes it with -d) sent with httpx."""
    url = next(a for a in argv[1:] if a.startswith("http"))
    body = argv[argv.index("-d") + 1]
    return httpx.post(url, content=body.encode(), timeout=30)


def json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def started(proc: Any, log: Path, ready: Callable[[], bool]) -> Callable[[], bool]:
    """A wait condition: ``ready()``, failing at once if the process exited meanwhile."""

    def check() -> bool:
        assert proc.poll() is None, log.read_text()
        return ready()

    return check


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_the_readme_first_hour_on_a_fresh_broker(tmp_path: Path) -> None:
    config_text, commands = first_hour()
    broker_port, http_port = free_port(), free_port()
    ports = {"9092": str(broker_port), "8000": str(http_port)}

    def local(text: str) -> str:
        for written, free in ports.items():
            text = text.replace(written, free)
        return text

    (tmp_path / "connector.yaml").write_text(local(config_text), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["PYTHONPATH"] = str(ROOT)
    outputs: dict[str, str] = {}
    ran: list[str] = []
    broker_log, run_log = tmp_path / "dev-broker.log", tmp_path / "run.log"
    gateway = f"http://127.0.0.1:{http_port}"
    printed = f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{broker_port}"  # by dev-broker

    with ExitStack() as running:
        connector = None
        for line in commands:
            argv = shlex.split(local(line), comments=True)
            ran.append(argv[0] if argv[0] != "event-connector" else argv[1])
            if argv[0] == "export":
                name, _, value = argv[1].partition("=")
                env[name] = value
            elif argv[0] == "curl":
                reply = curl_post(argv)
                assert reply.status_code == 200, reply.text
                assert set(reply.json()) == {"event_id", "offset", "partition"}
            elif argv[0] == "cat":
                actions_file = tmp_path / argv[1]
                wait_for(
                    functools.partial(lambda f: len(json_lines(f)) >= 3, actions_file),
                    timeout=60,
                    what="three actions",
                )
                outputs["cat"] = actions_file.read_text()
            elif argv[:2] == ["event-connector", "dev-broker"]:
                cli = [sys.executable, "-m", "connector", *argv[1:]]
                broker = running.enter_context(background(cli, tmp_path, env, broker_log))
                ready = started(broker, broker_log, lambda: printed in broker_log.read_text())
                wait_for(ready, timeout=180, what="the dev broker")
            elif argv[:2] == ["event-connector", "run"]:
                cli = [sys.executable, "-m", "connector", *argv[1:]]
                connector = running.enter_context(background(cli, tmp_path, env, run_log))
                ready = started(connector, run_log, lambda: answers(f"{gateway}/healthz"))
                wait_for(ready, timeout=120, what="run's HTTP gateway")
                assert f"HTTP gateway on {gateway}" in run_log.read_text()
            else:
                assert argv[0] == "event-connector", f"the test cannot run {line!r}"
                cli = [sys.executable, "-m", "connector", *argv[1:]]
                done = subprocess.run(
                    cli, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
                )
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
                outputs[" ".join(argv[1:3])] = done.stdout

        assert connector is not None and connector.poll() is None, run_log.read_text()
        connector.send_signal(signal.SIGTERM)  # Ctrl-C in its terminal
        assert connector.wait(60) == 0, run_log.read_text()

    # Every kind of step in the section ran, in the order a user meets them.
    assert ran == [
        "dev-broker", "export", "validate", "run", "topics", "send", "send", "curl",
        "status", "cat",
    ]  # fmt: skip
    assert outputs["validate -c"].startswith(  # orders, and http (the http: section's)
        "connector.yaml: ok (2 namespaces, 2 topics, 3 rules, 1 target)"
    )
    # The topics run created by itself on a broker that had none.
    listed = outputs["topics list"].splitlines()
    assert [ln.split()[:3] for ln in listed] == [
        ["events.orders", "namespace", "orders"],
        ["http-events", "HTTP", "gateway"],
    ]
    assert all(ln.endswith("3 partitions, replication factor 1") for ln in listed)
    assert "events.orders" in outputs["status -c"]
    actions = [json.loads(line) for line in outputs["cat"].splitlines()]
    assert len(actions) == 3
    fired = {a["rule"]: (a["kind"], a["task"], a["context"]) for a in actions}
    assert fired == {
        "start-fulfilment": ("start", None, None),
        "retry-payment": ("RESTART", "charge-card", "fulfilment-1"),
        "ship-on-approval": ("START", "ship", "fulfilment-1"),
    }
