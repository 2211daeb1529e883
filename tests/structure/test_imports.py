"""The package's shape: no import cycles, and the pipeline's layers contract (import-linter)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import agentbatch
from tests.support.python_source import parse_file

PACKAGE = Path(agentbatch.__file__).parent
ROOT = PACKAGE.parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every agentbatch module `name` imports anywhere: top level, in functions, for types.

    `from package import module` counts as importing that module; a package's own lazy names
    (module strings in `__getattr__` tables) are not imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(parse_file(path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if not module.startswith("agentbatch"):
                continue
            for alias in node.names:
                child = f"{module}.{alias.name}"
                yield child if child in known else module


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {
        name: {other for other in _imports(name, path, known) if other != name}
        for name, path in known.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 100, "the scan found the package's modules"
    assert "agentbatch.execution.result" in graph["agentbatch.execution.dryrun"]
    assert cycles(graph) == []


def _lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    script = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert script is not None, "import-linter is part of the dev install"
    return subprocess.run(
        [script, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_parent,
        env={"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_layers_contract_holds() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_the_layers_contract_catches_an_import_that_points_up(tmp_path: Path) -> None:
    # The contract is live: the same package with one upward import breaks it.
    shutil.copytree(PACKAGE, tmp_path / "agentbatch", ignore=shutil.ignore_patterns("__pycache__"))
    quoting = tmp_path / "agentbatch" / "sql" / "quoting.py"
    quoting.write_text(
        quoting.read_text() + "\n\ndef _up() -> None:\n    import agentbatch.execution.runner\n"
    )
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "agentbatch.sql.quoting -> agentbatch.execution.runner" in done.stdout
