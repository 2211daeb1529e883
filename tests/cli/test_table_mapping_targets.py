"""`--table` maps tables to local files, so a `databricks-sql` run refuses it; `plan` and
`validate`, which show and check that run, refuse it too rather than print the warehouse table's
SQL, or `ok`, as if the file had been read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import agentbatch, reviews_project

JOB = """\
name: reviews
source:
  table: main.shop.reviews
  key: review_id
  columns: [stars]
request: "concat('Summarise: ', review_text)"
agent:
  endpoint: apps/review-agent
output:
  table: main.shop.review_summaries
"""
REFUSED = "--table maps tables to local files; it applies to the local and spark targets"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return reviews_project(tmp_path, JOB, "review_id,review_text,stars\n1,fine,5\n")


@pytest.mark.parametrize(
    "command",
    [
        ["validate", "--target", "databricks-sql"],
        ["plan", "--target", "databricks-sql"],
        ["run", "--target", "databricks-sql"],
    ],
)
def test_a_table_mapping_on_the_sql_warehouse_is_refused(project: Path, command: list[str]) -> None:
    done = agentbatch(
        project, *command, "jobs/reviews.yml", "--table", "main.shop.reviews=reviews.csv"
    )
    assert done.returncode == 2, done.stdout
    assert done.stderr.splitlines()[0] == REFUSED


def test_without_a_mapping_plan_and_validate_still_work_offline(project: Path) -> None:
    for command in (["validate", "--target", "databricks-sql"], ["plan", "-t", "databricks-sql"]):
        done = agentbatch(project, *command, "jobs/reviews.yml")
        assert done.returncode == 0, done.stderr
