"""examples/ray_events.py run as a real process against the session broker."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.support import ROOT, run_in_repo

EXAMPLE = ROOT / "examples" / "ray_events.py"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The example with this environment minus the broker (and crash hooks), plus ``env``."""
    return run_in_repo(
        str(EXAMPLE), *args, drop=("KAFKA_BOOTSTRAP_SERVERS", "KEC_CRASH_AT"), extra=env
    )


def test_every_step_arrives_and_a_rerun_resumes_them(bootstrap: str, tmp_path: Path) -> None:
    workflow_id = f"wf-{uuid.uuid4().hex[:10]}"
    store = f"sqlite:///{tmp_path / 'ray.db'}"
    args = ("--store", store, "--workflow-id", workflow_id, "--delay", "0.2")

    first = _run(*args, KAFKA_BOOTSTRAP_SERVERS=bootstrap)  # the broker from the environment
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    summary: dict[str, Any] = json.loads(lines[-1])
    assert summary["workflow_id"] == workflow_id
    assert len(set(summary["timers"])) == 2
    # The queue event was checkpointed, then its offset committed.
    assert summary["queue"]["offset"] == 0
    assert summary["queue"]["committed"] == 1
    assert summary["http"]["status"] == 200
    assert summary["http"]["payload"] == "my_event_message"
    assert "http: event processed successfully" in lines
    assert sum(line.startswith("timer: ") and "(new)" in line for line in lines) == 2
    assert any(line.startswith("queue: produced ") for line in lines)

    # Same store and workflow id: every step comes back from its checkpoint.
    again = _run(*args, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    resumed: dict[str, Any] = json.loads(lines[-1])
    assert resumed["timers"] == summary["timers"]
    assert resumed["queue"] == summary["queue"]
    assert resumed["http"]["event_id"] == summary["http"]["event_id"]
    assert resumed["http"]["status"] is None  # nothing was sent again
    steps = [line for line in lines if line.startswith(("timer: ", "queue: ", "http: "))]
    assert steps and all("(resumed)" in line for line in steps), steps


def test_without_a_broker_it_is_a_usage_error(tmp_path: Path) -> None:
    done = _run("--store", f"sqlite:///{tmp_path / 'x.db'}")
    assert done.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in done.stderr
