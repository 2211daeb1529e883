"""A misspelt `--project-dir` is refused: it would be a project of its own, with an empty local
warehouse and checkpoint, so the run paid again for every row the real project had answered
(and `show` found nothing). A `--state-dir` that is a file is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import agentbatch, reviews_project

JOB = """\
name: reviews
source:
  table: main.shop.reviews
  key: review_id
request: "concat('Summarise: ', review_text)"
agent:
  endpoint: "builtin:instant"
output:
  table: main.shop.review_summaries
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return reviews_project(tmp_path, JOB, "review_id,review_text\n1,fine\n2,broken\n")


RUN = ["run", "jobs/reviews.yml", "--table", "main.shop.reviews=reviews.csv", "--json"]


def test_a_misspelt_project_dir_is_refused_and_nothing_is_created(project: Path) -> None:
    done = agentbatch(project, *RUN, "--project-dir", "projcet")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(
        "argument --project-dir: no such folder: 'projcet'"
    )
    assert not (project / "projcet").exists()


@pytest.mark.parametrize("command", [["show", "main.shop.review_summaries"], ["bundle"]])
def test_every_command_refuses_it(project: Path, command: list[str]) -> None:
    (project / "a-file").write_text("")
    done = agentbatch(project, *command, "--project-dir", "a-file")
    assert done.returncode == 2
    assert "argument --project-dir: not a folder: 'a-file'" in done.stderr


def test_the_project_folder_runs(project: Path) -> None:
    assert agentbatch(project, *RUN, "--project-dir", ".").returncode == 0
    again = agentbatch(project, *RUN, "--project-dir", str(project))
    assert again.returncode == 0, again.stderr
    assert '"sent": 0' in again.stdout


def test_a_state_dir_that_is_a_file_is_refused_before_anything_runs(project: Path) -> None:
    (project / "state").write_text("")
    done = agentbatch(project, *RUN, "--state-dir", "state")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith("argument --state-dir: not a folder: 'state'")
    assert not (project / ".agentbatch").exists()


def test_a_missing_state_dir_is_made(project: Path) -> None:
    done = agentbatch(project, *RUN, "--state-dir", "state/here")
    assert done.returncode == 0, done.stderr
    assert (project / "state" / "here").is_dir()
