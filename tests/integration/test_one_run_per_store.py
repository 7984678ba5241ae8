"""One `run` per SQLite store, through the real CLI: a second one is refused by name,
while the tools open the same file beside the running connector."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support import ROOT, run_in_repo, wait_for


def test_a_second_run_on_one_sqlite_store_is_refused(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(1)
    config = tmp_path / "connector.yaml"
    config.write_text(
        f'kafka: {{bootstrap_servers: "{bootstrap}"}}\n'
        f'namespaces: {{shop: {{topics: ["{topic}"]}}}}\n'
        "checkpoint: {path: store.db}\n"
    )
    log = tmp_path / "first.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as stderr:
        first = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "-c", str(config)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        wait_for(
            lambda: first.poll() is None and "assigned" in log.read_text(errors="replace"),
            timeout=90,
            what="the first connector to own its partition",
        )
        second = run_in_repo("-m", "connector", "run", "-c", str(config), timeout=90)
        assert second.returncode == 1, second.stderr
        held_by = f"in use by pid {first.pid} on "
        assert held_by in second.stderr and "one connector per SQLite store" in second.stderr
        # The tools read the store beside the running connector.
        listed = run_in_repo("-m", "connector", "dlq", "list", "-c", str(config), timeout=90)
        assert listed.returncode == 0, listed.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
