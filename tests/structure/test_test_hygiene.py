"""Rules for the tests themselves, so a gap cannot hide behind a skip or a self-written expectation.

- The project's own modules, and libraries the `[dev]` extra installs, are imported plainly:
  `importorskip` (or `except ImportError: skip`) would turn a broken fake or install into a skip.
- Saved expectations (golden SQL, conformance captures) go through `tests/support/snapshots.py`:
  a missing file fails, and the switches that rewrite them are refused under CI.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import snapshots
from tests.support.python_source import parse_file

ROOT = Path(__file__).resolve().parents[2]
OWN = ("tests", "agentbatch", "bench")
# Environment switches that rewrite saved files look like these.
SWITCH_NAME = re.compile(r"UPDATE|RECORD|REGEN|SNAPSHOT|GOLDEN|CAPTURE")


def sources(root: Path = ROOT) -> Iterator[tuple[Path, ast.Module]]:
    for folder in ("tests", "bench"):
        for path in sorted((root / folder).rglob("*.py")):
            yield path, parse_file(path)


def _name(node: ast.expr) -> str:
    """`a.b.c` for an attribute chain or a name, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def dev_distributions() -> set[str]:
    """What `pip install -e '.[dev]'` asks for by name: the base dependencies, the dev extra and
    the extras the dev extra names (`agentbatch[local,sql,...]`)."""
    requirements = importlib.metadata.requires("agentbatch") or []
    extras = {"dev"}
    for requirement in requirements:
        own = re.match(r"agentbatch\[([^\]]+)\]\s*;\s*extra\s*==\s*\"dev\"", requirement)
        if own:
            extras |= {e.strip() for e in own.group(1).split(",")}
    found = set()
    for requirement in requirements:
        name, _, marker = requirement.partition(";")
        extra = re.search(r"extra\s*==\s*\"([^\"]+)\"", marker)
        if extra is None or extra.group(1) in extras:
            found.add(_normal(re.split(r"[\s\[<>=!~;]", name.strip(), maxsplit=1)[0]))
    return found - {"agentbatch"}


@functools.cache
def _distributions_of_modules() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def installed_by_dev(module: str, dev: set[str]) -> bool:
    top = module.split(".")[0]
    return any(_normal(d) in dev for d in _distributions_of_modules().get(top, []))


def skipped_imports(root: Path = ROOT) -> Iterator[tuple[str, str]]:
    """(where, module) for every import that turns into a skip when it fails; module is '' when
    it cannot be read statically."""
    for path, tree in sources(root):
        where = str(path.relative_to(root))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func).endswith("importorskip"):
                first = node.args[0] if node.args else None
                module = first.value if isinstance(first, ast.Constant) else ""
                yield f"{where}:{node.lineno}", str(module)
            if isinstance(node, ast.Try):
                for handler in node.handlers:
                    caught = {_name(t) for t in ast.walk(handler.type)} if handler.type else set()
                    skips = any(
                        isinstance(n, ast.Call) and _name(n.func).endswith("skip")
                        for n in ast.walk(handler)
                    )
                    if skips and caught & {"ImportError", "ModuleNotFoundError"}:
                        imported = [
                            alias.name if isinstance(n, ast.Import) else n.module or ""
                            for n in ast.walk(ast.Module(body=node.body, type_ignores=[]))
                            if isinstance(n, ast.Import | ast.ImportFrom)
                            for alias in n.names
                        ]
                        yield f"{where}:{node.lineno}", imported[0] if imported else ""


def test_own_modules_and_dev_libraries_are_never_import_skipped() -> None:
    dev = dev_distributions()
    # The check has teeth: the libraries the suite leans on are seen as installed by `[dev]`.
    assert all(installed_by_dev(m, dev) for m in ("pyspark", "mlflow", "databricks.sql"))
    bad = [
        f"{where}: {module or '(a module not named by a constant)'}"
        for where, module in skipped_imports()
        if not module or module.split(".")[0] in OWN or installed_by_dev(module, dev)
    ]
    assert bad == [], "import these plainly (a failed import must fail, not skip):\n" + "\n".join(
        bad
    )


