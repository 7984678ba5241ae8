"""The README's container set-up, on a real broker: the config file in a read-only folder
(as ``-v connector.yaml:/etc/kec/connector.yaml:ro``) with the README's relative paths.

``run`` refuses at once with one line naming the setting; with ``KEC_DATA_DIR`` (what the
image sets) the state goes there, and ``status`` finds it the same way. The folder is made
read-only with a bind mount in a user namespace of its own (``unshare``), or with file
modes when the tests do not run as root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import ROOT, wait_for

README_CONFIG = """\
kafka:
  bootstrap_servers: ${{KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}}
group_id: {group}
namespaces:
  {namespace}: {{}}
checkpoint: {{path: state/checkpoints.db}}   # relative to this file
targets:
  log: {{type: log, path: state/actions.jsonl}}
rules:
  - {{name: start-fulfilment, namespace: {namespace}, key: order-created, action: start,
     workflow: fulfilment}}
"""


def _user_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def read_only(folder: Path) -> Callable[[list[str]], list[str]]:
    """A wrapper for commands that see ``folder`` read-only."""
    if _user_namespaces():
        script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
        return lambda argv: ["unshare", "-rm", "sh", "-c", script, str(folder), *argv]
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda argv: argv
    pytest.skip("needs user namespaces (unshare -rm) or a non-root user to make a read-only folder")


def test_a_read_only_config_folder_and_kec_data_dir(bootstrap: str, tmp_path: Path) -> None:
    namespace = f"orders-{uuid.uuid4().hex[:8]}"
    etc, data = tmp_path / "etc", tmp_path / "data"
    etc.mkdir()
    config = etc / "connector.yaml"
    config.write_text(README_CONFIG.format(group=f"g-{namespace}", namespace=namespace))
    wrap = read_only(etc)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    env.pop("KEC_DATA_DIR", None)
    connector = [sys.executable, "-m", "connector"]

    refused = subprocess.run(
        wrap([*connector, "run", "-c", str(config)]),
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    first = refused.stderr.splitlines()[0]
    assert first.startswith(f"error: checkpoint.path: {etc}/state/checkpoints.db is not writable (")
    assert first.endswith(
        "; set KEC_DATA_DIR (or --data-dir) to a writable folder, or give checkpoint.path an "
        "absolute path"
    )

    env["KEC_DATA_DIR"] = str(data)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            wrap([*connector, "run", "-c", str(config)]), env=env, stdout=out, stderr=out
        )
    try:
        wait_for(
            lambda: b"pipeline " in log.read_bytes() or run.poll() is not None,
            timeout=90,
            what="the connector to start",
        )
        assert run.poll() is None, log.read_text(errors="replace")[-3000:]
        sent = subprocess.run(
            [*connector, "send", "order-created", '{"order": 1}', "-c", str(config)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        actions = data / "state" / "actions.jsonl"
        wait_for(
            lambda: actions.exists() and "start-fulfilment" in actions.read_text(),
            timeout=60,
            what="the action in the data directory",
        )
        status = subprocess.run(
            [*connector, "status", "--json", "-c", str(config)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["rules"] == {"start-fulfilment": 1}
    finally:
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, log.read_text(errors="replace")[-3000:]
    assert (data / "state" / "checkpoints.db").is_file()
    assert not (etc / "state").exists()
