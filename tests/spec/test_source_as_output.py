"""`output.table` copied from `source.table` (a slip when writing a first job) is refused when the
job is loaded, naming both lines: a run would write its answers into the table it reads, and a
mode `overwrite` run would replace the source rows with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job
from tests.support.cli import agentbatch

JOB = """\
name: reviews
source:
  table: "{{ var('catalog') }}.shop.reviews"
  key: review_id
  columns: [review_text]
request: "concat('Summarise: ', review_text)"
agent:
  endpoint: databricks-meta-llama-3-3-70b-instruct
output:
  table: main.shop.reviews
  mode: overwrite
vars: {catalog: main}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs" / "reviews.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_validate_refuses_the_source_as_output_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, JOB)
    done = agentbatch(tmp_path, "validate", "jobs/reviews.yml")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "jobs/reviews.yml:10: output.table: main.shop.reviews is the job's source table "
        "(source.table, jobs/reviews.yml:3): a run would write its answers into the rows it "
        "reads (mode overwrite would replace them); name another table for the answers"
    )
    assert path.exists()


@pytest.mark.parametrize("output", ["MAIN.Shop.reviews", "`main`.`shop`.`reviews`"])
def test_names_are_compared_as_unity_catalog_compares_them(tmp_path: Path, output: str) -> None:
    path = write(tmp_path, JOB.replace("table: main.shop.reviews", f'table: "{output}"'))
    with pytest.raises(SpecError, match=r"reviews.yml:10: output.table: .* is the job's source"):
        load_job(path)


def test_another_table_or_catalog_loads(tmp_path: Path) -> None:
    load_job(write(tmp_path, JOB.replace("main.shop.reviews", "main.shop.summaries")))
    load_job(write(tmp_path, JOB), vars={"catalog": "dev"})
    # Two parts against three: the target's default catalog decides, which a job does not know.
    load_job(write(tmp_path, JOB.replace("table: main.shop.reviews", "table: shop.reviews")))
