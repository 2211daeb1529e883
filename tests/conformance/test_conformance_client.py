"""agentbatch's own client, end to end through `agentbatch.run`, against servers nobody here wrote:
MLflow's AgentServer (what Databricks Apps agent templates run), streaming and not, and
`mlflow models serve` of a ResponsesAgent and of a ChatAgent (legacy Model Serving).

Each agent answers `echo: <text>` and fails on rows whose text contains FAIL: those rows must carry
an error (never a success with partial text), every other row its exact answer, each key once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from tests.conformance.conftest import ConformanceServer

ROWS = 24
FAILING = {3, 11, 17}

JOB = """\
name: conformance_{name}
source: {{table: main.c.questions, key: id, columns: [body]}}
request: "body"
agent: {{endpoint: apps/agent, api: {api}, stream: {stream}, timeout_seconds: 30, max_retries: 2}}
output: {{table: main.c.answers, mode: merge}}
"""

pytestmark = pytest.mark.slow


def run_against(tmp_path: Path, url: str, *, api: str, stream: bool) -> list[dict[str, Any]]:
    bodies = [f"question {i} FAIL" if i in FAILING else f"question {i}" for i in range(ROWS)]
    source = tmp_path / "questions.parquet"
    pq.write_table(pa.table({"id": list(range(ROWS)), "body": bodies}), source)
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "job.yml"
    job.write_text(JOB.format(name="x", api=api, stream=str(stream).lower()))
    with agentbatch.run(
        job,
        tables={"main.c.questions": source, "main.c.answers": tmp_path / "out.parquet"},
        endpoints={"apps/agent": url},
        project_dir=tmp_path,
        progress=False,
    ) as result:
        assert result.summary["rows"] == ROWS
    rows: list[dict[str, Any]] = pq.read_table(tmp_path / "out.parquet").to_pylist()
    return sorted(rows, key=lambda row: row["id"])


def check(rows: list[dict[str, Any]]) -> None:
    assert [row["id"] for row in rows] == list(range(ROWS))
    for row in rows:
        if row["id"] in FAILING:
            assert row["response"] is None, row
            assert row["error"], row
        else:
            assert row["error"] is None, row
            assert row["response"] == f"echo: question {row['id']}"


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_mlflow_agent_server(
    tmp_path: Path, mlflow_agent_server: ConformanceServer, stream: bool
) -> None:
    rows = run_against(tmp_path, mlflow_agent_server.base_url, api="responses", stream=stream)
    check(rows)
    failed = [row for row in rows if row["id"] in FAILING]
    assert all("agent failed on purpose" in row["error"] for row in failed) or stream


def test_models_serve_responses_agent(
    tmp_path: Path, responses_model_server: ConformanceServer
) -> None:
    check(run_against(tmp_path, responses_model_server.invoke_url, api="responses", stream=False))


def test_models_serve_chat_agent(tmp_path: Path, chat_model_server: ConformanceServer) -> None:
    rows = run_against(tmp_path, chat_model_server.invoke_url, api="chat", stream=False)
    check(rows)
    # Legacy Model Serving answers agent errors with HTTP 400: recorded once, never retried.
    assert all(row["attempts"] == 1 and "400" in row["error"] for row in rows if row["error"])
