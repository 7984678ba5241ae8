"""examples/aiflow_events.py run as a real process against the session broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "aiflow_events.py"


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def test_task2_starts_once_in_its_execution_and_the_counter_counts(
    bootstrap: str, admin: AdminClient
) -> None:
    namespace = f"aiflow-{uuid.uuid4().hex[:10]}"
    try:
        # The broker comes from the environment, as the example documents.
        done = _run(
            "--namespace",
            namespace,
            "--count",
            "4",
            env=_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap),
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        summary: dict[str, Any] = json.loads(lines[-1])
        execution = summary["execution"]
        assert summary["namespace"] == namespace
        # The outsider's 'key' (no context) starts nothing; task1's starts task2 once.
        assert summary["task2_starts"] == 1
        assert summary["actions"] == 1
        assert summary["counter"] == 4
        started = [line for line in lines if line.startswith("scheduler: START task2")]
        assert len(started) == 1
        assert f"in execution {execution} " in started[0]
        assert "task2: I am the 2nd task." in lines
        assert "counter counted 4 events" in lines
    finally:
        topic = f"events.{namespace}"
        if topic in admin.list_topics(timeout=10).topics:
            admin.delete_topics([topic])[topic].result(timeout=30)


def test_no_broker_is_a_usage_error() -> None:
    done = _run("--count", "1", env=_env())
    assert done.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in done.stderr
