"""``pipeline.processes: 2``: one ``run`` supervising two pipeline processes, end to end
through the command line, a real broker and a SQLite store.

What a user of several processes relies on: the partitions are shared between them, every
event is checkpointed once with one action, a killed process is restarted and loses
nothing, health and metrics answer for the instance, SIGTERM stops everything cleanly,
and a SIGKILLed instance leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from checkpoint import open_store
from devkit.server import free_port
from tests.support import ROOT, pipeline_processes, start_run, wait_for


def _config(
    tmp_path: Path,
    bootstrap: str,
    topic: str,
    group_id: str,
    port: int | None = None,
    *,
    session: bool = True,
    instance_id: str | None = None,
) -> Path:
    """Two processes, every event one action on the log target. ``session``: the
    consumers' session in ``kafka.properties`` (6 s) rather than the connector's own."""
    properties = "{session.timeout.ms: 6000, heartbeat.interval.ms: 500}" if session else "{}"
    pipeline = "batch_size: 200, linger_ms: 10, processes: 2"
    if instance_id:
        pipeline += f", instance_id: {instance_id}"
    path = tmp_path / "connector.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            kafka:
              bootstrap_servers: "{bootstrap}"
              properties: {properties}
            group_id: {group_id}
            namespaces:
              shop: {{topics: [{topic}]}}
            checkpoint: {{backend: sqlite, path: {tmp_path}/state/checkpoints.db}}
            pipeline: {{{pipeline}}}
            {f"metrics: {{port: {port}}}" if port else ""}
            targets:
              log: {{type: log, path: {tmp_path}/actions.jsonl}}
            rules:
              - {{name: all, namespace: shop, key: "*", action: notify, target: log}}
            """
        )
    )
    return path


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_run(config, log)


def _children(pid: int) -> set[int]:
    return set(pipeline_processes(pid))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        producer.produce(topic, key=f"k{i % 50}", value=json.dumps({"i": i}))
    assert producer.flush(30) == 0


