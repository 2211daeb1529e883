"""Every example job renders to SQL that parses as Databricks SQL and matches its golden file.

Regenerate after an intended change: UPDATE_GOLDEN=1 pytest tests/planning/test_golden_sql.py
(refused under CI). A job without its golden files fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot

import agentbatch
from agentbatch.errors import NotSupportedError
from tests.support.snapshots import expect_saved

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
JOBS = sorted((ROOT / "jobs").glob("*.yml"))
TARGETS = ["local", "databricks-sql"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_example_renders_to_golden_sql(job: Path, target: str) -> None:
    try:
        sql = agentbatch.render(job, target=target)
    except NotSupportedError:
        pytest.fail(f"the {target} engine is missing")
    statements = [s for s in sqlglot.parse(sql, read="databricks") if s is not None]
    assert statements, "renders no statement"
    expect_saved(GOLDEN / f"{job.stem}.{target}.sql", sql, switch="UPDATE_GOLDEN")


def test_every_golden_file_belongs_to_an_example_job() -> None:
    """A golden file left behind by a renamed or removed job checks nothing."""
    expected = {f"{j.stem}.{t}.sql" for j in JOBS for t in TARGETS}
    assert {p.name for p in GOLDEN.glob("*.sql")} == expected


def test_every_example_job_has_a_test() -> None:
    assert {j.stem for j in JOBS} >= {
        "ticket_triage",
        "summarise_tickets",
        "extract_order_details",
        "eval_triage",
    }
