"""Where a config's relative paths go (the data directory), and the refusal of a place the
connector cannot write: one line naming the setting, before anything connects. No broker
is needed: the refusal comes before the first connection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector.config import load_config
from connector.config.paths import check_writable, unwritable
from connector.config.targets import CommandSpec, LogSpec
from kec.errors import ConfigError
from tests.support import ROOT

CONFIG = """\
kafka: {bootstrap_servers: '127.0.0.1:1'}
namespaces: {orders: {}}
checkpoint: {path: state/checkpoints.db}
targets:
  log: {type: log, path: state/actions.jsonl}
  job: {type: command, argv: [./job.sh], cwd: scripts}
"""


def write(folder: Path, text: str = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "connector.yaml"
    path.write_text(text)
    return path


def paths(config: Path, **kwargs: object) -> tuple[Path, Path, Path]:
    cfg = load_config(config, **kwargs)  # type: ignore[arg-type]
    log, job = cfg.targets["log"], cfg.targets["job"]
    assert isinstance(log, LogSpec) and isinstance(job, CommandSpec)
    assert log.path is not None and job.cwd is not None
    return cfg.checkpoint.path, log.path, job.cwd


def test_by_default_relative_paths_are_the_config_files_folder(tmp_path: Path) -> None:
    config = write(tmp_path / "etc")
    store, log, cwd = paths(config, env={})
    assert (store, log, cwd) == (
        tmp_path / "etc" / "state" / "checkpoints.db",
        tmp_path / "etc" / "state" / "actions.jsonl",
        tmp_path / "etc" / "scripts",
    )


def test_kec_data_dir_places_what_is_written_and_the_option_wins(tmp_path: Path) -> None:
    config = write(tmp_path / "etc")
    env = {"KEC_DATA_DIR": str(tmp_path / "data")}
    store, log, cwd = paths(config, env=env)
    assert store == tmp_path / "data" / "state" / "checkpoints.db"
    assert log == tmp_path / "data" / "state" / "actions.jsonl"
    assert cwd == tmp_path / "etc" / "scripts"  # read, not written: next to the config
    store, _, _ = paths(config, env=env, data_dir=tmp_path / "other")
    assert store == tmp_path / "other" / "state" / "checkpoints.db"


def test_absolute_paths_stay_where_they_are(tmp_path: Path) -> None:
    config = write(tmp_path, CONFIG.replace("state/checkpoints.db", "/srv/kec/c.db"))
    store, _, _ = paths(config, env={"KEC_DATA_DIR": str(tmp_path / "data")})
    assert store == Path("/srv/kec/c.db")


def test_an_unwritable_place_is_one_line_per_setting(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where a folder should be")
    config = write(tmp_path, CONFIG.replace("scripts", "."))
    cfg = load_config(config, env={})
    with pytest.raises(ConfigError) as caught:
        check_writable(cfg, tmp_path)
    state = tmp_path / "state"
    assert str(caught.value).splitlines() == [
        f"checkpoint.path: {state}/checkpoints.db is not writable (not a folder: {state}); "
        "set KEC_DATA_DIR (or --data-dir) to a writable folder, or give checkpoint.path an "
        "absolute path",
        f"targets.log.path: {state}/actions.jsonl is not writable (not a folder: {state}); "
        "set KEC_DATA_DIR (or --data-dir) to a writable folder, or give targets.log.path an "
        "absolute path",
    ]


def test_a_writable_place_passes_and_keeps_no_trace(tmp_path: Path) -> None:
    path = tmp_path / "new" / "checkpoints.db"
    assert unwritable(path) is None
    assert list((tmp_path / "new").iterdir()) == []  # the scratch file is gone
    assert unwritable(tmp_path) == "it is a folder"


def connector(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "KEC_DATA_DIR"}
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_run_refuses_an_unwritable_store_with_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where a folder should be")
    config = write(tmp_path)
    result = connector("run", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: checkpoint.path: {tmp_path}/state/checkpoints.db is not ")
    assert lines[1].startswith(f"targets.log.path: {tmp_path}/state/actions.jsonl is not ")
    assert len(lines) == 2


def test_run_without_a_config_refuses_an_unwritable_store_too(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where a folder should be")
    result = connector(
        "run", "--bootstrap", "127.0.0.1:1", "--topic", "t", "--store", "sqlite://state/c.db",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: --store: state/c.db is not writable (not a folder: state); "
        "give --store a writable location"
    ]


def test_data_dir_without_a_config_is_a_usage_error(tmp_path: Path) -> None:
    result = connector("dlq", "list", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "--data-dir: only with -c" in result.stderr
