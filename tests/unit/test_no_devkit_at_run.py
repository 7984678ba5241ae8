"""The running connector imports no development tooling: building the service from each
shipped config, and the CLI resolving ``run``, leave no ``devkit`` module in sys.modules.

In a fresh interpreter (the test process has devkit loaded), with devkit importable (the
repository on PYTHONPATH): were the product to import it, it would be found there.
tests/unit/test_layering.py forbids the import statements; this catches what an import
hides behind (a plugin, a helper of a helper).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

BUILD = """
import json, sys
from pathlib import Path

import click

from connector.cli import cli
from connector.config import load_config
from connector.assembly import build_service

built = []
for path in sys.argv[1:]:
    service = build_service(load_config(Path(path)))
    built.append(type(service).__name__)
    service.store.close()
ctx = click.Context(cli)
name, command, _ = cli.resolve_command(ctx, ["run", "-c", sys.argv[1]])
print(json.dumps({
    "built": built,
    "resolved": [name, command.name if command else None],
    "devkit": sorted(m for m in sys.modules if m == "devkit" or m.startswith("devkit.")),
}))
"""


def _configs(folder: Path) -> list[Path]:
    """Every config the project ships, checkpointing to SQLite in ``folder`` (the compose
    file's PostgreSQL store would need a server: its copy uses SQLite instead)."""
    shipped = [
        ROOT / "examples" / "quickstart.yaml",
        ROOT / "examples" / "temporal" / "connector.yaml",
        ROOT / "examples" / "airflow" / "connector.yaml",
        ROOT / "examples" / "prefect" / "connector.yaml",
    ]
    compose = (ROOT / "docker" / "connector.yaml").read_text()
    postgres = "  backend: postgres\n  dsn: ${KEC_PG_DSN}\n"
    assert postgres in compose
    copy = folder / "compose-connector.yaml"
    copy.write_text(compose.replace(postgres, f"  backend: sqlite\n  path: {folder}/c.db\n"))
    return [*shipped, copy]


def test_building_the_service_imports_no_devkit_module(tmp_path: Path) -> None:
    configs = _configs(tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "KEC_STATE_DIR": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # nothing is contacted while building
        "AIRFLOW_PASSWORD": "unused",
    }
    done = subprocess.run(
        [sys.executable, "-c", BUILD, *map(str, configs)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["built"] == ["ConnectorService"] * len(configs)
    assert report["resolved"] == ["run", "run"]
    assert report["devkit"] == []


def test_devkit_is_importable_where_the_check_runs() -> None:
    # The check above would pass trivially if devkit could not be imported at all.
    done = subprocess.run(
        [sys.executable, "-c", "import devkit.broker, devkit.demo; print('ok')"],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "ok", done.stderr
