"""Every config in examples/ passes validation, as a user would run it first."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_example_configs() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "quickstart.yaml", "time_rules.yaml", "correlation.yaml", "flow_control.yaml"
    }  # fmt: skip


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_each_example_config_loads(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path, env={"KEC_STATE_DIR": str(tmp_path)}, data_dir=tmp_path)
    assert cfg.rules, f"{path.name} declares no rule"
