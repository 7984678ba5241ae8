"""The repository stands alone: its documents live in it, and references to them hold.

A user's clone has no ``../shared``; every pointer to the architecture goes to
``docs/architecture.md``, and a section named next to it is one of its headings.
"""

from __future__ import annotations

import re
import subprocess

from tests.support import ROOT

ARCHITECTURE = ROOT / "docs" / "architecture.md"
# `docs/architecture.md, "Section"` or `docs/architecture.md: "Section", "Other"`.
CITED = re.compile(r'docs/architecture\.md[,:]\s+((?:"[^"]+"(?:,\s*)?)+)')


def tracked_files() -> list[str]:
    """The repository's files (tracked or new), this test's own file left out."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        name
        for name in listed.splitlines()
        if name != "tests/unit/test_docs.py" and (ROOT / name).is_file()
    ]


def test_nothing_points_outside_the_repository() -> None:
    pattern = re.compile(r"shared/design|design §")
    offending = [
        f"{name}:{number}"
        for name in tracked_files()
        for number, line in enumerate(
            (ROOT / name).read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if pattern.search(line)
    ]
    assert offending == []


def test_cited_sections_are_headings_of_the_architecture_document() -> None:
    headings = {
        line.lstrip("#").strip()
        for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    cited: dict[str, str] = {}
    for name in tracked_files():
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        for match in CITED.finditer(text.replace("\n", " ")):
            for section in re.findall(r'"([^"]+)"', match.group(1)):
                cited.setdefault(section, name)
    assert cited, "no file names a section of docs/architecture.md"
    unknown = {section: name for section, name in cited.items() if section not in headings}
    assert unknown == {}