def _delivered(actions: Path) -> Counter[str]:
    if not actions.exists():
        return Counter()
    lines = actions.read_text().splitlines()
    return Counter(json.loads(line)["idempotency_key"] for line in lines if line.endswith("}"))


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_two_processes_share_the_partitions_and_a_killed_one_is_restarted(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic, port = new_topic(6), free_port()
    config = _config(tmp_path, bootstrap, topic, group_id, port)
    log, actions = tmp_path / "run.log", tmp_path / "actions.jsonl"
    url = f"sqlite:///{tmp_path}/state/checkpoints.db"
    process = _start(config, log)
    try:

        def running() -> bool:
            assert process.poll() is None, log.read_text()
            return len(_children(process.pid)) == 2

        wait_for(running, timeout=60, what="two pipeline processes")
        first = _children(process.pid)

        def shared() -> bool:
            running()
            with open_store(url, create=False) as store:
                owned = [p for p in store.partitions() if p.tp[0] == topic]
            return len(owned) == 6 and len({p.owner for p in owned}) == 2

        wait_for(shared, timeout=90, interval=0.3, what="the partitions shared by two owners")
        status, body = _get(port, "/healthz")
        assert status == 200, body
        assert json.loads(body)["checks"]["processes"] is True

        _produce(bootstrap, topic, 0, 3000)
        wait_for(lambda: len(_delivered(actions)) == 3000, timeout=90, what="3000 actions")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            running()
            now = _children(process.pid)
            return len(now) == 2 and victim not in now

        wait_for(replaced, timeout=60, what="the killed process restarted")
        _produce(bootstrap, topic, 3000, 3000)
        wait_for(lambda: len(_delivered(actions)) == 6000, timeout=120, what="6000 actions")
        status, text = _get(port, "/metrics")
        assert status == 200
        assert "kec_events_total" in text

        # The instance reads all six partitions between its two processes, as one.
        def read_by_the_instance(name: str) -> str:
            wanted = f'{name}{{topic="{topic}"}} '
            lines = [ln for ln in _get(port, "/metrics")[1].splitlines() if ln.startswith(wanted)]
            return lines[0].split()[-1] if lines else ""

        wait_for(lambda: read_by_the_instance("kec_partitions_owned") == "6.0", timeout=30,
                 what="the merged kec_partitions_owned")  # fmt: skip
        assert read_by_the_instance("kec_topic_partitions") == "6.0"
        children = _children(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    stderr = log.read_text()
    assert process.returncode == 0, stderr
    assert "exited (code -9)" in stderr and "restarted pipeline process" in stderr
    assert not any(_alive(pid) for pid in children), "every pipeline process stopped"
    with open_store(url, create=False) as store:
        assert store.count_events() == 6000, "every event checkpointed once"
        assert store.count_actions_by_rule() == {"all": 6000}, "one action each"
    assert set(_delivered(actions)) and len(_delivered(actions)) == 6000


def test_a_sigkilled_supervisor_takes_its_processes_with_it(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(2)
    config = _config(tmp_path, bootstrap, topic, group_id, free_port())
    log, actions = tmp_path / "run.log", tmp_path / "actions.jsonl"
    process = _start(config, log)
    try:
        wait_for(lambda: len(_children(process.pid)) == 2, timeout=60, what="two processes")
        children = _children(process.pid)
        _produce(bootstrap, topic, 0, 500)
        wait_for(lambda: len(_delivered(actions)) == 500, timeout=90, what="500 actions")
        process.kill()
        process.wait(30)
        wait_for(
            lambda: not any(_alive(pid) for pid in children),
            timeout=20,
            what="the pipeline processes gone with their supervisor",
        )
        # The store's lock went with them: a new run takes over and goes on.
        process = _start(config, log)
        _produce(bootstrap, topic, 500, 500)

        def all_there() -> bool:
            assert process.poll() is None, log.read_text()
            return len(_delivered(actions)) == 1000

        wait_for(all_there, timeout=120, what="1000 actions after the restart")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    assert process.returncode == 0, log.read_text()


def _group_formed(process: subprocess.Popen[bytes], log: Path) -> Callable[[], bool]:
    """Whether both processes of the run logging to ``log`` were assigned partitions."""

    def formed() -> bool:
        assert process.poll() is None, log.read_text()
        text = log.read_text()
        return all(f"[p{i}] connector.pipeline.pipeline: assigned" in text for i in (1, 2))

    return formed


@pytest.mark.parametrize("instance_id", [None, "shop-a"])
def test_a_restarted_instance_gets_the_partitions_of_its_stopped_members_in_seconds(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    instance_id: str | None,
) -> None:
    """Without ``pipeline.instance_id`` each run's members are new: the stopped run's
    static members hold their partitions for a session (shortened for such members), not
    Kafka's 45 s. With it, the new run's members are the old ones and take them back.
    Nothing is lost or doubled across the restart."""
    topic, log = new_topic(4), tmp_path / "run.log"
    config = _config(tmp_path, bootstrap, topic, group_id, session=False, instance_id=instance_id)
    actions = tmp_path / "actions.jsonl"
    process = _start(config, log)
    try:
        wait_for(_group_formed(process, log), timeout=90, what="the group")
        _produce(bootstrap, topic, 0, 200)
        wait_for(lambda: len(_delivered(actions)) == 200, timeout=60, what="200 actions")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    assert process.returncode == 0, log.read_text()
    _produce(bootstrap, topic, 200, 200)
    process = _start(config, log)
    restarted = time.monotonic()
    try:

        def all_there() -> bool:
            assert process.poll() is None, log.read_text()
            return len(_delivered(actions)) == 400

        wait_for(all_there, timeout=120, what="400 actions after the restart")
        took = time.monotonic() - restarted
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    assert process.returncode == 0, log.read_text()
    # Kafka's 45 s session would be waited out without the one fix or the other.
    bound = 35 if instance_id is None else 20  # a 10 s session, or none at all
    assert took < bound, f"the restart read its partitions after {took:.1f}s"
    with open_store(f"sqlite:///{tmp_path}/state/checkpoints.db", create=False) as store:
        assert store.count_events() == 400
        assert store.count_actions_by_rule() == {"all": 400}
    assert set(_delivered(actions).values()) == {1}


def test_processes_must_be_a_positive_count_or_auto(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 'localhost:1'}\n"
        "namespaces: {default: {}}\n"
        "pipeline:\n"
        "  processes: 0\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "connector"]
    checked = subprocess.run(
        [*cmd, "validate", "-c", str(config)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert checked.returncode == 2
    assert f"{config}:4 pipeline.processes" in checked.stdout + checked.stderr
    config.write_text("kafka: {bootstrap_servers: 'localhost:1'}\nnamespaces: {default: {}}\n")
    refused = subprocess.run(
        [*cmd, "run", "-c", str(config), "--processes", "many"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--processes" in refused.stderr and "auto" in refused.stderr


def test_the_supervisor_serves_the_gateway_its_processes_confirm(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    """With ``http:``: one gateway for the instance, in the supervisor; the pipeline
    processes read its topic and their checkpoints confirm each send."""
    http_topic, port = new_topic(3), free_port()
    config = tmp_path / "connector.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            kafka: {{bootstrap_servers: "{bootstrap}"}}
            group_id: {group_id}
            namespaces: {{shop: {{topics: [{new_topic(1)}]}}}}
            checkpoint: {{backend: sqlite, path: {tmp_path}/state/checkpoints.db}}
            pipeline: {{processes: 2}}
            http: {{port: {port}, topic: {http_topic}}}
            targets:
              log: {{type: log, path: {tmp_path}/actions.jsonl}}
            rules:
              - {{name: approve, namespace: http, key: approve, action: start, workflow: wf}}
            """
        )
    )
    log, actions = tmp_path / "run.log", tmp_path / "actions.jsonl"
    process = _start(config, log)
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return _get(port, "/healthz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=90, interval=0.3, what="the instance ready")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/event/send_event/order-1",
            data=json.dumps({"event_key": "approve", "event_payload": {"by": "ann"}}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert reply.status == 200
            sent = json.loads(reply.read())
        wait_for(lambda: len(_delivered(actions)) == 1, timeout=60, what="the action")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    assert process.returncode == 0, log.read_text()
    (line,) = actions.read_text().splitlines()
    action = json.loads(line)
    assert action["rule"] == "approve" and action["event_ids"] == [sent["event_id"]]
    assert action["payload"]["value"] == {"by": "ann"}
    assert action["payload"]["context"] == "order-1"


WAL_WRITE_LOCK = 120  # the byte of a WAL database's -shm file its one writer locks


def _write_lock_holder(shm: Path) -> int | None:
    """The pid holding the SQLite WAL write lock of the database whose ``-shm`` is
    ``shm`` (from /proc/locks), or None."""
    try:
        inode = shm.stat().st_ino
    except OSError:
        return None
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()  # N: POSIX ADVISORY WRITE PID MAJ:MIN:INODE START END
        if (
            len(parts) >= 8
            and (parts[1], parts[3], parts[6]) == ("POSIX", "WRITE", str(WAL_WRITE_LOCK))
            and parts[5].rsplit(":", 1)[-1] == str(inode)
        ):
            return int(parts[4])
    return None


def test_a_process_stopped_holding_the_sqlite_write_lock_is_replaced(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    """SIGSTOP of one pipeline process while it holds the store's write lock: past the
    group's session timeout (6 s here) its supervisor kills and restarts it, and the other
    process, which waited for the lock, goes on with every partition. Before, the instance
    stood still until the process was continued."""
    topic = new_topic(4)
    config = _config(tmp_path, bootstrap, topic, group_id)
    log, actions = tmp_path / "run.log", tmp_path / "actions.jsonl"
    shm = tmp_path / "state" / "checkpoints.db-shm"
    process = _start(config, log)
    frozen: int | None = None
    try:
        wait_for(_group_formed(process, log), timeout=90, what="both processes assigned")
        _produce(bootstrap, topic, 0, 200)
        wait_for(lambda: len(_delivered(actions)) == 200, timeout=90, what="200 actions")

        # A stream that keeps both writing, then a stop that lands inside a transaction.
        sent = 200
        deadline = time.monotonic() + 60
        while frozen is None:
            assert time.monotonic() < deadline, "no process was seen holding the write lock"
            _produce(bootstrap, topic, sent, 500)
            sent += 500
            holder = _write_lock_holder(shm)
            if holder is None or holder not in _children(process.pid):
                continue
            os.kill(holder, signal.SIGSTOP)
            if _write_lock_holder(shm) == holder:
                frozen = holder
            else:  # it let go before the signal landed
                os.kill(holder, signal.SIGCONT)
        _produce(bootstrap, topic, sent, 1000)
        sent += 1000

        def all_delivered() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            return len(_delivered(actions)) == sent

        wait_for(all_delivered, timeout=120, what=f"{sent} actions with one process stopped")
        assert not _alive(frozen), "the stopped process was killed"
        wait_for(lambda: len(_children(process.pid)) == 2, timeout=60, what="its replacement")
    finally:
        if frozen is not None and _alive(frozen):
            os.kill(frozen, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    text = log.read_text()
    assert process.returncode == 0, text[-3000:]
    assert f"(pid {frozen}) has been stopped for" in text
    url = f"sqlite:///{tmp_path}/state/checkpoints.db"
    with open_store(url, create=False) as store:
        assert store.count_events() == sent, "every event checkpointed once"
        assert store.count_actions_by_rule() == {"all": sent}, "one action each"
