"""`validate` lists every problem of a job file in the file's order, as a reader goes through
it, not in the order the models declare their fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job

JOB = """\
name: reviews
source:
  table: main.shop.reviews
  key: review_id
  limit: "ten"
request: "concat('Summarise: ', review_text)"
agent:
  endpoint: apps/review-agent
  max_retries: -1
  timeout_seconds: soon
  api: completions
output:
  table: main.shop.review_summaries
  mode: upsert
"""


def test_every_problem_is_listed_in_the_files_order(tmp_path: Path) -> None:
    path = tmp_path / "reviews.yml"
    path.write_text(JOB)
    with pytest.raises(SpecError) as caught:
        load_job(path)
    lines = str(caught.value).splitlines()
    assert [line.split(": ")[0].rsplit(":", 1)[1] for line in lines] == [
        "5",
        "9",
        "10",
        "11",
        "14",
    ], lines
    assert lines[1].endswith("agent.max_retries: Input should be greater than or equal to 0")
