"""A loaded job remembers its file's project, so `plan`, `run`, ... of `load_job(path)` use the
same project as of `path` (the folder holding `jobs/`, whatever the current folder), and
`load_job(path, vars=...)` checks its variables as a run of the path does."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentbatch
from agentbatch.errors import UsageError

JOB = """\
name: t
source: {table: main.s.tickets, key: id, columns: [subject]}
request: "concat({{ var('team') }}, ': ', subject)"
agent: {endpoint: "builtin:instant"}
output: {table: main.s.out}
vars: {team: support}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    (root / "jobs").mkdir(parents=True)
    (root / "jobs" / "t.yml").write_text(JOB)
    (root / "tickets.csv").write_text("id,subject\n1,refund\n2,login\n")
    return root


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_a_loaded_job_plans_in_the_project_of_its_file(project: Path, elsewhere: Path) -> None:
    path = project / "jobs" / "t.yml"
    by_path = agentbatch.plan(path).options.project_dir
    assert by_path == project
    assert agentbatch.plan(agentbatch.load_job(path)).options.project_dir == by_path
    given = elsewhere / "given"
    loaded = agentbatch.load_job(path, project_dir=given)
    assert agentbatch.plan(loaded).options.project_dir == given


def test_a_run_of_a_loaded_job_reuses_what_a_run_of_its_path_wrote(
    project: Path, elsewhere: Path
) -> None:
    path = project / "jobs" / "t.yml"
    tables = {"main.s.tickets": project / "tickets.csv"}
    with agentbatch.run(path, tables=tables, progress=False) as first:
        assert first.summary["sent"] == 2
    with agentbatch.run(agentbatch.load_job(path), tables=tables, progress=False) as second:
        assert second.summary["sent"] == 0 and second.summary["skipped"] == 2
    assert not any(elsewhere.iterdir())  # no warehouse nor checkpoint under the current folder


def test_load_job_refuses_a_variable_the_job_neither_declares_nor_reads(project: Path) -> None:
    path = project / "jobs" / "t.yml"
    with pytest.raises(UsageError, match=r"'tema' is given.*did you mean 'team'"):
        agentbatch.load_job(path, vars={"tema": "billing"})
    assert "'billing'" in agentbatch.render(agentbatch.load_job(path, vars={"team": "billing"}))
