"""Config reload, pause and resume of a running ``run`` (connector/control.py), against a
real broker and a SQLite store.

* SIGHUP under load, SIGKILL right after the reload applied, restart: every event is
  checkpointed once, no action is lost or doubled, the new rule fired exactly for the
  events from the offsets the log named at the swap, the removed one exactly for those
  below;
* refused reloads (an invalid file, a setting that needs a restart) keep the running
  config, each said in one error line;
* pause and resume of a rule and of a target through ``service.control``;
* ``pipeline.processes: 2``: SIGHUP to the supervisor reaches both processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Producer

from checkpoint import open_store
from connector.assembly import build_service
from connector.control import ConfigSource
from connector.service import ConnectorService
from kec.errors import StoreMissing
from tests.support import pipeline_processes, start_run, wait_for

APPLIED = re.compile(r"rules version (\d+) applied between batches; .* starts at (.*)$")


def _config(
    tmp_path: Path, bootstrap: str, topic: str, group_id: str, rules: str, *, extra: str = ""
) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            kafka:
              bootstrap_servers: "{bootstrap}"
              properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 500}}
            group_id: {group_id}
            namespaces:
              shop: {{topics: [{topic}]}}
            checkpoint: {{backend: sqlite, path: {tmp_path}/state/checkpoints.db}}
            targets:
              log: {{type: log, path: {tmp_path}/actions.jsonl}}
              other: {{type: log, path: {tmp_path}/other.jsonl}}
            """
        )
        + extra
        + "rules:\n"
        + textwrap.indent(textwrap.dedent(rules), "  ")
    )
    return path


def _rule(name: str, target: str = "log") -> str:
    return f'- {{name: {name}, namespace: shop, key: "*", action: notify, target: {target}}}\n'


def _lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _keys(path: Path) -> Counter[str]:
    return Counter(str(a["idempotency_key"]) for a in _lines(path))


