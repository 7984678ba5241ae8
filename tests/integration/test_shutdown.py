"""Shutdown of a real ``run`` process on SIGTERM when a target's ``close()`` raises: the
services started after it and before it are stopped all the same, in reverse order, the
store is closed cleanly, the log names the failing target, and the exit code says
something failed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from checkpoint.sqlite import SqliteStore
from connector.notification import NotificationClient
from tests.support import wait_for

# The injected fault: the python target named "fragile" raises in close(), as a target
# whose resource will not let go would. Everything else is the real command line.
RUN_WITH_A_FRAGILE_TARGET = """
import sys

from connector.cli import main
from connector.targets.python import PythonTarget

closing = PythonTarget.close


def close(self):
    closing(self)
    if self.name == "fragile":
        raise OSError("fragile would not let go")


PythonTarget.close = close
sys.argv[0] = "event-connector"
main()
"""


def test_a_target_failing_to_close_on_sigterm_still_lets_the_store_close(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(1)
    actions = tmp_path / "actions.jsonl"
    store_path = tmp_path / "state" / "checkpoints.db"
    config = tmp_path / "connector.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            kafka: {{bootstrap_servers: "{bootstrap}"}}
            group_id: {group_id}
            namespaces:
              shop: {{topics: [{topic}]}}
            checkpoint: {{backend: sqlite, path: {store_path}}}
            pipeline: {{batch_size: 50, linger_ms: 5}}
            targets:
              log: {{type: log, path: {actions}}}
              fragile: {{type: python, function: "builtins:id"}}
              after: {{type: python, function: "builtins:id"}}
            rules:
              - {{name: on-order, namespace: shop, key: order, action: start, workflow: wf}}
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_WITH_A_FRAGILE_TARGET, "-v", "run", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with NotificationClient(bootstrap, "shop", topics={"shop": topic}) as client:
            client.send_event("order", "1")

        def delivered() -> bool:
            assert process.poll() is None, "the connector exited"
            return actions.exists() and actions.read_text().count("\n") >= 1

        wait_for(delivered, timeout=60, what="the rule's action on the log target")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)

    # Exit 1 (a runtime failure), with one line naming what failed to stop.
    assert process.returncode == 1, stderr
    assert "error: stopping target fragile failed (see the log)" in stderr
    assert "OSError: fragile would not let go" in stderr  # the traceback, logged once
    # Reverse order of starting: the pipeline, the companions, the dispatcher, then the
    # targets (after, fragile, log) and the store last, each stopped though fragile failed.
    lines = stderr.splitlines()

    def at(message: str) -> int:
        found = [i for i, line in enumerate(lines) if line.endswith(message)]
        assert len(found) == 1, f"{message!r} logged {len(found)} times:\n{stderr}"
        return found[0]

    order = [
        at("stopped pipeline"),
        at("stopped progress log"),
        at("stopped pruner"),
        at("stopped dispatcher"),
        at("stopped target after"),
        at("stopping target fragile failed; stopping the others"),
        at("stopped target log"),
        at("stopped checkpoint store"),
    ]
    assert order == sorted(order), stderr
    # Closed cleanly: the lock is free, the last connection folded the WAL back into the
    # file, and the batch and its action are there.
    assert not Path(f"{store_path}-wal").exists()
    with SqliteStore(store_path, exclusive=True) as store:
        assert store.count_actions_by_rule() == {"on-order": 1}
    (action,) = [json.loads(line) for line in actions.read_text().splitlines()]
    assert action["rule"] == "on-order"
