"""The wheel the bundle deploys works on its own: built from the project, installed into a clean
virtualenv with only the base dependencies (no Spark: Databricks runtimes bring their own), it
carries its templates and validates the example jobs, and its job entry point behaves the way a
Databricks python_wheel_task calls it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbatch.bundle.resources import ENTRY_POINT, PACKAGE_NAME
from tests.bundle.dab_refs import ROOT

pytestmark = pytest.mark.slow


@dataclass
class Installed:
    wheel: Path
    python: Path
    bin: Path
    project: Path  # a folder with a copy of jobs/, as the bundle syncs it


def _run(
    *argv: str | Path, cwd: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _package_copy(folder: Path) -> Path:
    """What the wheel is built from, copied to `folder`: the package and its metadata files."""
    folder.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, folder)
    shutil.copytree(
        ROOT / "agentbatch", folder / "agentbatch", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy: the checkout may hold files the project does not ship (caches, outputs).
    source = _package_copy(work / "src")
    built = _run(sys.executable, "-m", "build", "--wheel", "--outdir", work / "dist", source)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = sorted((work / "dist").glob("agentbatch-*.whl"))

    venv = work / "venv"
    created = _run(sys.executable, "-m", "venv", venv)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    pip = _run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-c", ROOT / "constraints.txt", wheel,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]

    project = work / "files"
    shutil.copytree(ROOT / "jobs", project / "jobs")
    shutil.copytree(ROOT / "resources", project / "resources")
    shutil.copy(ROOT / "databricks.yml", project)
    yield Installed(wheel=wheel, python=python, bin=venv / "bin", project=project)


def test_wheel_carries_templates_schema_and_sample_data(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    builtin = {p.name for p in (ROOT / "agentbatch" / "templates").glob("*.sql")}
    assert builtin and {f"agentbatch/templates/{n}" for n in builtin} <= names
    assert "agentbatch/schema/job.schema.json" in names
    assert "agentbatch/data/support_tickets.csv" in names


def test_base_install_has_no_spark(installed: Installed) -> None:
    metadata = (
        zipfile.ZipFile(installed.wheel)
        .read(f"agentbatch-{installed.wheel.name.split('-')[1]}.dist-info/METADATA")
        .decode()
    )
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist: pyspark"):
            assert "extra ==" in line, line
    probe = _run(
        installed.python, "-c", "import importlib.util as u; print(u.find_spec('pyspark'))"
    )
    assert probe.stdout.strip() == "None"


def test_installed_cli_validates_the_example_jobs(installed: Installed) -> None:
    jobs = sorted(
        str(p.relative_to(installed.project)) for p in (installed.project / "jobs").glob("*.yml")
    )
    done = _run(installed.bin / "agentbatch", "validate", *jobs, cwd=installed.project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok  ") == len(jobs) >= 4


def test_installed_cli_compiles_the_bundle_without_the_sql_extra(installed: Installed) -> None:
    """`agentbatch bundle` needs no warehouse connector: planning and compiling are pure."""
    done = _run(installed.bin / "agentbatch", "bundle", "--check", cwd=installed.project)
    assert done.returncode == 0, done.stderr
    probe = _run(
        installed.python, "-c", "import importlib.util as u; print(u.find_spec('databricks.sql'))"
    )
    assert probe.stdout.strip() == "None"


def test_installed_cli_reports_a_bad_job_with_its_exit_code(installed: Installed) -> None:
    done = _run(installed.bin / "agentbatch", "validate", "jobs/missing.yml", cwd=installed.project)
    assert done.returncode == 2
    assert "missing.yml" in done.stderr


# How a Databricks python_wheel_task starts: find the entry point by name in the distribution's
# metadata, set sys.argv to [package name, *parameters], call it; its return value is ignored.
_DATABRICKS_LAUNCH = f"""
import sys
from importlib import metadata
entry = [ep for ep in metadata.distribution({PACKAGE_NAME!r}).entry_points if ep.name == {ENTRY_POINT!r}]
if not entry:
    raise SystemExit("entry point {ENTRY_POINT} not found")
sys.argv = [{PACKAGE_NAME!r}, *sys.argv[1:]]
entry[0].load()()
"""


def test_job_entry_point_runs_like_a_wheel_task(installed: Installed) -> None:
    ok = _run(
        installed.python,
        "-c",
        _DATABRICKS_LAUNCH,
        "validate",
        "jobs/ticket_triage.yml",
        cwd=installed.project,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok  jobs/ticket_triage.yml" in ok.stdout


def test_job_entry_point_fails_the_task_when_the_command_fails(installed: Installed) -> None:
    failed = _run(
        installed.python,
        "-c",
        _DATABRICKS_LAUNCH,
        "validate",
        "jobs/missing.yml",
        cwd=installed.project,
    )
    assert failed.returncode == 2, failed.stderr


def test_the_console_script_alone_would_hide_a_failure(installed: Installed) -> None:
    """Why the job entry point exists: launched the same way, `agentbatch` returns its exit code
    instead of raising, and the task would look successful."""
    launch = _DATABRICKS_LAUNCH.replace(repr(ENTRY_POINT), repr("agentbatch"))
    hidden = _run(
        installed.python, "-c", launch, "validate", "jobs/missing.yml", cwd=installed.project
    )
    assert hidden.returncode == 0
    assert "missing.yml" in hidden.stderr


def test_the_deploy_build_ships_only_the_modules_the_project_has(tmp_path: Path) -> None:
    """The bundle builds its wheel in the project folder (`python -m build --wheel`, run by the
    CLI at every deploy). A build that leaves a copy of the package behind (setuptools' `build/lib`)
    ships a module deleted since into the next wheel, and its egg-info makes pip take the folder
    for an installed agentbatch."""
    project = _package_copy(tmp_path / "project")

    def wheel_names() -> set[str]:
        shutil.rmtree(project / "dist", ignore_errors=True)
        built = _run(sys.executable, "-m", "build", "--wheel", cwd=project)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        [wheel] = (project / "dist").glob("agentbatch-*.whl")
        return set(zipfile.ZipFile(wheel).namelist())

    (project / "agentbatch" / "retired.py").write_text("GONE = True\n", encoding="utf-8")
    assert "agentbatch/retired.py" in wheel_names()
    (project / "agentbatch" / "retired.py").unlink()
    assert "agentbatch/retired.py" not in wheel_names()
    assert sorted(p.name for p in project.iterdir()) == [
        "README.md", "agentbatch", "dist", "pyproject.toml",
    ]  # fmt: skip
