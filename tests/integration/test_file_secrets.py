"""``${file:PATH}`` secrets through the real command line: the value is used (the
connector runs on it), and no log line, not even at DEBUG, shows it."""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from tests.support import start_run, wait_for


def test_a_value_read_from_a_file_is_used_and_never_logged(
    bootstrap: str, new_topic: Callable[..., str], group_id: str, tmp_path: Path
) -> None:
    topic = new_topic(1)
    # A secret in a setting the connector logs at start (its consumer group), so that a
    # leak would show: the file's value must be used and starred in every line.
    secret = f"{group_id}-s3cr3t"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "group").write_text(secret + "\n")
    actions = tmp_path / "actions.jsonl"
    config = tmp_path / "connector.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            kafka: {{bootstrap_servers: "{bootstrap}"}}
            group_id: ${{file:secrets/group}}
            namespaces:
              shop: {{topics: [{topic}]}}
            checkpoint: {{backend: sqlite, path: {tmp_path}/checkpoints.db}}
            targets:
              log: {{type: log, path: {actions}}}
            rules:
              - {{name: on-order, namespace: shop, key: order, action: notify, target: log}}
            """
        )
    )
    log = tmp_path / "run.log"
    process = start_run(config, log, "-v")
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, key="order", value=json.dumps({"id": 1}))
        assert producer.flush(30) == 0

        def delivered() -> bool:
            assert process.poll() is None, log.read_text()
            return actions.exists() and actions.read_text().count("\n") == 1

        wait_for(delivered, timeout=60, what="the action")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    text = log.read_text()
    assert process.returncode == 0, text
    assert secret not in text
    assert "group **********" in text  # the line that names the group, starred
