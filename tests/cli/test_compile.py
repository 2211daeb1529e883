"""`agentbatch compile` as a user meets it: the SQL of a SQL task, without `--target`, and over
several job files of which some cannot be compiled (they call Apps agents)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's jobs (and template overrides) to compile."""
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    shutil.copytree(ROOT / "sqltemplates", tmp_path / "sqltemplates")
    return tmp_path


def agentbatch(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.agentbatch(project, *args, COLUMNS="100")


def test_compile_without_target_writes_the_sql_task_file(project: Path) -> None:
    # A SQL task runs on a SQL warehouse: that is the target compile writes for, as the API's
    # compile_jobs does. The local engine has no ai_query, so it could never compile anything.
    done = agentbatch(project, "compile", "jobs/summarise_tickets.yml", "--out", "out")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(Path("out") / "summarise_tickets.sql")]
    assert "ai_query" in (project / "out" / "summarise_tickets.sql").read_text()


def test_a_job_that_cannot_compile_does_not_stop_the_others(project: Path) -> None:
    done = agentbatch(
        project,
        "compile",
        "jobs/ticket_triage.yml",  # an Apps agent: REST fallback, no SQL task
        "jobs/summarise_tickets.yml",
        "jobs/triage_foundation_model.yml",
        "--out",
        "out",
    )
    assert done.returncode == 4, done.stderr
    assert "jobs/ticket_triage.yml: cannot compile to SQL alone" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in (project / "out").iterdir()) == [
        "summarise_tickets.sql",
        "triage_foundation_model.sql",
    ]


def test_the_examples_of_compile_help_run_as_written(project: Path) -> None:
    shown = agentbatch(project, "compile", "--help").stdout
    examples = [
        line.strip()
        for line in shown.split("examples:", 1)[1].splitlines()
        if line.strip().startswith("agentbatch compile")
    ]
    assert examples
    for example in examples:
        # As a shell runs it: a glob names the files it matches.
        words = shlex.split(example.split("#", 1)[0])[1:]
        args = [str(m) for w in words for m in (sorted(project.glob(w)) if "*" in w else [w])]
        done = agentbatch(project, *(a.removeprefix(f"{project}/") for a in args))
        assert done.returncode == 0, f"{example}: {done.stderr}"
