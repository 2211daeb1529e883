"""A VARIANT passthrough column on the local target: DuckDB reads a Parquet VARIANT as its own
VARIANT and writes it back as one, so the output holds each value as the source does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import agentbatch
from agentbatch.testing.agent_server import AgentServer, serve_agent

JOB = """\
name: variant_triage
source: {table: main.shop.tickets, key: id, columns: [subject, details]}
request: "concat('Classify this support ticket: ', subject)"
agent: {endpoint: apps/triage-agent}
output: {table: main.shop.triaged, mode: merge}
"""


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def variant_values(path: Path) -> list[tuple[Any, ...]]:
    rows = duckdb.sql(
        "SELECT id, typeof(details), variant_typeof(details), CAST(details AS VARCHAR), "
        f"details IS NULL FROM '{path.as_posix()}' ORDER BY id"
    )
    assert rows is not None
    return rows.fetchall()


def test_a_variant_passthrough_column_keeps_its_values(agent: AgentServer, tmp_path: Path) -> None:
    source, out = tmp_path / "tickets.parquet", tmp_path / "triaged.parquet"
    duckdb.sql(
        "COPY (SELECT * FROM (VALUES "
        """(1, 'parcel late', '{"a": 1, "b": [1,2]}'::JSON::VARIANT), """
        """(2, 'refund', '"just text"'::JSON::VARIANT), """
        "(3, 'no details', NULL::VARIANT)) AS t(id, subject, details)) "
        f"TO '{source.as_posix()}'"
    )
    job = tmp_path / "job.yml"
    job.write_text(JOB)
    for sent in (3, 0):
        with agentbatch.run(
            job,
            target="local",
            tables={"main.shop.tickets": source, "main.shop.triaged": out},
            endpoints={"apps/triage-agent": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            progress=False,
        ) as result:
            assert (result.summary["sent"], result.summary["errors"]) == (sent, 0)
        assert variant_values(out) == variant_values(source)
    assert variant_values(out)[0][1:3] == ("VARIANT", "OBJECT(a, b)")
    assert agent.stats().requests_total == 3