def test_the_scan_finds_skipped_imports(tmp_path: Path) -> None:
    """The scan above sees both spellings of a skipped import."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "bench").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "import pytest\n"
        "fake = pytest.importorskip('tests.support.fake')\n"
        "try:\n"
        "    import agentbatch.engines\n"
        "except ImportError:\n"
        "    pytest.skip('no engine', allow_module_level=True)\n"
    )
    found = sorted(m for _, m in skipped_imports(tmp_path))
    assert found == ["agentbatch.engines", "tests.support.fake"]


def test_update_switches_are_read_only_through_the_snapshot_helper() -> None:
    """An environment switch that rewrites saved files is read in tests/support/snapshots.py
    only, so every one of them obeys the rules tested below."""
    helper = ROOT / "tests" / "support" / "snapshots.py"
    found = []
    for path, tree in sources():
        if path == helper:
            continue
        for node in ast.walk(tree):
            name: object = None
            if isinstance(node, ast.Call) and _name(node.func) in (
                "os.environ.get",
                "os.getenv",
                "environ.get",
                "getenv",
            ):
                name = (
                    node.args[0].value
                    if node.args and isinstance(node.args[0], ast.Constant)
                    else None
                )
            elif isinstance(node, ast.Subscript) and _name(node.value) in ("os.environ", "environ"):
                name = node.slice.value if isinstance(node.slice, ast.Constant) else None
            if isinstance(name, str) and SWITCH_NAME.search(name):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert found == [], "read update switches with tests.support.snapshots:\n" + "\n".join(found)


def test_the_golden_and_capture_checks_use_the_helper() -> None:
    for path in (
        ROOT / "tests" / "planning" / "test_golden_sql.py",
        ROOT / "tests" / "conformance" / "conftest.py",
    ):
        text = path.read_text(encoding="utf-8")
        assert "expect_saved(" in text, f"{path.name} compares saved files by itself"
        # Writing files is the helper's job (only under its switch).
        assert ".write_text(" not in text and ".write_bytes(" not in text, path.name


# -- the helper's rules -------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SWITCH_UNDER_TEST", raising=False)
    return monkeypatch


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_an_update_switch_is_refused_under_ci(clean_env: pytest.MonkeyPatch, ci: str) -> None:
    clean_env.setenv("CI", ci)
    clean_env.setenv("SWITCH_UNDER_TEST", "1")
    with pytest.raises(pytest.fail.Exception, match="SWITCH_UNDER_TEST is refused under CI"):
        snapshots.update_requested("SWITCH_UNDER_TEST")


def test_an_update_switch_works_off_ci(clean_env: pytest.MonkeyPatch) -> None:
    assert snapshots.update_requested("SWITCH_UNDER_TEST") is False
    clean_env.setenv("SWITCH_UNDER_TEST", "0")
    assert snapshots.update_requested("SWITCH_UNDER_TEST") is False
    clean_env.setenv("SWITCH_UNDER_TEST", "1")
    assert snapshots.update_requested("SWITCH_UNDER_TEST") is True
    clean_env.setenv("CI", "false")  # some runners export CI=false off CI
    assert snapshots.update_requested("SWITCH_UNDER_TEST") is True


def test_a_missing_saved_file_fails_and_is_not_written(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved = tmp_path / "golden.sql"
    with pytest.raises(pytest.fail.Exception, match=re.escape("no saved file golden.sql")):
        snapshots.expect_saved(saved, "SELECT 1", switch="SWITCH_UNDER_TEST")
    assert not saved.exists()
    # Nor under CI with the switch on: refused before anything is written.
    clean_env.setenv("CI", "true")
    clean_env.setenv("SWITCH_UNDER_TEST", "1")
    with pytest.raises(pytest.fail.Exception, match="refused under CI"):
        snapshots.expect_saved(saved, "SELECT 1", switch="SWITCH_UNDER_TEST")
    assert not saved.exists()


def test_a_saved_file_is_compared_and_rewritten_only_on_request(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved = tmp_path / "golden.sql"
    saved.write_text("SELECT 1")
    snapshots.expect_saved(saved, "SELECT 1", switch="SWITCH_UNDER_TEST")
    with pytest.raises(AssertionError, match=re.escape("golden.sql: differs from the saved file")):
        snapshots.expect_saved(saved, "SELECT 2", switch="SWITCH_UNDER_TEST")
    assert saved.read_text() == "SELECT 1"
    # `comparable` decides what must be equal.
    snapshots.expect_saved(saved, "select 1", switch="SWITCH_UNDER_TEST", comparable=str.upper)
    clean_env.setenv("SWITCH_UNDER_TEST", "1")
    snapshots.expect_saved(saved, "SELECT 2", switch="SWITCH_UNDER_TEST")
    assert saved.read_text() == "SELECT 2"
