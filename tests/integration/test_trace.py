"""``event-connector trace`` against a real broker and a running connector, asked each way.

One ``run -c FILE`` with a webhook target (a real HTTP server that answers 503, 503, then
200 for one action and 400 for another) and a log target; events from a plain producer
(one with an explicit id and a context). Then ``trace`` as a user calls it, by
coordinates, event id, action id, key and context, in JSON and as text, with ``--why``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from kec.action import action_id
from kec.codec import record_headers, record_value
from kec.event import Event
from tests.integration.http_recorder import RecordingServer, Reply, serving
from tests.support import ROOT, start_run, wait_for


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    with serving() as server:
        yield server


def _config(tmp_path: Path, bootstrap: str, topic: str, group: str, hook: str) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(
        f"kafka: {{bootstrap_servers: '{bootstrap}'}}\n"
        f"group_id: {group}\n"
        f"namespaces: {{shop: {{topics: [{topic}]}}}}\n"
        f"checkpoint: {{backend: sqlite, path: {tmp_path}/checkpoints.db}}\n"
        "retry: {max_attempts: 5, initial_backoff_seconds: 0.05, max_backoff_seconds: 0.2}\n"
        "targets:\n"
        f"  hook: {{type: webhook, url: '{hook}', concurrency: 1}}\n"
        f"  log: {{type: log, path: {tmp_path}/actions.jsonl}}\n"
        "rules:\n"
        "  - {name: start-order, namespace: shop, key: 'order-*', action: start,"
        " workflow: fulfil, target: hook}\n"
        "  - {name: note, namespace: shop, key: 'note-*', action: notify, target: log}\n"
        "  - {name: big-note, namespace: shop, key: 'note-*', action: notify, target: log,"
        " value: {json: [{path: size, gt: 10}]}}\n"
    )
    return path


def _send(bootstrap: str, topic: str, *events: Event) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for event in events:
        producer.produce(
            topic, key=event.key, value=record_value(event), headers=record_headers(event)
        )
    assert producer.flush(30) == 0


def _trace(config: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "connector", "trace", "-c", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def _json(config: Path, *args: str) -> list[dict[str, Any]]:
    code, out = _trace(config, *args, "--json")
    assert code == 0, out
    found: list[dict[str, Any]] = json.loads(out)
    return found


def _state(config: Path, *args: str) -> str | None:
    """The state of the one action of the event asked for (None: not checkpointed yet)."""
    code, out = _trace(config, *args, "--json")
    if code == 1:
        return None
    assert code == 0, out
    traced = json.loads(out)
    return str(_action(traced)["state"]) if traced and traced[0]["actions"] else None


def _action(traced: list[dict[str, Any]]) -> dict[str, Any]:
    ((event,),) = [[t] for t in traced]
    (action,) = event["actions"]
    return dict(action)


def test_trace_each_way_shows_event_rules_actions_and_attempts(
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    http_server: RecordingServer,
    tmp_path: Path,
) -> None:
    topic = new_topic(1)
    config = _config(tmp_path, bootstrap, topic, group_id, http_server.url)
    # The first action's first two answers are 503s, then 200; the second action's a 400.
    http_server.answer(Reply(503, body=b'{"busy": true}'), Reply(503, body=b'{"busy": true}'))
    run = start_run(config, tmp_path / "run.log")
    try:
        order_event = Event(key="order-1", value='{"order": 1}', namespace="shop")
        _send(bootstrap, topic, order_event)
        wait_for(lambda: len(http_server.requests) >= 3, timeout=60, what="two retries")
        http_server.answer(Reply(400, body=b'{"error": "no such warehouse"}'))
        explicit = Event(
            key="note-1", value='{"size": 3}', event_id="note-77", context="run-9", namespace="shop"
        )
        refused = Event(key="order-2", value='{"order": 2}', namespace="shop")
        _send(bootstrap, topic, refused, explicit)
        first = f"{topic}/0/0"
        order_1 = action_id("start-order", (order_event.event_id,))
        order_2 = action_id("start-order", (refused.event_id,))
        wait_for(
            lambda: (
                _state(config, f"{topic}/0/1") == "dead"
                and _state(config, first) == "done"
                and _state(config, "note-77", "--namespace", "shop") == "done"
            ),
            timeout=60,
            what="one delivered after retries, one dead, one delivered at once",
        )
        # By coordinates: the event, its action, the two failures and the delivery.
        (traced,) = _json(config, first)
        assert traced["event"]["key"] == "order-1" and traced["event"]["value"] == '{"order": 1}'
        action = _action([traced])
        assert (action["action_id"], action["rule"], action["target"]) == (
            order_1,
            "start-order",
            "hook",
        )
        assert action["engine_ref"] == f"Idempotency-Key {order_1}"
        assert [(a["n"], a["outcome"]) for a in action["attempts"]] == [
            (1, "failed"),
            (2, "failed"),
            (3, "delivered"),
        ]
        assert "503" in action["attempts"][0]["detail"]
        # By action id: the dead one, with the target's answer.
        dead = _action(_json(config, "--action", order_2))
        assert dead["state"] == "dead"
        assert [a["outcome"] for a in dead["attempts"]] == ["dead"]
        assert "400" in dead["attempts"][0]["detail"]
        # By explicit event id, by key, by context: the same event each time.
        by_id = _json(config, "note-77", "--namespace", "shop")
        assert [t["event"]["event_id"] for t in by_id] == ["note-77"]
        note = _action(by_id)
        assert (note["rule"], note["state"], note["attempts"]) == ("note", "done", [])
        assert [t["event"]["offset"] for t in _json(config, "--key", "order-1")] == [0]
        assert [t["event"]["event_id"] for t in _json(config, "--context", "run-9")] == ["note-77"]
        # --why: each rule's verdict on the stored event, from today's rules.
        (why,) = _json(config, "note-77", "--why")
        verdicts = {r["rule"]: r["verdict"] for r in why["rules"]}
        assert verdicts == {"start-order": "no", "note": "fires", "big-note": "no"}
        reasons = {r["rule"]: r["reason"] for r in why["rules"]}
        assert "size" in reasons["big-note"]
        # As text, for a person.
        code, text = _trace(config, first)
        assert code == 0, text
        assert f"action {order_1}" in text and "attempt 1" in text and "503" in text
        assert "settled by" in text
        # Nothing found: exit 1 and a line saying why it may be missing.
        code, text = _trace(config, f"{topic}/0/99")
        assert code == 1 and "no such event in the store" in text
        code, text = _trace(config, "--key", "order-1", "--context", "run-9")
        assert code == 2 and "give one of" in text
    finally:
        run.terminate()
        run.wait(timeout=60)
