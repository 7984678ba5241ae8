"""``event-connector validate`` and ``schema``: exit codes, where each line goes, the schema.

Most tests invoke the click commands in-process; the subprocess tests run
``python -m connector`` so the exit code is checked through ``connector.cli.main``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from connector.cli import cli
from connector.commands import config_cmds
from tests.unit.test_config import CONFIGS, EXPECTED, SECRET

ROOT = Path(__file__).resolve().parents[2]
OK_FULL = "ok (3 namespaces, 4 topics, 4 rules, 2 targets)"  # log is built in; http: is one
CLEAN_ENV = {"KAFKA_PASSWORD": None, "KAFKA_BOOTSTRAP_SERVERS": None, "GATEWAY_TOKEN": None}


def invoke(command: Any, *args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(command, list(args), env={**CLEAN_ENV, **(env or {})})


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


def expected_lines(fixture: str) -> list[str]:
    path = CONFIGS / fixture
    return [f"{path}:{line} {where}: " for line, where, _ in EXPECTED[fixture]]


def test_both_commands_are_registered() -> None:
    assert cli.commands["validate"] is config_cmds.validate
    assert cli.commands["schema"] is config_cmds.schema


# -- validate --------------------------------------------------------------------------


def test_validate_valid_file() -> None:
    path = CONFIGS / "valid_full.yaml"
    result = invoke(config_cmds.validate, "-c", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: {OK_FULL}\n"
    assert result.stderr == ""


def test_validate_counts_in_singular() -> None:
    path = CONFIGS / "valid_minimal.yaml"
    result = invoke(config_cmds.validate, "--config", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: ok (1 namespace, 1 topic, 0 rules, 1 target)\n"


@pytest.mark.parametrize(
    "fixture",
    [
        "missing_bootstrap.yaml",
        "several_errors.yaml",
        "bad_yaml_bracket.yaml",
        "unknown_key_in_target.yaml",
        "bad_regex.yaml",
        "empty.yaml",
    ],
)
def test_validate_broken_file_exits_2_with_every_line_on_stderr(fixture: str) -> None:
    path = CONFIGS / fixture
    result = invoke(config_cmds.validate, "-c", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    count = len(EXPECTED[fixture])
    assert lines[0] == f"{path}: {count} error{'s' if count != 1 else ''}"
    assert len(lines) == 1 + count
    for line, prefix in zip(lines[1:], expected_lines(fixture), strict=True):
        assert line.startswith(f"  {prefix}"), (line, prefix)


def test_validate_bad_regex_names_the_rule_field() -> None:
    path = CONFIGS / "bad_regex.yaml"
    result = invoke(config_cmds.validate, "-c", str(path))
    assert result.exit_code == 2
    assert (
        f"  {path}:9 rules[0].value.regex: invalid regular expression '([a-z': "
        "unterminated character set at position 1"
    ) in result.stderr.splitlines()


def test_validate_reports_what_building_a_target_refuses() -> None:
    # load_config accepts a string argv; CommandTarget refuses it without `shell: true`.
    path = CONFIGS / "build_refuses_target.yaml"
    result = invoke(config_cmds.validate, "-c", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}: 1 error",
        f"  {path}:7 targets.deploy: command target 'deploy': argv must be a list without shell",
    ]


def test_validate_reports_every_refused_target(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        "kafka: {bootstrap_servers: localhost:9092}\n"
        "namespaces: {default: {}}\n"
        "targets:\n"
        "  to-kafka:\n"
        "    {type: kafka, topic: actions, bootstrap_servers: k:9092, properties: {acks: '1'}}\n"
        "  sh: {type: command, argv: echo hi}\n"
        "  fine: {type: command, argv: echo hi, shell: true}\n",
        encoding="utf-8",
    )
    result = invoke(config_cmds.validate, "-c", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}: 2 errors",
        f"""  {path}:4 targets["to-kafka"]: kafka target 'to-kafka': property acks='1' is not"""
        " allowed: the client needs all",
        f"  {path}:6 targets.sh: command target 'sh': argv must be a list without shell",
    ]


def test_validate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke(config_cmds.validate, "-c", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_validate_requires_config() -> None:
    result = invoke(config_cmds.validate)
    assert result.exit_code == 2
    assert "Missing option '-c' / '--config'" in result.stderr


def test_validate_subprocess_ok() -> None:
    path = CONFIGS / "valid_full.yaml"
    done = run_module("validate", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{path}: {OK_FULL}\n"


def test_validate_subprocess_exit_code_2_end_to_end() -> None:
    path = CONFIGS / "several_errors.yaml"
    done = run_module("validate", "-c", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"{path}: 6 errors"
    for line, prefix in zip(lines[1:], expected_lines("several_errors.yaml"), strict=True):
        assert line.startswith(f"  {prefix}"), (line, prefix)


def test_validate_subprocess_keeps_the_secret_out() -> None:
    path = CONFIGS / "secret_with_error.yaml"
    env = {"KAFKA_PASSWORD": SECRET, "PG_DSN": f"mysql://connector:{SECRET}@db/connector"}
    done = run_module("validate", "-c", str(path), env=env)
    assert done.returncode == 2
    assert f"  {path}:6 kafka.sasl_mechanism: input should be 'PLAIN'" in done.stderr
    assert SECRET not in done.stdout + done.stderr


# -- schema ----------------------------------------------------------------------------


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in refs(item)]
    return []


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = invoke(config_cmds.schema)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_schema_top_level(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"kafka", "namespaces", "rules", "targets"} <= set(schema["properties"])
    assert schema["required"] == ["kafka", "namespaces"]
    assert schema["additionalProperties"] is False  # a typo is flagged in the editor too
    defs = schema["$defs"]
    for ref in refs(schema):
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in defs


def test_schema_target_union_is_discriminated_by_type(schema: dict[str, Any]) -> None:
    targets = schema["properties"]["targets"]["additionalProperties"]
    assert targets["discriminator"]["propertyName"] == "type"
    mapping = targets["discriminator"]["mapping"]
    assert set(mapping) == {
        "log",
        "command",
        "webhook",
        "kafka",
        "python",
        "temporal",
        "airflow",
        "prefect",
    }
    for kind, ref in mapping.items():
        spec = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert spec["properties"]["type"]["const"] == kind
        assert spec["additionalProperties"] is False


def test_schema_secrets_paths_and_aliases(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    password = defs["KafkaSettings"]["properties"]["sasl_password"]["anyOf"][0]
    assert password == {"format": "password", "type": "string", "writeOnly": True}
    path = defs["CheckpointConfig"]["properties"]["path"]
    assert (path["type"], path["format"]) == ("string", "path")
    # What a YAML file writes (the validation aliases), not the Python field names.
    assert "json" in defs["ValueMatch"]["properties"]
    assert "in" in defs["JsonPredicate"]["properties"]
    assert set(defs["ActionKind"]["enum"]) == {
        "start",
        "stop",
        "START",
        "STOP",
        "RESTART",
        "notify",
    }


def properties(node: Any, where: str = "#") -> list[tuple[str, Any]]:
    """Every (path, schema) of an object property, anywhere: models, unions, lists, maps."""
    found: list[tuple[str, Any]] = []
    if not isinstance(node, dict):
        return found
    for name, sub in (node.get("properties") or {}).items():
        found.append((f"{where}.{name}", sub))
        found += properties(sub, f"{where}.{name}")
    for key in ("additionalProperties", "items"):
        found += properties(node.get(key), f"{where}[{key}]")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, branch in enumerate(node.get(key) or []):
            found += properties(branch, f"{where}[{key}{i}]")
    for name, sub in (node.get("$defs") or {}).items():
        found += properties(sub, f"#/$defs/{name}")
    return found


def test_schema_describes_every_property(schema: dict[str, Any]) -> None:
    every = properties(schema)
    assert len(every) >= 96  # 14 sections, the targets, the rules and their parts
    undescribed = [path for path, sub in every if not sub.get("description", "").strip()]
    assert undescribed == [], f"{len(undescribed)} of {len(every)} properties lack one"
    top = schema["properties"]
    assert top["topic_creation"]["description"].startswith("Whether missing topics are created")
    rule = schema["$defs"]["Rule"]["properties"]
    assert "workflow id" in rule["context"]["description"]


def test_schema_output_file(tmp_path: Path, schema: dict[str, Any]) -> None:
    out = tmp_path / "connector.schema.json"
    result = invoke(config_cmds.schema, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert json.loads(out.read_text(encoding="utf-8")) == schema


# -- help ------------------------------------------------------------------------------


# Through the real entry point: in-process, the group's callback would configure logging
# onto the runner's temporary stderr.
def test_validate_help() -> None:
    done = run_module("validate", "--help")
    assert done.returncode == 0, done.stderr
    assert "-c, --config FILE" in done.stdout
    assert "Check a config file without connecting to anything." in done.stdout


def test_schema_help() -> None:
    done = run_module("schema", "-h")
    assert done.returncode == 0, done.stderr
    assert "-o, --output FILE" in done.stdout
    assert "# yaml-language-server: $schema=./connector.schema.json" in done.stdout


def test_help_lists_both() -> None:
    done = run_module("--help")
    assert done.returncode == 0
    assert "validate" in done.stdout
    assert "schema" in done.stdout
