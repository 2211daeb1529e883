"""A source value the job's SQL does not convert (`CAST('x' AS INT)`) fails the run, as Databricks'
ANSI CAST fails the statement: the error names the job file's key whose SQL fails and says
`try_cast`, on the local engine, in a run and in a dry run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.errors import EngineError
from agentbatch.testing.agent_server import AgentServer, serve_agent

SOURCE = "main.shop.reviews"
OUTPUT = "main.shop.review_answers"
ENDPOINT = "apps/review-agent"


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def write_job(tmp_path: Path, request: str, where: str = "") -> Path:
    job = tmp_path / "jobs" / "reviews.yml"
    job.parent.mkdir(exist_ok=True)
    where_line = f'  where: "{where}"\n' if where else ""
    job.write_text(
        f"""name: reviews
source:
  table: {SOURCE}
  key: review_id
  columns: [stars]
{where_line}request: "{request}"
agent:
  endpoint: {ENDPOINT}
output:
  table: {OUTPUT}
"""
    )
    return job


def write_source(tmp_path: Path, stars: list[str]) -> Path:
    source = tmp_path / "reviews.csv"
    lines = ["review_id,stars", *(f"{i},{value}" for i, value in enumerate(stars))]
    source.write_text("\n".join(lines) + "\n")
    return source


def run(tmp_path: Path, job: Path, source: Path, url: str, **options: Any) -> dict[str, object]:
    with agentbatch.run(
        job,
        tables={SOURCE: source, OUTPUT: tmp_path / "out.parquet"},
        endpoints={ENDPOINT: url},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        progress=False,
        **options,
    ) as result:
        return dict(result.summary)


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_value_the_request_does_not_convert_names_request_and_try_cast(
    tmp_path: Path, agent: AgentServer, dry_run: bool
) -> None:
    job = write_job(tmp_path, "concat('n=', CAST(stars AS INT) + 1)")
    source = write_source(tmp_path, ["2", "x", "4"])
    with pytest.raises(EngineError) as raised:
        run(tmp_path, job, source, agent.url, dry_run=dry_run)
    message = str(raised.value)
    assert message.startswith(f"{job}:6: request: a source value does not convert: ")
    assert "Could not convert string 'x' to INT32" in message
    assert "try_cast(value AS type) gives NULL instead" in message
    assert agent.stats().requests_total == 0


def test_a_where_clause_that_does_not_convert_is_named(tmp_path: Path, agent: AgentServer) -> None:
    """The request converts every row the where clause keeps: the where clause is the one."""
    job = write_job(
        tmp_path, "concat('n=', CAST(stars AS INT) + 1)", where="CAST(stars AS INT) > 0"
    )
    source = write_source(tmp_path, ["2", "x", "4"])
    with pytest.raises(EngineError, match=r"reviews\.yml:6: source\.where: a source value does"):
        run(tmp_path, job, source, agent.url)
    assert agent.stats().requests_total == 0


def test_a_late_value_that_does_not_convert_is_the_same_error(tmp_path: Path) -> None:
    """Found past the first batches read (a large source), the error is the same, not duckdb's
    as pyarrow passes it on (an OSError with the engine's SQL); with try_cast every row is
    written, the row of `x` an error value in its row (a NULL request)."""
    rows = 30_000
    job = write_job(tmp_path, "concat('n=', CAST(stars AS INT) + 1)")
    source = tmp_path / "reviews.parquet"  # a text column: CSV would type it from its first rows
    stars = [*(str(i % 5) for i in range(rows)), "x"]
    pq.write_table(pa.table({"review_id": range(rows + 1), "stars": stars}), source)
    with pytest.raises(EngineError) as raised:
        run(tmp_path, job, source, "builtin:instant")
    assert str(raised.value).startswith(f"{job}:6: request: a source value does not convert: ")
    fixed = write_job(tmp_path, "concat('n=', try_cast(stars AS INT) + 1)")
    summary = run(tmp_path, fixed, source, "builtin:instant")
    assert (summary["table_rows"], summary["table_errors"]) == (rows + 1, 1)


def test_a_late_value_that_does_not_convert_fails_before_any_call(
    tmp_path: Path, agent: AgentServer
) -> None:
    """Every selected row's request is computed before the first call: a value that does not
    convert in the last row of a large source used to fail the run once the rows before it were
    sent (each paid for again once the user's fixed request changes their fingerprint)."""
    rows = 30_000
    job = write_job(tmp_path, "concat('n=', CAST(stars AS INT) + 1)")
    source = tmp_path / "reviews.parquet"
    stars = [*(str(i % 5) for i in range(rows)), "x"]
    pq.write_table(pa.table({"review_id": range(rows + 1), "stars": stars}), source)
    with pytest.raises(EngineError, match=r"reviews\.yml:6: request: a source value does"):
        run(tmp_path, job, source, agent.url)
    assert agent.stats().requests_total == 0
    assert not (tmp_path / "out.parquet").exists()


def test_an_estimate_names_the_request_too(tmp_path: Path, agent: AgentServer) -> None:
    job = write_job(tmp_path, "concat('n=', CAST(stars AS INT) + 1)")
    source = write_source(tmp_path, ["2", "x", "4"])
    with pytest.raises(EngineError, match=r"reviews\.yml:6: request: a source value does"):
        agentbatch.estimate(
            job,
            tables={SOURCE: source, OUTPUT: tmp_path / "out.parquet"},
            endpoints={ENDPOINT: agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            sample=2,
        )
    assert agent.stats().requests_total == 0
