"""Commands from entry points (connector.commands.plugins): the CLI lists and runs the
installed plugins' commands, leaves a missing or broken one out without a traceback, and
finds devkit's dev-broker and demo the way pyproject.toml registers them.

The entry points are faked here (real ``EntryPoint`` objects, resolved by import as
installed ones are), so this does not depend on what the venv's install registered.
"""

from __future__ import annotations

import logging
import sys
import tomllib
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from connector.cli import cli
from connector.commands import plugins
from connector.commands.plugins import ENTRY_POINT_GROUP
from tests.support import ROOT


@click.command()
@click.argument("who")
def hello(who: str) -> None:
    """Say hello (a plugin's command)."""
    click.echo(f"hello {who}")


NOT_A_COMMAND = "just a string"


def _fake(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    """The installed plugins are exactly ``name=module:attribute`` of ``targets``."""
    fakes = [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in targets.items()]

    def lookup(*, group: str) -> list[EntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return fakes

    monkeypatch.setattr(plugins, "entry_points", lookup)


@pytest.fixture
def broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "kec_broken_plugin.py").write_text("raise RuntimeError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kec_broken_plugin", raising=False)
    return "kec_broken_plugin"


def test_a_plugin_command_is_listed_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, hello=f"{__name__}:hello")
    listing = CliRunner().invoke(cli, ["--help"])
    assert listing.exit_code == 0, listing.output
    assert "hello       Say hello (a plugin's command)." in listing.output
    done = CliRunner().invoke(cli, ["hello", "world"])
    assert (done.exit_code, done.output) == (0, "hello world\n")


def test_missing_and_broken_plugins_are_left_out_with_a_debug_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, broken_module: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="connector.commands.plugins")
    _fake(
        monkeypatch,
        hello=f"{__name__}:hello",
        gone="kec_no_such_module:command",
        broken=f"{broken_module}:command",
        odd=f"{__name__}:NOT_A_COMMAND",
    )
    listing = CliRunner().invoke(cli, ["--help"])
    assert listing.exit_code == 0, listing.output
    assert listing.exception is None
    listed = {line.split()[0] for line in listing.output.splitlines() if line.startswith("  ")}
    assert "hello" in listed and "run" in listed
    assert not listed & {"gone", "broken", "odd"}
    left_out = {r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG}
    assert left_out == {
        "command 'gone' (kec_no_such_module:command) left out: ModuleNotFoundError: "
        "No module named 'kec_no_such_module'",
        "command 'broken' (kec_broken_plugin:command) left out: RuntimeError: half installed",
        f"command 'odd' ({__name__}:NOT_A_COMMAND) left out: "
        f"{__name__}:NOT_A_COMMAND is not a click command",
    }
    assert all(r.exc_info is None for r in caplog.records)


def test_asking_for_a_broken_plugin_by_name_says_why(
    monkeypatch: pytest.MonkeyPatch, broken_module: str
) -> None:
    _fake(monkeypatch, broken=f"{broken_module}:command", gone="kec_no_such_module:command")
    done = CliRunner().invoke(cli, ["broken"])
    assert done.exit_code == 2
    assert (
        "command 'broken' is installed but does not load: RuntimeError: half installed"
        in done.output
    )
    assert "Traceback" not in done.output
    unknown = CliRunner().invoke(cli, ["nothing-of-that-name"])
    assert unknown.exit_code == 2
    assert "No such command 'nothing-of-that-name'" in unknown.output


def test_a_plugin_cannot_replace_a_built_in_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, run=f"{__name__}:hello")
    done = CliRunner().invoke(cli, ["run", "--help"])
    assert done.exit_code == 0
    assert "Run the connector" in done.output


def _declared() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    declared: dict[str, str] = project["entry-points"][ENTRY_POINT_GROUP]
    return declared


def test_pyproject_registers_devkits_commands_and_they_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    declared = _declared()
    assert declared == {
        "dev-broker": "devkit.commands:dev_broker",
        "demo": "devkit.commands:demo",
    }
    _fake(monkeypatch, **declared)
    listing = CliRunner().invoke(cli, ["--help"])
    assert listing.exit_code == 0, listing.output
    assert "dev-broker  Run a local single-node Apache Kafka broker" in listing.output
    assert "demo        The quickstart on embedded defaults" in listing.output
    done = CliRunner().invoke(cli, ["dev-broker", "--resolve-only", "--port", "1"])
    assert done.exit_code == 2
    assert "--resolve-only starts no broker" in done.output


def test_the_venvs_install_registers_what_pyproject_declares() -> None:
    installed = {e.name: e.value for e in entry_points(group=ENTRY_POINT_GROUP)}
    assert installed == _declared(), (
        "the installed kafka-event-connector is older than pyproject.toml's entry points: "
        "re-run `make setup` (it reinstalls the package when pyproject.toml changes)"
    )
