"""``make demo`` (``event-connector demo``) end to end against the session's broker."""

from __future__ import annotations

from pathlib import Path

from tests.support import run_in_repo


def test_demo_runs_the_quickstart_and_survives_kill_9(bootstrap: str, tmp_path: Path) -> None:
    done = run_in_repo(
        "-m",
        "connector",
        "demo",
        # Its own temp dir, to see that the demo cleans up after itself.
        extra={"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TMPDIR": str(tmp_path)},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # The seed: the workflow trigger fired, and task2 ran in exec-1 (and only there).
    assert "start-workflow  start  workflow" in out
    assert "tasks.log: I am the 2nd task. (START task2 in exec-1," in out
    assert out.count("tasks.log:") == 1
    # The kill -9 in mid-stream, and the checks that followed the restart.
    assert "SIGKILL after" in out and "restarted the connector" in out
    assert "events sent 3000; actions in the outbox 3000; distinct action ids delivered 3000" in out
    # Repeated deliveries, if the kill caused any, are explained where they are counted.
    assert (
        "of the deliveries were repeats. The SIGKILL came after" in out
        or "no delivery had to be repeated" in out
    )
    assert "no event lost, no action fired twice" in out
    assert "connector stopped with SIGTERM (exit 0)" in out
    assert "removed the demo's files" in out
    assert list(tmp_path.glob("kec-demo-*")) == []
