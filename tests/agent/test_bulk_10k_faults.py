"""Issue acceptance: 10,000 rows against the fault-injecting agent with 30% transient faults.

Every key lands exactly once, every transient fault is recovered, and permanent faults are recorded
with the server's message. Run end to end through `agentbatch.run` on the local engine."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.faults import FaultConfig

ROWS = 10_000
PERMANENT_EVERY = 250  # 40 rows carry the permanent-fault marker

JOB = """\
name: faults_10k
source: {table: main.s.questions, key: id, columns: [body]}
request: "concat('Q: ', body)"
agent: {endpoint: apps/flaky, timeout_seconds: 5, max_retries: 10}
output: {table: main.s.answers, mode: merge}
"""


@pytest.mark.slow
def test_ten_thousand_rows_with_thirty_percent_transient_faults(tmp_path: Path) -> None:
    bodies = [
        f"question {i} PERMANENT_ERROR" if i % PERMANENT_EVERY == 0 else f"question {i}"
        for i in range(ROWS)
    ]
    source = tmp_path / "questions.parquet"
    pq.write_table(pa.table({"id": list(range(ROWS)), "body": bodies}), source)
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "faults.yml"
    job.write_text(JOB)
    faults = FaultConfig(
        seed=11,
        p_rate_limit=0.08,
        p_rate_limit_no_retry_after=0.04,
        p_server_error=0.08,
        p_unavailable=0.05,
        p_connection_reset=0.05,  # 30% of attempts fail transiently
        retry_after_s=0.05,
        permanent={"PERMANENT_ERROR": 400},
    )
    with serve_agent(faults) as server:
        with agentbatch.run(
            job,
            tables={"main.s.questions": source, "main.s.answers": tmp_path / "out.parquet"},
            endpoints={"apps/flaky": server.url},
            project_dir=tmp_path,
            progress=False,
        ) as result:
            summary = result.summary
        stats = server.stats()
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(out) == ROWS
    assert sorted(row["id"] for row in out) == list(range(ROWS))
    failed = [row for row in out if row["error"] is not None]
    assert {row["id"] for row in failed} == set(range(0, ROWS, PERMANENT_EVERY))
    assert all("400" in row["error"] for row in failed)
    assert all(row["response"] is None for row in failed)
    answered = [row for row in out if row["error"] is None]
    assert all(row["response"] == f"answer: Q: {row['body']}" for row in answered)
    injected = sum(v for k, v in stats.faults.items() if k not in ("permanent", "capacity"))
    assert injected > 0.2 * ROWS  # the faults really happened
    assert summary["retries"] >= injected  # and every one was retried to an answer
    assert summary["ok"] == ROWS - len(failed)
