"""The folder layout is the architecture: each package imports only the ones below it.

    kec  <-  checkpoint  <-  listeners  <-  connector  <-  devkit

devkit (the development tooling) may import the product; the product never imports devkit,
with no exception: the connector runs without it (its image does not carry it). Checked on
the source (every import statement, module level or not, and importlib calls naming a
module), so a delayed import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("kec", "checkpoint", "listeners", "connector")
TOOLING = "devkit"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Call) and _names_a_module(node):
            found.add(node.args[0].value)  # type: ignore[attr-defined]
    return found


def _names_a_module(call: ast.Call) -> bool:
    """``importlib.import_module("x")``, ``import_module("x")`` or ``__import__("x")``."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    first = call.args[0] if call.args else None
    return (
        name in ("import_module", "__import__")
        and isinstance(first, ast.Constant)
        and isinstance(first.value, str)
    )


def _sources(package: str) -> list[tuple[str, set[str]]]:
    return [
        (path.relative_to(ROOT).as_posix(), _imports(path))
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


@pytest.mark.parametrize("package", LAYERS)
def test_packages_import_only_lower_layers(package: str) -> None:
    above = set(LAYERS[LAYERS.index(package) + 1 :])
    wrong = []
    for rel, modules in _sources(package):
        for module in sorted(modules):
            top = module.split(".")[0]
            if top in above:
                wrong.append(f"{rel} imports {module}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", LAYERS)
def test_the_product_never_imports_the_development_tooling(package: str) -> None:
    wrong = [
        f"{rel} imports {module}"
        for rel, modules in _sources(package)
        for module in sorted(modules)
        if module.split(".")[0] == TOOLING
    ]
    assert not wrong, f"the product imports {TOOLING}:\n" + "\n".join(wrong)


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import devkit.broker\n"
        "def later():\n"
        "    from devkit import demo\n"
        "    import importlib\n"
        "    importlib.import_module('devkit.images')\n"
        "    __import__('devkit.postgres')\n"
    )
    assert _imports(source) == {
        "devkit.broker",
        "devkit",
        "importlib",
        "devkit.images",
        "devkit.postgres",
    }


# -- the Kafka seam ----------------------------------------------------------------------

KAFKA_CLIENT = "confluent_kafka"
KAFKA_SEAM = "kec/kafka/"


def _outside_the_seam(sources: list[tuple[str, set[str]]]) -> list[str]:
    return [
        f"{rel} imports {module}"
        for rel, modules in sources
        for module in sorted(modules)
        if module.split(".")[0] == KAFKA_CLIENT and not rel.startswith(KAFKA_SEAM)
    ]


@pytest.mark.parametrize("package", [*LAYERS, TOOLING])
def test_only_kec_kafka_imports_the_kafka_client(package: str) -> None:
    """Every Kafka client, error and partition object of the product comes through
    ``kec.kafka``; tests may use plain clients of their own."""
    wrong = _outside_the_seam(_sources(package))
    assert not wrong, f"{KAFKA_CLIENT} imported outside {KAFKA_SEAM}:\n" + "\n".join(wrong)


def test_the_kafka_check_sees_the_client_outside_the_seam_and_allows_it_inside(
    tmp_path: Path,
) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from confluent_kafka import Consumer\n"
        "def later():\n"
        "    import confluent_kafka.admin\n"
        "    importlib.import_module('confluent_kafka.cimpl')\n"
    )
    modules = _imports(source)
    assert _outside_the_seam([("connector/sample.py", modules)]) == [
        "connector/sample.py imports confluent_kafka",
        "connector/sample.py imports confluent_kafka.admin",
        "connector/sample.py imports confluent_kafka.cimpl",
    ]
    assert _outside_the_seam([("kec/kafka/sample.py", modules)]) == []
    # The seam itself does import it: the check is looking at the right files.
    seam = [m for rel, ms in _sources("kec") if rel.startswith(KAFKA_SEAM) for m in ms]
    assert KAFKA_CLIENT in {m.split(".")[0] for m in seam}