class _Load:
    """A producer thread sending events continuously (values {"i": n}) until stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self._topic = topic
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(20):
                self._producer.produce(
                    self._topic, key=f"k{self.sent % 17}", value=json.dumps({"i": self.sent})
                )
                self.sent += 1
            self._producer.poll(0)
            self._stop.wait(0.01)

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self._producer.flush(30) == 0


def _produce(bootstrap: str, topic: str, values: range, key: Callable[[int], str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in values:
        producer.produce(topic, key=key(i), value=json.dumps({"i": i}))
    assert producer.flush(30) == 0


def _alive(process: subprocess.Popen[bytes], log: Path) -> None:
    assert process.poll() is None, log.read_text()


def _wait_running(process: subprocess.Popen[bytes], log: Path, url: str, topic: str) -> None:
    def owned() -> bool:
        _alive(process, log)
        try:
            with open_store(url, create=False) as store:
                return len([p for p in store.partitions() if p.tp[0] == topic and p.owner]) == 3
        except StoreMissing:  # no file yet, or its schema not written yet
            return False

    wait_for(owned, timeout=60, interval=0.2, what="the partitions claimed")


def test_a_reload_under_load_then_sigkill_loses_and_doubles_nothing(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(3)
    config = _config(tmp_path, bootstrap, topic, group_id, _rule("keep") + _rule("gone"))
    log, actions = tmp_path / "run.log", tmp_path / "actions.jsonl"
    url = f"sqlite://{tmp_path}/state/checkpoints.db"
    process = start_run(config, log)
    try:
        _wait_running(process, log, url, topic)
        with _Load(bootstrap, topic) as load:
            wait_for(lambda: len(_keys(actions)) >= 600, timeout=60, what="actions before")
            config.write_text(config.read_text().replace(_rule("gone"), _rule("fresh")))
            os.kill(process.pid, signal.SIGHUP)

            def applied() -> re.Match[str] | None:
                _alive(process, log)
                found = [APPLIED.search(line) for line in log.read_text().splitlines()]
                return next((m for m in found if m is not None), None)

            swap = wait_for(applied, timeout=30, interval=0.01, what="rules version 2 applied")
            process.kill()  # SIGKILL right after the swap
            process.wait(10)
            assert swap.group(1) == "2"
            starts = {
                int(p): int(o) if o != "start" else 0
                for p, o in re.findall(rf"{re.escape(topic)}\[(\d+)\]@(\w+)", swap.group(2))
            }
            assert sorted(starts) == [0, 1, 2], swap.group(0)
            wait_for(lambda: load.sent >= 1500, timeout=30, what="events after the kill")
        total = load.sent
        process = start_run(config, log)
        wait_for(
            lambda: _alive(process, log) or len({k for k in _keys(actions)}) >= 2 * total,
            timeout=90,
            what=f"{2 * total} distinct actions",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    # Every event checkpointed once: each offset of the topic, once.
    with open_store(url, create=False) as store:
        events = [e for e in store.iter_events() if e.topic == topic]
        by_rule = store.count_actions_by_rule()
    assert len(events) == total
    assert len({(e.partition, e.offset) for e in events}) == total
    # Each (rule, event) once, by its idempotency key; a line repeated after the kill
    # carries the same key (the target deduplicates it).
    made: dict[tuple[str, str], set[str]] = defaultdict(set)
    for action in _lines(actions):
        ids = action["event_ids"]
        assert isinstance(ids, list)
        made[(str(action["rule"]), str(ids[0]))].add(str(action["idempotency_key"]))
    assert all(len(keys) == 1 for keys in made.values())
    expected: set[tuple[str, str]] = set()
    for event in events:
        assert event.partition is not None and event.offset is not None
        expected.add(("keep", event.event_id))
        new = event.offset >= starts[event.partition]
        expected.add(("fresh" if new else "gone", event.event_id))
    assert set(made) == expected
    counts = Counter(rule for rule, _ in made)
    assert counts["keep"] == total and counts["gone"] + counts["fresh"] == total
    assert counts["gone"] > 0 and counts["fresh"] > 0
    assert by_rule == dict(counts)


def test_refused_reloads_keep_the_running_config(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(3)
    config = _config(tmp_path, bootstrap, topic, group_id, _rule("first"))
    good = config.read_text()
    log, actions = tmp_path / "run.log", tmp_path / "actions.jsonl"
    url = f"sqlite://{tmp_path}/state/checkpoints.db"
    process = start_run(config, log)
    try:
        _wait_running(process, log, url, topic)

        def refusal(count: int) -> str:
            _alive(process, log)
            lines = [line for line in log.read_text().splitlines() if "reload refused" in line]
            return lines[count - 1] if len(lines) >= count else ""

        config.write_text(good.replace("notify, target: log}", "notify, target: nowhere}"))
        os.kill(process.pid, signal.SIGHUP)
        line = wait_for(lambda: refusal(1), timeout=30, what="the first refusal")
        assert "ERROR" in line and f"{config}:" in line and "nowhere" in line

        config.write_text(good.replace(f"group_id: {group_id}", "group_id: another"))
        os.kill(process.pid, signal.SIGHUP)
        line = wait_for(lambda: refusal(2), timeout=30, what="the second refusal")
        assert "group_id cannot change while run runs" in line

        config.write_text(good.replace("state/checkpoints.db", "state/other.db"))
        os.kill(process.pid, signal.SIGHUP)
        line = wait_for(lambda: refusal(3), timeout=30, what="the third refusal")
        assert "checkpoint.path cannot change" in line

        # Still the first config: its rule fires, and a good reload applies as version 2.
        _produce(bootstrap, topic, range(30), lambda i: f"k{i}")
        wait_for(lambda: len(_keys(actions)) == 30, timeout=60, what="30 actions")
        config.write_text(good + _rule("second").replace("- ", "  - ", 1))
        os.kill(process.pid, signal.SIGHUP)
        wait_for(
            lambda: _alive(process, log) or "rules version 2 applied" in log.read_text(),
            timeout=30,
            what="rules version 2",
        )
        assert "rules added: second" in log.read_text()
        assert len([x for x in log.read_text().splitlines() if "reload refused" in x]) == 3
        _produce(bootstrap, topic, range(30, 40), lambda i: f"k{i}")
        wait_for(lambda: len(_keys(actions)) == 50, timeout=60, what="50 actions")
        assert Counter(a["rule"] for a in _lines(actions)) == {"first": 40, "second": 10}
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@contextmanager
def _service(config: Path) -> Iterator[ConnectorService]:
    source = ConfigSource(config)
    service = build_service(source.load(), source=source)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive()


def _values(path: Path, rule: str | None = None) -> list[int]:
    found = []
    for action in _lines(path):
        if rule is None or action["rule"] == rule:
            payload = action["payload"]
            assert isinstance(payload, dict)
            value = payload["value"]
            assert isinstance(value, dict)
            found.append(int(value["i"]))
    return found


def test_pause_and_resume_a_rule_and_a_target(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(3)
    config = _config(tmp_path, bootstrap, topic, group_id, _rule("mine") + _rule("theirs", "other"))
    actions, other = tmp_path / "actions.jsonl", tmp_path / "other.jsonl"
    url = f"sqlite://{tmp_path}/state/checkpoints.db"
    with _service(config) as service:
        control = service.control
        assert control is not None
        wait_for(lambda: len(service.ownership.epochs()) == 3, timeout=60, what="3 partitions")

        def key(i: int) -> str:
            return f"k{i % 5}"

        _produce(bootstrap, topic, range(0, 50), key)
        wait_for(lambda: len(_values(actions)) == 50, timeout=60, what="phase 1")
        control.pause("rule", "mine")
        assert control.paused() == {"rules": ["mine"], "targets": []}
        _produce(bootstrap, topic, range(50, 100), key)
        wait_for(lambda: len(_values(other)) == 100, timeout=60, what="phase 2 (other)")
        control.resume("rule", "mine")
        _produce(bootstrap, topic, range(100, 150), key)
        wait_for(lambda: len(_values(other)) == 150, timeout=60, what="phase 3 (other)")
        wait_for(lambda: len(_values(actions)) == 100, timeout=60, what="phase 3")
        # The events the paused rule skipped never get its actions, resumed or not.
        assert sorted(_values(actions, "mine")) == [*range(50), *range(100, 150)]

        control.pause("target", "other")
        _produce(bootstrap, topic, range(150, 200), key)
        wait_for(lambda: len(_values(actions)) == 150, timeout=60, what="phase 4 (mine)")
        with open_store(url, create=False) as store:
            wait_for(lambda: store.count_events() == 200, timeout=30, what="200 checkpointed")
        assert len(_values(other)) == 150  # held back
        assert service.dispatcher.pending == 50
        assert service.snapshot().values["actions_dead"] == 0
        assert service.snapshot().values["actions_failed"] == 0
        control.resume("target", "other")
        wait_for(lambda: len(_values(other)) == 200, timeout=60, what="phase 4 (other)")
        # Delivered in order within each key.
        by_key: dict[str, list[int]] = defaultdict(list)
        for i in _values(other):
            by_key[key(i)].append(i)
        assert all(values == sorted(values) for values in by_key.values())
        assert sorted(_values(other)) == list(range(200))
        assert control.paused() == {"rules": [], "targets": []}
    with open_store(url, create=False) as store:
        assert store.count_actions_by_rule() == {"mine": 150, "theirs": 200}


def test_sighup_to_a_supervisor_reloads_every_process(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(4)
    config = _config(
        tmp_path, bootstrap, topic, group_id, _rule("before"), extra="pipeline: {processes: 2}\n"
    )
    log, actions = tmp_path / "run.log", tmp_path / "actions.jsonl"
    url = f"sqlite://{tmp_path}/state/checkpoints.db"
    process = start_run(config, log)
    try:

        def shared() -> bool:
            _alive(process, log)
            if len(pipeline_processes(process.pid)) != 2 or not Path(url[9:]).exists():
                return False
            with open_store(url, create=False) as store:
                owned = [p for p in store.partitions() if p.tp[0] == topic]
            return len(owned) == 4 and len({p.owner for p in owned}) == 2

        wait_for(shared, timeout=90, interval=0.3, what="4 partitions shared by 2 processes")
        config.write_text(config.read_text().replace(_rule("before"), _rule("after")))
        os.kill(process.pid, signal.SIGHUP)

        def both() -> bool:
            _alive(process, log)
            text = log.read_text()
            return all(f"[p{i}] " in line for i in (1, 2) for line in [
                "\n".join(x for x in text.splitlines() if "rules version 2 applied" in x)
            ]) and "rules added: after" in text  # fmt: skip

        wait_for(both, timeout=60, what="both processes at rules version 2")
        _produce(bootstrap, topic, range(40), lambda i: f"k{i}")
        wait_for(lambda: len(_keys(actions)) == 40, timeout=60, what="40 actions")
        assert {a["rule"] for a in _lines(actions)} == {"after"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
