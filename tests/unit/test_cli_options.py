"""A command offers the options it uses and no other: an option it would ignore is refused
at parse time (exit 2), so an operator never believes it took effect. No broker needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import cli


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["send", "k", "v"], "--store"),  # send writes to Kafka only
        (["send", "k", "v"], "--group"),  # and joins no group
        (["tail"], "--store"),  # tail reads Kafka only
        (["tail"], "--group"),  # without joining the connector's group
        (["replay", "--from-offset", "0"], "--group"),  # replay reads with a group of its own
        (["dlq", "list"], "--bootstrap"),  # the dlq commands read the store only
        (["dlq", "list"], "--group"),
        (["dlq", "list"], "--topic"),
        (["dlq", "replay", "--all"], "--bootstrap"),
        (["dlq", "replay", "--all"], "--group"),
        (["dlq", "replay", "--all"], "--topic"),
    ],
)
def test_an_option_the_command_would_ignore_is_refused(command: list[str], option: str) -> None:
    result = CliRunner().invoke(cli, [*command, option, "x"])
    assert result.exit_code == 2, result.output
    assert f"No such option '{option}'" in result.output
    help_text = CliRunner().invoke(cli, [*command[: 2 if command[0] == "dlq" else 1], "--help"])
    assert help_text.exit_code == 0
    assert option not in help_text.output


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["send", "k", "v"], ["--bootstrap", "--topic", "-c"]),
        (["tail"], ["--bootstrap", "--topic", "-c"]),
        (["status"], ["--bootstrap", "--topic", "--group", "--store", "-c"]),
        (["replay"], ["--bootstrap", "--topic", "--store", "-c"]),
        (["dlq", "list"], ["--store", "-c"]),
        (["dlq", "replay"], ["--store", "-c"]),
    ],
)
def test_the_options_a_command_uses_are_offered(command: list[str], options: list[str]) -> None:
    head = command[:2] if command[0] == "dlq" else command[:1]
    result = CliRunner().invoke(cli, [*head, "--help"])
    assert result.exit_code == 0, result.output
    offered = {word.rstrip(",") for line in result.output.splitlines() for word in line.split()}
    assert set(options) <= offered


def test_replay_with_a_config_replays_one_named_topic_not_the_first_of_several(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka: {bootstrap_servers: '127.0.0.1:1'}\nnamespaces: {a: {}, b: {}}\n")
    result = CliRunner().invoke(
        cli,
        ["replay", "-c", str(config), "--from-offset", "0", "--topic", "events.a",
         "--topic", "events.b"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "with -c, give at most one --topic" in result.output


def test_dev_broker_resolve_only_takes_no_broker_options() -> None:
    # devkit's command itself: the CLI finds it through an entry point (test_cli_plugins.py).
    from devkit.commands import dev_broker

    result = CliRunner().invoke(dev_broker, ["--resolve-only", "--port", "9092"])
    assert result.exit_code == 2, result.output
    assert "--resolve-only starts no broker: it takes no other option" in result.output
