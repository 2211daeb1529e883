"""The main job end to end through the facade, `agentbatch.run(job, target="spark", ...)`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.testing.agent_server import AgentServer, serve_agent

ROOT = Path(__file__).resolve().parents[2]
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"
TRIAGE = ROOT / "jobs" / "ticket_triage.yml"
OPEN_TICKETS = 237


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def test_main_job_on_spark_answers_every_open_ticket_once(
    agent: AgentServer, tmp_path: Path, make_engine: Any
) -> None:
    make_engine()  # the suite's session is the active one: the run uses it
    out = tmp_path / "triage.parquet"

    def run() -> Any:
        return agentbatch.run(
            TRIAGE,
            target="spark",
            tables={"main.support.tickets": TICKETS, "main.support.ticket_triage": out},
            endpoints={"apps/triage-agent": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            settings={"warehouse_dir": str(tmp_path / "warehouse")},
            progress=False,
        )

    result = run()
    assert result.summary["strategy"] == "rest-fallback"
    assert result.summary["table_rows"] == OPEN_TICKETS
    assert result.summary["errors"] == 0
    rows = pq.read_table(out).to_pylist()
    assert len({r["ticket_id"] for r in rows}) == len(rows) == OPEN_TICKETS
    right = sum(r["response"]["label"] == r["label"] for r in rows)
    assert right / len(rows) > 0.85
    assert agent.stats().requests_total == OPEN_TICKETS
    again = run()
    assert again.summary["table_rows"] == OPEN_TICKETS
    assert agent.stats().requests_total == OPEN_TICKETS  # nothing re-sent
