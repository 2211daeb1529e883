"""The rows an evaluation scores (`evaluated_rows.sql`) on the databricks-sql and spark targets:
an append-mode job with an LLM judge, its prompt edited then reverted, then its source corrected
and cut. Each step scores exactly the current selection's answers to the current prompt, with
the current expected labels, and pays only for what changed."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentbatch.evaluation.results import EvalResult
from agentbatch.evaluation.run import evaluate
from tests.evaluation.test_eval_current_rows import (
    OTHER_PROMPT,
    TICKETS,
    accuracy,
    agent,
    write_source,
)
from tests.evaluation.test_eval_databricks_sql import (  # noqa: F401 - fixtures
    WarehouseJudge,
    isolated_auth,
    judge,
    warehouse,
)
from tests.support.eval_servers import ID_REQUEST, ScriptedAgent, wrong_label

# The source after the last step: ten rows left, the first five with another label.
CUT = [{**t, "label": wrong_label(t["label"])} if n < 5 else t for n, t in enumerate(TICKETS[:10])]


def append_job(project: Path, source: str, output: str, judge_endpoint: str) -> Path:
    path = project / "jobs" / "targets.yml"
    path.write_text(
        f"""\
name: targets
source: {{table: {source}, key: ticket_id, columns: [subject, label]}}
request: "{ID_REQUEST}"
agent: {{endpoint: apps/triage-agent, response_format: "STRUCT<label: STRING, urgency: INT>"}}
output: {{table: {output}, mode: append}}
evaluation:
  expected: label
  scorers:
    - exact_match: {{field: label}}
    - llm_judge: {{endpoint: "{judge_endpoint}", name: judged}}
"""
    )
    return path


def scenario(
    job: Path,
    run: Callable[[], EvalResult],
    cut_source: Callable[[], None],
    paid: Callable[[], int],
) -> list[tuple[tuple[int, float], float, int]]:
    """(exact match (rows, mean), judged mean, agent requests so far) after each step."""
    v1 = job.read_text()
    seen = []

    def step() -> None:
        result = run()
        judged = result.metric("judged")
        assert judged["errors"] == 0
        seen.append((accuracy(result), judged["mean"], paid()))

    step()
    job.write_text(v1.replace("Classify this support ticket #", OTHER_PROMPT))
    step()
    job.write_text(v1)
    step()
    cut_source()
    step()
    return seen


# v1 (right on all), v2 (wrong on all), v1 again (nothing paid), then the cut source (half of
# the ten rows now expect another label than v1's answers).
EXPECTED = [((20, 1.0), 1.0, 20), ((20, 0.0), 0.0, 40), ((20, 1.0), 1.0, 40), ((10, 0.5), 0.5, 40)]


def test_on_databricks_sql(
    project: Path,
    warehouse: Any,  # noqa: F811 - the fixture
    judge: WarehouseJudge,  # noqa: F811 - the fixture
) -> None:
    import databricks.sql

    def sql(statement: str) -> None:
        with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute(statement)

    sql(
        "CREATE TABLE main.support.t20 AS SELECT * FROM main.support.tickets "
        "ORDER BY ticket_id LIMIT 20"
    )
    job = append_job(project, "main.support.t20", "main.support.t20_out", "judge-model")
    first_five = ", ".join(t["ticket_id"] for t in TICKETS[:5])

    def cut_source() -> None:
        sql(
            "CREATE OR REPLACE TABLE main.support.t20 AS SELECT ticket_id, created_at, customer, "
            "channel, status, subject, body, CASE WHEN ticket_id "
            f"IN ({first_five}) THEN CASE WHEN label = 'other' THEN 'bug' ELSE 'other' END "
            "ELSE label END AS label FROM main.support.t20 ORDER BY ticket_id LIMIT 10"
        )

    with agent(lambda text: OTHER_PROMPT not in text) as server:

        def run() -> EvalResult:
            return evaluate(
                job,
                "databricks-sql",
                settings={
                    "host": f"http://{warehouse.host}:{warehouse.port}",
                    "warehouse_id": warehouse.warehouse_id,
                },
                endpoints={"apps/triage-agent": server.url},
                state_dir=project / "state",
                progress=False,
            )

        assert scenario(job, run, cut_source, lambda: server.requests) == EXPECTED
    # Judged: v1's answers, v2's, v1's again (their prompts differ from v2's), then the five
    # rows whose reference changed.
    assert len(judge.calls) == 20 + 20 + 20 + 5


@pytest.mark.slow
@pytest.mark.spark
def test_on_spark(project: Path, tmp_path: Path) -> None:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    tables = write_source(project, TICKETS)
    with (
        ScriptedAgent(lambda text: "Verdict: PASS" if "Answer:" in text else "?") as judge_agent,
        agent(lambda text: OTHER_PROMPT not in text) as server,
    ):
        job = append_job(project, "main.s.tickets", "main.s.t20_out", judge_agent.url)

        def run() -> EvalResult:
            return evaluate(
                job,
                "spark",
                tables=tables,
                endpoints={"apps/triage-agent": server.url},
                settings={
                    "master": "local[2]",
                    "warehouse_dir": str(tmp_path / "spark-warehouse"),
                    "storage": "files",
                },
                state_dir=project / "state",
                progress=False,
            )

        def cut_source() -> None:
            write_source(project, CUT)

        seen = scenario(job, run, cut_source, lambda: server.requests)
    # The judge here always passes: only the rows and the exact match follow the source.
    assert [(exact, paid) for exact, _, paid in seen] == [(e, p) for e, _, p in EXPECTED]
    assert [judged for _, judged, _ in seen] == [1.0, 1.0, 1.0, 1.0]
