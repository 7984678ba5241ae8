"""The command target's processes: a minimal environment, and the action on stdin.

The connector's environment holds its own secrets (the PostgreSQL DSN, the SASL password,
the gateway token); a child process must see none of them, only the allowlist, its own
``env`` and the action. The first test runs ``event-connector run -c`` as a real process
on the session broker and PostgreSQL; the others run the target's real processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.notification import NotificationClient
from connector.targets import CommandTarget
from kec.action import Action, ActionKind
from kec.errors import TargetRejected
from tests.support import wait_for

# Writes the whole environment and a digest of stdin to the file named by argv[1].
DUMP = """
import hashlib, json, os, sys
data = sys.stdin.buffer.read()
with open(sys.argv[1] + ".tmp", "w") as out:
    json.dump({"env": dict(os.environ), "stdin_bytes": len(data),
               "stdin_sha256": hashlib.sha256(data).hexdigest()}, out)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""


def _action(payload_bytes: int = 0) -> Action:
    return Action(
        rule="r",
        kind=ActionKind.NOTIFY,
        target="cmd",
        namespace="default",
        event_ids=("e-1",),
        event_key="k",
        payload={"blob": "x" * payload_bytes},
    )


def test_the_child_of_a_running_connector_sees_none_of_its_secrets(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    pg_store_url: Callable[[], str],
    tmp_path: Path,
) -> None:
    topic = new_topic(1)
    dsn = pg_store_url()
    secrets = {
        "PG_DSN": dsn,
        "KAFKA_PASSWORD": "sasl-hunter2-7f3a",
        "KEC_GATEWAY_TOKEN": "gateway-token-91c2",
    }
    out = tmp_path / "child.json"
    config = tmp_path / "connector.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            kafka:
              bootstrap_servers: {bootstrap}
              sasl_username: connector
              sasl_password: "${{KAFKA_PASSWORD}}"
            group_id: {group_id}
            namespaces:
              shop: {{topics: [{topic}]}}
            checkpoint: {{backend: postgres, dsn: "${{PG_DSN}}"}}
            pipeline: {{batch_size: 50, linger_ms: 5}}
            targets:
              dump:
                type: command
                argv: [{sys.executable}, -c, {json.dumps(DUMP)}, {out}]
                stdin: true
                env: {{STAGE: prod, API_TOKEN: meant-for-the-child}}
                inherit_env: [KEC_TEST_*]
            rules:
              - {{name: on-order, namespace: shop, key: order, action: notify, target: dump}}
            """
        )
    )
    env = {**os.environ, **secrets, "KEC_TEST_REGION": "eu-1", "LC_TIME": "C"}
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "-c", str(config)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    value = "v" * (200 * 1024)  # the action carries it: over the 128 KiB of one variable
    try:
        with NotificationClient(bootstrap, "shop", topics={"shop": topic}) as client:
            client.send_event("order", value)

        def dumped() -> bool:
            assert process.poll() is None, "the connector exited"
            return out.exists()

        wait_for(dumped, timeout=90, what="the command target's process")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    child = json.loads(out.read_text())
    seen = child["env"]
    for name, secret in secrets.items():
        assert name not in seen
        assert not [n for n, v in seen.items() if secret in v], f"{name}'s value leaked"
    assert seen["STAGE"] == "prod"
    assert seen["API_TOKEN"] == "meant-for-the-child"  # its own env: given, on purpose
    assert seen["KEC_TEST_REGION"] == "eu-1"  # inherit_env
    assert seen["LC_TIME"] == "C"  # the default allowlist
    assert seen["PATH"] == os.environ["PATH"]
    assert "KEC_ACTION_JSON" not in seen  # with stdin: true the action is on stdin only
    assert child["stdin_bytes"] > len(value)
    assert not [s for s in secrets.values() if s in stderr], "a secret in the connector's log"


def test_a_200_kib_action_goes_through_stdin(tmp_path: Path) -> None:
    out = tmp_path / "child.json"
    action = _action(200 * 1024)
    with CommandTarget("cmd", [sys.executable, "-c", DUMP, str(out)], stdin=True) as target:
        target.deliver(action)
    child = json.loads(out.read_text())
    data = action.to_json().encode()
    assert child["stdin_bytes"] == len(data)
    assert child["stdin_sha256"] == hashlib.sha256(data).hexdigest()
    assert child["env"]["KEC_ACTION_ID"] == action.action_id
    assert "KEC_ACTION_JSON" not in child["env"]


def test_a_200_kib_action_in_the_environment_is_rejected_with_a_hint(tmp_path: Path) -> None:
    with (
        CommandTarget("cmd", [sys.executable, "-c", DUMP, str(tmp_path / "x")]) as target,
        pytest.raises(TargetRejected, match="stdin: true"),
    ):
        target.deliver(_action(200 * 1024))


def test_the_environment_is_the_allowlist_env_and_the_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_DSN", "postgresql://u:pw@db/x")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("KECT_REGION", "eu-1")
    monkeypatch.setenv("KECT_PROFILE", "ops")
    monkeypatch.setenv("KECTX", "not matched")
    out = tmp_path / "child.json"
    argv = [sys.executable, "-c", DUMP, str(out)]
    with CommandTarget("cmd", argv, env={"STAGE": "prod"}, inherit_env=["KECT_*"]) as target:
        target.deliver(_action())
    seen = set(json.loads(out.read_text())["env"])
    expected = {"PATH", "LANG", "TZ", "KECT_REGION", "KECT_PROFILE", "STAGE", "IDEMPOTENCY_KEY"}
    expected |= {n for n in os.environ if n.startswith("LC_") or n == "HOME"}
    kec = {n for n in seen if n.startswith("KEC_")}
    assert kec == {
        "KEC_ACTION_ID",
        "KEC_ACTION_KIND",
        "KEC_RULE",
        "KEC_NAMESPACE",
        "KEC_WORKFLOW",
        "KEC_TASK",
        "KEC_CONTEXT",
        "KEC_EVENT_KEY",
        "KEC_ACTION_JSON",
    }
    # Python may add LC_CTYPE to its own environment when it coerces a C locale.
    assert seen - kec - {"LC_CTYPE"} == expected - {"LC_CTYPE"}
