"""``connector/`` is split by subsystem, so a file's path says which subsystem it is part of.

Three checks on the source tree (docs/architecture.md, "Layout"):

* no module lies loose at ``connector/`` top level but the application shell and the
  public library modules named in :data:`TOP_LEVEL`; a new module goes into the package
  of its subsystem (or, shared by several and importing none of them, ``common/``);
* ``connector/common/`` holds leaves: none of its modules imports another module of
  ``connector``, so every subsystem may use them without importing another subsystem;
* the architecture document's layout names every package of ``connector/`` and every
  module of :data:`TOP_LEVEL`.

Each check is also run on a sample tree that breaks it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support import ROOT

# The modules that stay at connector/ top level, and why.
TOP_LEVEL = {
    "__init__": "the package: its docstring maps the public API",
    "__main__": "python -m connector",
    "cli": "the command line (the event-connector entry point); its commands are commands/",
    "assembly": "the one place the application is put together",
    "service": "the running connector: the pipeline, the dispatcher and their companions",
    "lifecycle": "services stopped in reverse order, each stop guarded",
    "control": "changing a running connector (config reload, pause and resume): what "
    "SIGHUP and the admin API act on, for a service or a supervisor",
    "supervisor": "pipeline.processes: N services in child processes, watched as one "
    "instance (the service's sibling one level up)",
    "topics": "the connector's topics (names, creation): used by run, the gateway, the "
    "notification client, the operator tools and the pipeline; it reads the config, so it "
    "is no leaf of common/",
    "queue_listener": "public: connector.queue_listener.QueueEventListener (README)",
    "workflow": "public: connector.workflow, the AIFlow-style rules API (README)",
}
COMMON = "common"


def loose_modules(package: Path) -> set[str]:
    """The modules directly in ``package`` (not in one of its subpackages)."""
    return {path.stem for path in package.glob("*.py")}


def subpackages(package: Path) -> set[str]:
    return {path.parent.name for path in package.glob("*/__init__.py")}


def connector_imports(path: Path) -> set[str]:
    """The ``connector`` modules ``path`` imports, at any level of the file (relative
    imports count as the package's own)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "connector")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add("." * node.level + (node.module or ""))
            elif node.module and node.module.split(".")[0] == "connector":
                found.add(node.module)
    return found


def leaves_that_are_not(package: Path) -> list[str]:
    """``module imports X`` for each import of ``connector`` in the modules of ``package``."""
    return [
        f"{path.name} imports {module}"
        for path in sorted(package.glob("*.py"))
        for module in sorted(connector_imports(path))
    ]


def layout_section(text: str) -> str:
    """The architecture document's "Layout" section."""
    found = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, "docs/architecture.md has no Layout section"
    return found.group(1)


def test_no_module_lies_loose_at_the_top_of_connector() -> None:
    loose = loose_modules(ROOT / "connector")
    assert "cli" in loose  # the check looks at the right folder
    extra = sorted(loose - TOP_LEVEL.keys())
    assert not extra, (
        "modules at connector/ top level: move each into the package of its subsystem "
        f"(docs/architecture.md, Layout), or add it to TOP_LEVEL with the reason: {extra}"
    )
    gone = sorted(TOP_LEVEL.keys() - loose)
    assert not gone, f"TOP_LEVEL names modules that are not there any more: {gone}"


def test_common_holds_leaves_only() -> None:
    common = ROOT / "connector" / COMMON
    assert loose_modules(common) >= {"__init__", "model_base", "retry"}
    wrong = leaves_that_are_not(common)
    assert not wrong, "connector/common/ must import no other connector module:\n" + "\n".join(
        wrong
    )


def test_the_architecture_document_names_every_part_of_connector() -> None:
    section = layout_section((ROOT / "docs" / "architecture.md").read_text())
    packages = subpackages(ROOT / "connector")
    assert {"pipeline", "dispatch", "rules", COMMON} <= packages
    unnamed = sorted(
        [f"{name}/" for name in packages if f"{name}/" not in section]
        + [name for name in TOP_LEVEL.keys() - {"__init__"} if name not in section]
    )
    assert not unnamed, f"docs/architecture.md, Layout, does not name: {unnamed}"


def test_the_checks_see_a_tree_that_breaks_them(tmp_path: Path) -> None:
    package = tmp_path / "connector"
    (package / "rules").mkdir(parents=True)
    (package / "common").mkdir()
    for name in ("__init__.py", "cli.py", "stray.py", "rules/__init__.py", "common/__init__.py"):
        (package / name).write_text("")
    (package / "common" / "base.py").write_text(
        "import json\n"
        "from connector.rules import Rule\n"
        "def later():\n"
        "    import connector.pipeline\n"
        "    from . import retry\n"
    )
    assert loose_modules(package) - TOP_LEVEL.keys() == {"stray"}
    assert subpackages(package) == {"rules", "common"}
    assert leaves_that_are_not(package / "common") == [
        "base.py imports .",
        "base.py imports connector.pipeline",
        "base.py imports connector.rules",
    ]
    doc = "# A\n## Layout\nconnector/ rules/ cli\n## After\ncommon/\n"
    assert layout_section(doc) == "connector/ rules/ cli\n"
