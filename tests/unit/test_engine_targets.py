"""The engine targets' configuration (no server): specs, config-time refusals with their
file and line, secrets kept out of output, the example configs, the shared helpers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from connector.config import ConfigFileError, ConnectorConfig, load_config
from connector.targets import build_target
from connector.targets.engine import execution_of, idempotency_key, task_input, workflow_input
from kec.action import Action, ActionKind
from kec.errors import ConfigError, TargetRejected

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "s3cr3t-engine-pw"

HEAD = """\
kafka: {bootstrap_servers: localhost:9092}
namespaces: {orders: {}}
targets:
"""


def write(tmp_path: Path, targets: str, rules: str = "") -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(targets), "  ") + textwrap.dedent(rules))
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        load_config(path, env={"PASSWORD": SECRET})
    return info.value.errors


def test_a_task_action_on_prefect_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        flows: {type: prefect, url: "http://127.0.0.1:4200/api"}
        """,
        """\
        rules:
          - name: start
            namespace: orders
            key: order
            action: start
            workflow: on-order/example
            target: flows
          - name: approve
            namespace: orders
            key: approve
            action: START
            workflow: on-order/example
            task: approve
            target: flows
        """,
    )
    (only,) = errors(path)
    assert only.startswith(f"{path}:15 rules[1].action: target 'flows' (prefect) cannot take")
    assert "action 'START': Prefect has no API to act on one task" in only


@pytest.mark.parametrize("kind", ["temporal", "airflow", "prefect"])
def test_notify_on_an_engine_is_refused(kind: str) -> None:
    spec = {
        "temporal": {"type": "temporal", "task_queue": "q"},
        "airflow": {"type": "airflow", "url": "http://127.0.0.1:8080"},
        "prefect": {"type": "prefect", "url": "http://127.0.0.1:4200/api"},
    }[kind]
    with pytest.raises(ValueError, match=rf"rules\[0\]\.action: target 'e' \({kind}\) cannot"):
        ConnectorConfig.model_validate(
            {
                "kafka": {"bootstrap_servers": "localhost:9092"},
                "namespaces": {"default": {}},
                "targets": {"e": spec},
                "rules": [{"name": "n", "key": "k", "action": "notify", "target": "e"}],
            }
        )


def test_airflow_spec_errors_name_their_field_and_hide_the_password(tmp_path: Path) -> None:
    login = write(
        tmp_path,
        """\
        dags:
          type: airflow
          url: http://127.0.0.1:8080
          password: ${PASSWORD}
        """,
    )
    (only,) = errors(login)
    assert only == f"{login}:7 targets.dags.password: give username and password together"
    fields = write(
        tmp_path,
        """\
        dags:
          type: airflow
          url: http://127.0.0.1:8080
          token: ${PASSWORD}
          run_id_prefix: "bad prefix!"
          concurrency: 0
        """,
    )
    found = errors(fields)
    assert SECRET not in "\n".join(found)
    assert found[0].startswith(f"{fields}:8 targets.dags.run_id_prefix: string should match")
    assert found[1] == (
        f"{fields}:9 targets.dags.concurrency: input should be greater than or equal to 1"
    )


def test_engine_specs_build_unopened_targets_with_their_concurrency(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
          wf: {type: temporal, task_queue: q, api_key: "${PASSWORD}", concurrency: 3}
          dags: {type: airflow, url: "http://127.0.0.1:8080", token: "${PASSWORD}"}
          flows: {type: prefect, url: "http://127.0.0.1:4200/api", api_key: "${PASSWORD}"}
        """,
    )
    config = load_config(path, env={"PASSWORD": SECRET})
    assert SECRET not in repr(config) and SECRET not in config.model_dump_json()
    built = {name: build_target(name, spec) for name, spec in config.targets.items()}
    assert [built[n].concurrency for n in ("wf", "dags", "flows")] == [3, 8, 8]  # type: ignore[attr-defined]
    for target in built.values():
        target.close()  # never opened: a no-op


def test_build_target_refuses_a_bad_engine_url() -> None:
    with pytest.raises(ConfigError, match="url must be http"):
        build_target("dags", {"type": "airflow", "url": "ftp://airflow"})
    with pytest.raises(ConfigError, match="address must be host:port"):
        build_target("wf", {"type": "temporal", "task_queue": "q", "address": "nowhere"})


@pytest.mark.parametrize("engine", ["temporal", "airflow", "prefect"])
def test_the_example_config_is_valid(engine: str) -> None:
    config = load_config(EXAMPLES / engine / "connector.yaml", env={"AIRFLOW_PASSWORD": SECRET})
    kinds = {spec.type for spec in config.targets.values()}
    assert kinds == {"log", engine}
    assert all(rule.target != "log" for rule in config.rules)


def _action(**fields: object) -> Action:
    values: dict[str, object] = {
        "rule": "r",
        "kind": ActionKind.START_WORKFLOW,
        "target": "t",
        "namespace": "orders",
        "event_ids": ("e1",),
        "event_key": "order",
        "workflow": "order",
        "payload": {"event_id": "e1", "key": "order", "value": "42", "context": "run-7"},
    }
    values.update(fields)
    return Action(**values)  # type: ignore[arg-type]


def test_the_workflow_input_carries_the_event_and_the_action() -> None:
    action = _action()
    assert workflow_input(action) == {
        "action_id": action.action_id,
        "rule": "r",
        "namespace": "orders",
        "event_key": "order",
        "event_ids": ["e1"],
        "event": action.payload,
    }
    update = task_input(_action(kind=ActionKind.RESTART_TASK, task="load", context="run-7"))
    assert (update["action"], update["task"]) == ("RESTART", "load")


def test_the_execution_is_the_context_and_its_absence_is_final() -> None:
    assert execution_of(_action(kind=ActionKind.START_TASK, task="t", context="run-1"), "x") == (
        "run-1"
    )
    # A workflow stop is not scoped, so it reads the triggering event's context.
    assert execution_of(_action(kind=ActionKind.STOP_WORKFLOW), "x") == "run-7"
    with pytest.raises(TargetRejected, match="names no execution"):
        execution_of(_action(kind=ActionKind.STOP_WORKFLOW, payload={"key": "k"}), "x")


def test_idempotency_keys_differ_by_rule_and_prefix() -> None:
    first, second = _action(rule="a"), _action(rule="b")
    assert idempotency_key("kec__", first) != idempotency_key("kec__", second)
    assert idempotency_key("p:", first) == f"p:{first.action_id}"


def test_a_gates_age_is_read_on_airflows_own_clock() -> None:
    from connector.targets.airflow import _seconds_between

    waited = _seconds_between("2026-12-01T16:14:38.250000Z", "Tue, 01 Dec 2026 16:14:43 GMT")
    assert waited == pytest.approx(4.75)
    assert _seconds_between(None, "Tue, 01 Dec 2026 16:14:43 GMT") is None
    assert _seconds_between("not a time", "Tue, 01 Dec 2026 16:14:43 GMT") is None
