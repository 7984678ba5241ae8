"""The configuration is a leaf: loading a config loads none of what it configures.

``validate``, ``schema`` and the operator commands read the file before anything
connects, so reading it must not pull in the Kafka client, the HTTP server, Prometheus,
the dispatcher, the trigger engine or a target (docs/architecture.md, "Layout"). Checked
in a fresh interpreter, on a file with every section and every target type, so that a
delayed import inside a validator counts too.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.support import run_in_repo

# Third-party packages that belong to running, never to reading a config.
FOREIGN = (
    "confluent_kafka",
    "prometheus_client",
    "starlette",
    "uvicorn",
    "httpx",
    "tenacity",
    "temporalio",
)
# The project's modules that a config names but must not load.
OWN = (
    "connector.dispatch",
    "connector.pipeline",
    "connector.rules.trigger",
    "connector.targets",  # the package and every target in it
    "connector.gateway",
    "connector.metrics",
    "connector.service",
    "kec.kafka.clients",  # kec.kafka.settings (the connection, no client) is the config's
    "kec.kafka.errors",
    "kec.kafka.topics",
    "checkpoint",
    "listeners",
)

EVERY_SECTION = """\
kafka:
  bootstrap_servers: localhost:9092
  sasl_password: ${KAFKA_PASSWORD:-none}
  properties: {client.rack: a, acks: all}
group_id: g
listener_group_id: g-listeners
namespaces: {default: {}, orders: {topics: [orders]}}
checkpoint: {backend: sqlite, path: store.db, retention_days: 1}
dead_letter_topic: dlq
topic_creation: {partitions: 2}
pipeline: {batch_size: 10, match_max_value_length: 100, match_max_json_depth: 5}
retry: {max_attempts: 3, initial_backoff_seconds: 1, max_backoff_seconds: 2}
targets:
  audit: {type: log, path: actions.jsonl}
  deploy: {type: command, argv: [echo, hi]}
  hook: {type: webhook, url: "http://127.0.0.1:9/actions"}
  out: {type: kafka, topic: actions, bootstrap_servers: "localhost:9092"}
  fn: {type: python, function: "json:dumps"}
  wf: {type: temporal, task_queue: q}
  dags: {type: airflow, url: "http://127.0.0.1:9", token: t}
  flows: {type: prefect, url: "http://127.0.0.1:9/api"}
rules:
  - {name: r1, key: "order-*", action: start, workflow: w, target: hook}
  - name: r2
    namespace: orders
    all_of: {keys: [a, b], window: 60, policy: latest}
    action: notify
    target: out
  - {name: r3, key: k, value: {regex: "^x"}, action: START, workflow: w, task: t}
http: {port: 0, strict: true}
metrics: {port: 0}
admin: {port: 0, token: t}
"""

CHILD = textwrap.dedent(
    """
    import json, sys
    from connector.config import load_config

    config = load_config(sys.argv[1], data_dir=sys.argv[2])
    loaded = sorted(sys.modules)
    # Using what was loaded must not need more (the policy and limits of the file).
    config.retry.policy(), config.pipeline.match_limits(), config.kafka.client_config()
    print(json.dumps({
        "before": loaded,
        "after": sorted(sys.modules),
        "targets": sorted({spec.type for spec in config.targets.values()}),
        "rules": len(config.rules),
    }))
    """
)


def _loads(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_loading_a_config_loads_no_client_server_dispatcher_engine_or_target(
    tmp_path: Path,
) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text(EVERY_SECTION)
    done = run_in_repo("-c", CHILD, str(path), str(tmp_path), drop={"KAFKA_PASSWORD"})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # The file did reach every part that could pull something in.
    assert seen["targets"] == sorted(
        ["airflow", "command", "kafka", "log", "prefect", "python", "temporal", "webhook"]
    )
    assert seen["rules"] == 3
    assert "connector.config" in seen["before"]
    for moment in ("before", "after"):
        wrong = [m for m in seen[moment] if _loads(m, FOREIGN) or _loads(m, OWN)]
        assert not wrong, f"loaded by reading a config ({moment} using it): {wrong}"
