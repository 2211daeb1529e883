"""A misspelt keyword of the Python API (`run(job, table={...})`) names itself, the option it
was likely meant to be and the options there are, instead of Python's TypeError about
RunOptions.__init__, which the caller never called."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentbatch
from agentbatch.errors import UsageError
from tests.support.cli import reviews_project

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
def job(tmp_path: Path) -> Path:
    return (
        reviews_project(tmp_path, JOB, "review_id,review_text\n1,fine\n") / "jobs" / "reviews.yml"
    )


def test_a_misspelt_keyword_is_named_with_the_near_one(job: Path) -> None:
    # Still the TypeError of an unexpected keyword argument, for code that catches that.
    csv = str(job.parents[1] / "reviews.csv")
    with pytest.raises(UsageError) as caught:
        agentbatch.run(job, table={"main.shop.reviews": csv}, dry_run=True)
    assert isinstance(caught.value, TypeError)
    message = str(caught.value)
    assert message.startswith("unknown option 'table' (did you mean 'tables'?); the options are:")
    assert "vars, tables, endpoints" in message and "run_id" not in message


@pytest.mark.parametrize("call", [agentbatch.plan, agentbatch.render, agentbatch.estimate])
def test_every_api_function_names_it(job: Path, call: object) -> None:
    with pytest.raises(UsageError, match="unknown option 'dryrun' \\(did you mean 'dry_run'"):
        call(job, dryrun=True)  # type: ignore[operator]


def test_the_right_keyword_runs(job: Path) -> None:
    csv = str(job.parents[1] / "reviews.csv")
    with agentbatch.run(job, tables={"main.shop.reviews": csv}, dry_run=True) as result:
        assert result.summary["rows"] == 1
