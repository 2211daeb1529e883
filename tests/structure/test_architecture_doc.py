"""docs/architecture.md's package table and the tree agree, file for file."""

from __future__ import annotations

import re
from pathlib import Path

import agentbatch

PACKAGE = Path(agentbatch.__file__).parent
ROOT = PACKAGE.parent
ROW = re.compile(r"^\| `(agentbatch/[\w/]*)` \| (.*) \|$")


def documented() -> dict[str, set[str]]:
    """Package folder -> the module files its row names."""
    rows = {}
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1).rstrip("/")] = set(re.findall(r"`(\w+\.py)`", match.group(2)))
    return rows


def test_every_package_and_module_is_in_the_table_and_nothing_else() -> None:
    rows = documented()
    packages = {
        str(path.parent.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert set(rows) - {"agentbatch/templates"} == packages
    for package in packages:
        modules = {p.name for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"}
        assert rows[package] == modules, package
