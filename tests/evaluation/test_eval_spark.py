"""The same evaluation on the spark engine: answers, judge-free scoring and the tables written
through the engine land in its warehouse, with the numbers the local engine gives."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agentbatch.evaluation import evaluate
from agentbatch.testing.agent_server import AgentServer
from tests.evaluation.test_eval_example_local import expected_accuracy

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def test_evaluation_on_spark(
    project: Path, tickets_table: dict[str, str], demo_agent: AgentServer, tmp_path: Path
) -> None:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse = tmp_path / "spark-warehouse"
    result = evaluate(
        project / "jobs" / "eval_triage.yml",
        "spark",
        tables=tickets_table,
        endpoints={"apps/triage-agent": demo_agent.url},
        settings={"master": "local[2]", "warehouse_dir": str(warehouse), "storage": "files"},
        progress=False,
    )
    assert result.metric("label_exact_match")["mean"] == pytest.approx(expected_accuracy())
    assert result.scores.num_rows == 300
    written = {p.name for p in (warehouse / "main" / "support").iterdir()}
    assert {"triage_eval", "triage_eval_scores", "triage_eval_metrics"} <= written
