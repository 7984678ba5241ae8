"""Helpers shared by the tests: bounded waiting instead of sleeping, running repo scripts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Consumer, Message

ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Return the first truthy value of ``condition()``; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def start_run(config: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """``event-connector [OPTIONS] run -c CONFIG`` as a process of the repo's code, its
    log (stderr) appended to ``log``."""
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "connector", *options, "run", "-c", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def pipeline_processes(supervisor: int) -> list[int]:
    """The pipeline processes a ``run`` with ``pipeline.processes`` > 1 started (its
    multiprocessing children, not their resource tracker), by pid, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def run_in_repo(
    *args: str,
    drop: Collection[str] = (),
    extra: dict[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``python ARGS...`` from the repo root with the repo on PYTHONPATH, output captured.

    The child gets this environment without the variables in ``drop``, plus ``extra``.
    """
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**env, **(extra or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list[Message]:
    """The first ``count`` records of ``topic`` (every partition, from the beginning), or
    what came within ``timeout`` seconds: a consumer of a group of its own."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                found.append(msg)
        return found
    finally:
        consumer.close()
