"""examples/aiflow_events.py run as a real process against the session broker."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

from confluent_kafka.admin import AdminClient

from tests.support import ROOT, run_in_repo

EXAMPLE = ROOT / "examples" / "aiflow_events.py"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The example with this environment minus the broker (and crash hooks), plus ``env``."""
    return run_in_repo(str(EXAMPLE), *args, drop=("KAFKA_BOOTSTRAP_SERVERS",), extra=env)


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
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
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
    done = _run("--count", "1")
    assert done.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in done.stderr
