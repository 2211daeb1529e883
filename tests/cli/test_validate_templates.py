"""`validate` (local by default, as CI runs it) renders a job's push-down statements for the SQL
warehouse too: a project's broken override in sqltemplates/ (merge.sql, ...) is only rendered
there, where the bundle schedules push-down jobs, so it failed the deployed task after `validate`
said ok."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.cli import agentbatch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    (tmp_path / "sqltemplates").mkdir()
    (tmp_path / "sqltemplates" / "merge.sql").write_text("MERGE INTO {{ target }} {% if %}\n")
    return tmp_path


def test_a_broken_override_of_a_push_down_template_fails_validate(project: Path) -> None:
    done = agentbatch(project, "validate", "jobs/summarise_tickets.yml", "jobs/ticket_triage.yml")
    assert done.returncode == 2
    merge = project / "sqltemplates" / "merge.sql"
    assert done.stderr.splitlines()[0] == (
        f"jobs/summarise_tickets.yml: {merge}:1: template syntax error: "
        "Expected an expression, got 'end of statement block'"
    )
    # The Apps agent's job is answered over REST on every target: merge.sql is not its.
    assert done.stdout == "ok  jobs/ticket_triage.yml\n"


def test_the_project_as_shipped_validates(project: Path) -> None:
    (project / "sqltemplates" / "merge.sql").unlink()
    done = agentbatch(
        project, "validate", *sorted(str(p.relative_to(project)) for p in project.glob("jobs/*"))
    )
    assert done.returncode == 0, done.stderr
