"""``open_store(create=False)``: the tools' way to open a store, which must exist already.

A missing or empty SQLite file is refused with :class:`StoreMissing` and nothing is
created; the default (``run``, the gateway) still creates the store. No broker needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoint import open_store
from kec.errors import StoreMissing
from kec.event import Event
from tests.support import ROOT


def connector(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``event-connector ARGS`` in ``cwd``, as an operator runs it, with no broker set."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KAFKA_BOOTSTRAP_SERVERS": ""}
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_missing_file_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "state" / "checkpoints.db"
    with pytest.raises(StoreMissing, match=f"no checkpoint store at {path}$"):
        open_store(f"sqlite://{path}", create=False).open()
    assert list(tmp_path.iterdir()) == []  # not the file, not its folder


def test_an_empty_file_is_refused_and_left_empty(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.db"
    path.touch()
    with pytest.raises(StoreMissing, match="is empty: not a checkpoint store"):
        open_store(str(path), create=False).open()
    assert path.stat().st_size == 0
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoints.db"]


def test_an_existing_store_opens_without_create_and_the_default_creates(tmp_path: Path) -> None:
    path = tmp_path / "new" / "checkpoints.db"
    event = Event(key="k", value="v")
    with open_store(f"sqlite://{path}") as store:  # the default: run and the gateway
        store.put_step("s", event)
    with open_store(f"sqlite://{path}", create=False) as store:
        assert store.get_step("s") == event


@pytest.mark.parametrize("command", [["dlq", "list"], ["dlq", "replay", "--all"]])
def test_dlq_without_a_store_says_which_and_what_to_give(
    command: list[str], tmp_path: Path
) -> None:
    result = connector(*command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: no checkpoint store at {tmp_path / 'checkpoints.db'} (no -c or --store "
        "given): give -c FILE (the connector's config) or --store URL"
    ]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_dlq_with_a_config_names_its_setting(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: '127.0.0.1:1'}\nnamespaces: {shop: {}}\n"
        "checkpoint: {path: state/checkpoints.db}\n"
    )
    result = connector("dlq", "list", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: no checkpoint store at {tmp_path / 'state' / 'checkpoints.db'} "
        f"(checkpoint.path of {config}): a connector running with this config creates it; "
        "or give --store URL"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["connector.yaml"]
