"""An evaluation with an LLM judge of a job whose `source.query` has its own WITH, named like
agentbatch's own CTEs (`src`, `todo`). The judge job's source holds that query and the evaluated
rows' query (`evaluated_rows.sql`, a WITH of its own), each in a subquery, and every statement of
the judge embeds them again: on Spark they were printed with every WITH moved to the top
(DUPLICATED_CTE_NAMES), on every target with the job's `todo` beside the judge's."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from agentbatch.evaluation.run import evaluate
from tests.evaluation.test_eval_current_rows import TICKETS, agent, write_source
from tests.support.eval_servers import ID_REQUEST, ScriptedAgent

QUERY = (
    "WITH src AS (SELECT * FROM {{ table('main.s.tickets') }}), "
    "todo AS (SELECT * FROM src WHERE ticket_id % 2 = 0) SELECT * FROM todo"
)
EVEN = sum(int(t["ticket_id"]) % 2 == 0 for t in TICKETS)


def with_source_job(project: Path, judge_url: str) -> Path:
    path = project / "jobs" / "with_source.yml"
    path.write_text(
        f"""\
name: with_source
source: {{query: "{QUERY}", key: ticket_id, columns: [subject, label]}}
request: "{ID_REQUEST}"
agent: {{endpoint: apps/triage-agent, response_format: "STRUCT<label: STRING, urgency: INT>"}}
output: {{table: main.s.with_source_out, mode: merge}}
evaluation:
  expected: label
  scorers:
    - exact_match: {{field: label}}
    - llm_judge: {{endpoint: "{judge_url}", name: judged}}
"""
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize("target", ["local", pytest.param("spark", marks=pytest.mark.spark)])
def test_a_judge_of_a_with_source_judges_every_row_once(
    project: Path, tmp_path: Path, target: str
) -> None:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    tables = write_source(project, TICKETS)
    settings: dict[str, Any] = {}
    if target == "spark":
        settings = {
            "master": "local[2]",
            "warehouse_dir": str(tmp_path / "spark-warehouse"),
            "storage": "files",
        }
    with (
        ScriptedAgent(lambda text: "Verdict: PASS") as judge_agent,
        agent() as server,
    ):
        job = with_source_job(project, judge_agent.url)
        for _ in range(2):  # the second evaluation pays for nothing: every answer is judged
            result = evaluate(
                job,
                target,
                tables=tables,
                endpoints={"apps/triage-agent": server.url},
                settings=settings,
                state_dir=project / "state",
                progress=False,
            )
            judged = result.metric("judged")
            assert (judged["rows"], judged["errors"], judged["mean"]) == (EVEN, 0, 1.0)
            assert result.metric("label_exact_match")["mean"] == 1.0
            assert (server.requests, judge_agent.requests) == (EVEN, EVEN)
