"""The folder layout is the architecture: each package imports only the ones below it.

    kec  <-  checkpoint  <-  listeners  <-  connector

Checked on the source (every import statement, module level or not), so a delayed import
cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("kec", "checkpoint", "listeners", "connector")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_packages_import_only_lower_layers(package: str) -> None:
    above = set(LAYERS[LAYERS.index(package) + 1 :])
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for module in sorted(_imports(path)):
            top = module.split(".")[0]
            if top in above:
                wrong.append(f"{rel} imports {module}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)
