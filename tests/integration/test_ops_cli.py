"""The operator commands as an operator runs them: click's CliRunner and real processes.

Every command runs against the real broker and a sqlite store in tmp_path; the numbers it
prints are checked against offsets and store rows the test set up itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, TopicPartition

from checkpoint import ActionState, open_store
from connector.cli import cli
from connector.pipeline.pipeline import Pipeline, PipelineSettings, Undispatched
from kec.action import Action, ActionKind
from kec.evaluation import NotifyAll
from tests.store_helpers import seed
from tests.support import wait_for


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def offline(*args: str) -> Result:
    """A command run with no broker configured at all."""
    return invoke(*args, env={"KAFKA_BOOTSTRAP_SERVERS": ""})


def conn(
    bootstrap: str, topic: str, store: Path | None = None, group: str | None = None
) -> list[str]:
    """The connection options; ``--store`` and ``--group`` only for the commands that use them."""
    args = ["--bootstrap", bootstrap, "--topic", f"{topic}=shop"]
    args += ["--store", f"sqlite://{store}"] if store is not None else []
    return args + (["--group", group] if group is not None else [])


def run_cli(*args: str, bootstrap: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_send_then_tail_with_cli_runner(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    one = invoke("send", "k1", "hello", "--context", "wf-9", *conn(bootstrap, topic))
    assert one.exit_code == 0, one.output
    assert one.stdout.splitlines()[0] == f"{topic}[0]@0"
    assert one.stdout.splitlines()[1].startswith(f"sent 1 event to {topic} in ")
    many = invoke("send", "k2", "v", "--count", "3", "--progress", *conn(bootstrap, topic))
    assert many.exit_code == 0, many.output
    assert many.stdout.startswith(f"sent 3 events to {topic} in ")
    assert f"sending to {topic}" in many.stderr  # the progress bar, forced on without a TTY

    tailed = invoke("tail", "--from-beginning", "--max", "4", "--json", *conn(bootstrap, topic))
    assert tailed.exit_code == 0, tailed.output
    events = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert [(e["key"], e["value"], e["context"]) for e in events] == [
        ("k1", "hello", "wf-9"), ("k2", "v-0", None), ("k2", "v-1", None), ("k2", "v-2", None)
    ]  # fmt: skip
    assert {e["namespace"] for e in events} == {"shop"}
    text = invoke("tail", "--from-beginning", "--max", "1", "--key", "k1", *conn(bootstrap, topic))
    assert text.exit_code == 0
    assert text.stdout.rstrip().endswith(" shop k1 hello context=wf-9")


def test_status_json_and_table(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    store_path = tmp_path / "s.db"
    assert invoke("send", "k", "v", "--count", "4", *conn(bootstrap, topic)).exit_code == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-ops"})
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    consumer.close()
    with open_store(f"sqlite://{store_path}") as store:
        action = Action("r1", ActionKind.NOTIFY, "log", "shop", ("e1",), "k")
        seed(store, (topic, 0), [action], next_offset=3)

    result = invoke("status", "--json", *conn(bootstrap, topic, store_path, "g-ops"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["partitions"] == [
        {"topic": topic, "partition": 0, "committed": 1, "stored": 3, "end": 4, "lag": 1,
         "owner": "seed", "epoch": 1, "stopped": None}
    ]  # fmt: skip
    assert (data["pending"], data["dead_actions"], data["rules"]) == (1, 0, {"r1": 1})
    assert (data["group_state"], data["members"]) == ("EMPTY", 0)  # no connector holds it

    table = invoke("status", *conn(bootstrap, topic, store_path, "g-ops"))
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if topic in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells == [topic, "0", "1", "3", "4", "1", "seed (epoch 1)"]
    assert "group g-ops (EMPTY, 0 member(s))" in table.stdout
    assert "outbox: 1 pending (0 retrying), 0 done, 0 dead" in table.stdout


def test_replay_leaves_unread_records_and_queues_nothing_twice(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path, group_id: str
) -> None:
    topic = new_topic(partitions=2)
    store = tmp_path / "s.db"
    assert invoke("send", "k", "v", "--count", "5", *conn(bootstrap, topic)).exit_code == 0
    with open_store(f"sqlite://{store}"):
        pass  # a connector has created its store and checkpointed nothing yet
    early = invoke("replay", "--from-offset", "0", "--progress", *conn(bootstrap, topic, store))
    assert early.exit_code == 0, early.output
    assert "replaying" in early.stderr
    assert "read 0," in early.stdout
    assert "5 records not checkpointed yet, left to the pipeline" in early.stdout
    with open_store(f"sqlite://{store}") as opened:
        settings = PipelineSettings(bootstrap, group_id, {topic: "shop"}, linger_ms=50)
        pipeline = Pipeline(settings, opened, NotifyAll("log"), Undispatched())
        pipeline.start()
        try:
            wait_for(
                lambda: pipeline.run_once() >= 0 and opened.count_events() == 5,
                timeout=60,
                what="the pipeline",
            )
        finally:
            pipeline.close()
    again = invoke("replay", "--from-time", "2000-01-01T00:00:00", *conn(bootstrap, topic, store))
    assert again.exit_code == 0, again.output
    assert "read 5, evaluated again 5, duplicates 0, undecodable 0, " in again.stdout
    assert "actions queued 0 (5 queued before)" in again.stdout
    with open_store(f"sqlite://{store}") as opened:
        assert opened.count_actions(ActionState.PENDING) == 5


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["replay"], "exactly one of --from-offset and --from-time"),
        (["replay", "--from-offset", "0", "--from-time", "2020-01-01"], "exactly one of"),
        (["replay", "--from-time", "yesterday"], "'yesterday' is not an ISO 8601 time"),
        (["dlq", "replay"], "give ACTION_ID... or --all"),
        (["dlq", "replay", "x", "--all"], "give ACTION_ID... or --all"),
    ],
)
def test_usage_errors_exit_2(args: list[str], error: str, bootstrap: str, tmp_path: Path) -> None:
    store = ["--store", f"sqlite://{tmp_path / 's.db'}"]
    result = invoke(*args, *(store if args[0] == "dlq" else conn(bootstrap, "t", tmp_path)))
    assert result.exit_code == 2
    assert error in result.output


def test_no_connection_at_all_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("status", env={"KAFKA_BOOTSTRAP_SERVERS": ""})
    assert result.exit_code == 2
    assert "give -c/--config FILE, or --bootstrap" in result.output


def test_dlq_list_and_replay_moves_a_dead_action_back_to_pending(tmp_path: Path) -> None:
    store_path = tmp_path / "s.db"
    dead = [Action("r", ActionKind.NOTIFY, "log", "shop", (f"e{n}",), "k") for n in range(2)]
    with open_store(f"sqlite://{store_path}") as store:
        seed(store, ("t", 0), dead, dead={a.action_id: "TargetRejected: 410" for a in dead})
    args = ["--store", f"sqlite://{store_path}"]  # the dlq commands need no broker

    listed = offline("dlq", "list", "--json", *args)
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert [a["action_id"] for a in data["actions"]] == [a.action_id for a in dead]
    assert data["records"] == []
    human = offline("dlq", "list", *args)
    assert f"{dead[0].action_id} rule=r notify -> log key=k attempts=1" in human.stdout

    one = offline("dlq", "replay", dead[0].action_id, *args)
    assert one.exit_code == 0, one.output
    assert one.stdout == "1 dead action back to pending\n"
    with open_store(f"sqlite://{store_path}") as store:
        pending = store.list_actions(ActionState.PENDING)
        assert [(e.action.action_id, e.attempts) for e in pending] == [(dead[0].action_id, 0)]
    unknown = offline("dlq", "replay", "no-such-id", dead[1].action_id, *args)
    assert unknown.exit_code == 2
    assert unknown.stdout == ""  # nothing claimed before the error
    assert "not a dead action in the store: no-such-id" in unknown.stderr
    assert "nothing was replayed" in unknown.stderr
    with open_store(f"sqlite://{store_path}") as store:
        assert store.count_actions(ActionState.DEAD) == 1  # the valid id was not moved
    rest = offline("dlq", "replay", "--all", *args)
    assert rest.stdout == "1 dead action back to pending\n"
    with open_store(f"sqlite://{store_path}") as store:
        assert store.count_actions(ActionState.DEAD) == 0


# -- real processes ----------------------------------------------------------------------


def test_real_processes_send_tail_status_and_exit_codes(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    store = f"sqlite://{tmp_path / 's.db'}"
    base = ["--topic", f"{topic}=shop"]
    sent = run_cli("send", "k", "v", "--count", "2", *base, bootstrap=bootstrap)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith(f"sent 2 events to {topic} in ")
    assert sent.stderr == ""  # no progress bar when stderr is not a terminal

    tailed = run_cli("tail", "--from-beginning", "--max", "2", *base, bootstrap=bootstrap)
    assert tailed.returncode == 0, tailed.stderr
    assert [line.split(" ", 1)[1] for line in tailed.stdout.splitlines()] == [
        "shop k v-0", "shop k v-1"
    ]  # fmt: skip

    with open_store(store):
        pass  # a connector has created its store and checkpointed nothing yet
    status = run_cli("status", "--json", *base, "--store", store, bootstrap=bootstrap)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["partitions"][0]["lag"] == 2

    missing = run_cli(
        "status", "--topic", "no-such-topic-ops", "--store", store, bootstrap=bootstrap
    )
    assert missing.returncode == 1
    assert "no-such-topic-ops is not available" in missing.stderr
    usage = run_cli("replay", *base, "--store", store, bootstrap=bootstrap)
    assert usage.returncode == 2
    assert "exactly one of --from-offset and --from-time" in usage.stderr


def test_real_tail_process_follows_new_events_and_stops_on_sigterm(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "tail", "--topic", f"{topic}=shop"],
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            wait_for(lambda: "Ctrl-C stops" in err.read_text(), timeout=60, what="tail ready")
            assert (
                invoke("send", "late", "x", "--bootstrap", bootstrap, "--topic", topic).exit_code
                == 0
            )
            wait_for(lambda: "late x" in out.read_text(), timeout=30, what="the event in tail")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert out.read_text().count("\n") == 1


def test_config_file_or_a_clear_error_without_the_config_module(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    config = tmp_path / "connector.yaml"
    config.write_text(
        "kafka:\n"
        "  bootstrap_servers: ${KAFKA_BOOTSTRAP_SERVERS}\n"
        "group_id: g-ops-config\n"
        f"namespaces:\n  shop:\n    topics: [{topic}]\n"
        "checkpoint:\n  backend: sqlite\n  path: store.db\n"
        "rules: []\n"
    )
    with open_store(f"sqlite://{tmp_path / 'store.db'}"):
        pass  # where the connector keeps it: relative to the config file
    result = run_cli("status", "--json", "-c", str(config), bootstrap=bootstrap)
    if importlib.util.find_spec("connector.config") is None:
        # connector/config.py is written by another engineer; until it lands, -c says so.
        assert result.returncode == 2
        assert "-c/--config is not available in this build" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["group_id"] == "g-ops-config"
    assert [(p["topic"], p["end"], p["stored"]) for p in data["partitions"]] == [(topic, 0, None)]


# -- tools read a store, they never create one ----------------------------------------


@pytest.mark.parametrize("command", [["status"], ["replay", "--from-offset", "0"]])
def test_tools_that_read_the_store_never_create_one(
    command: list[str], bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    store = tmp_path / "state" / "s.db"
    result = run_cli(
        *command, "--topic", f"{topic}=shop", "--store", f"sqlite://{store}", bootstrap=bootstrap
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: no checkpoint store at {store} (--store): check --store, or give -c FILE"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_database_without_the_connectors_tables_is_not_a_store(
    pg_store_url: Callable[[], str],
) -> None:
    url = pg_store_url()
    parts = urlsplit(url)
    result = run_cli("dlq", "list", "--store", url, bootstrap="")
    assert result.returncode == 2, result.stderr
    shown = f"postgresql://{parts.username}@{parts.hostname}:{parts.port}{parts.path}"
    assert result.stderr.splitlines() == [
        f"error: {shown}: the database has no kafka-event-connector checkpoint tables "
        "(--store): check --store, or give -c FILE"
    ]
    if parts.password:
        assert parts.password not in result.stderr
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'kec%'")
        assert tables.fetchall() == []  # nothing was created
