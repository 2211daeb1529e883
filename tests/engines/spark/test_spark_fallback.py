"""The REST fallback spread over Spark tasks: an Apps agent through mapInArrow."""

from __future__ import annotations

import csv
import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentbatch.engines.spark.distributed import COMPACTED
from agentbatch.errors import AgentError
from agentbatch.planning.builder import build_plan
from agentbatch.planning.definition import RestFallback, RunOptions
from agentbatch.planning.targets import Target
from agentbatch.spec.loader import load_job_text
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig

TRIAGE_JOB = """
name: triage
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
request: "concat('Classify this support ticket. Ticket: ', subject, ' ', body)"
agent:
  endpoint: apps/triage-agent
  api: responses
  response_format: "STRUCT<label: STRING, urgency: INT>"
  max_concurrency: {concurrency}
output:
  table: main.support.triage
  mode: merge
"""
SUBJECTS = (
    "my invoice is wrong",
    "the app shows an error",
    "cannot log in",
    "please add dark mode",
)


def write_tickets(path: Path, count: int, broken: set[int] = frozenset()) -> Path:  # type: ignore[assignment]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ticket_id", "subject", "body"])
        for i in range(count):
            body = "PERMANENT_ERROR" if i in broken else f"details {i}"
            out.writerow([i, SUBJECTS[i % len(SUBJECTS)], body])
    return path


def triage_plan(
    agent: AgentServer,
    concurrency: int = 8,
    *,
    full_refresh: bool = False,
    limit: int | None = None,
) -> tuple[RestFallback, dict[str, str]]:
    job = load_job_text(TRIAGE_JOB.format(concurrency=concurrency), "jobs/triage.yml")
    overrides = {"apps/triage-agent": agent.url}
    options = RunOptions(endpoints=overrides, full_refresh=full_refresh, limit=limit)
    plan = build_plan(job, Target("spark", "spark"), options)
    assert plan.strategy == "rest-fallback" and isinstance(plan.steps, RestFallback)
    return plan.steps, overrides


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    faults = FaultConfig(seed=3, latency_ms=20, p_server_error=0.15, retry_after_s=0.05)
    with serve_agent(faults) as server:
        yield server


def test_every_key_once_with_errors_as_rows(
    make_engine: Any, agent: AgentServer, tmp_path: Path
) -> None:
    tickets = write_tickets(tmp_path / "tickets.csv", 120, broken={7, 50})
    steps, overrides = triage_plan(agent, concurrency=4)
    engine = make_engine(
        {"partitions": 3},
        tables={"main.support.tickets": tickets, "main.support.triage": tmp_path / "triage"},
        output_tables=["main.support.triage"],
    )
    stats = engine.run_distributed(steps.distributed(RunOptions(endpoints=overrides)))
    rows = engine.read_table("main.support.triage").to_pylist()
    assert sorted(r["ticket_id"] for r in rows) == list(range(120))
    errors = {r["ticket_id"]: r["error"] for r in rows if r["error"] is not None}
    assert set(errors) == {7, 50} and all("HTTP 400" in e for e in errors.values())
    answered = [r for r in rows if r["error"] is None]
    assert all(
        r["response"]["label"] in {"billing", "bug", "account", "feature_request"} for r in answered
    )
    by_subject = {r["subject"]: r["response"]["label"] for r in answered}
    assert by_subject["my invoice is wrong"] == "billing"
    assert all(r["attempts"] >= 1 and r["http_status"] is not None for r in rows)
    assert stats["ok"] == 118 and stats["errors"] == 2 and stats["rows_written"] == 120
    assert stats["tasks"] == 3
    server = agent.stats()
    assert server.faults.get("server_error", 0) > 0  # retries happened and were absorbed
    assert server.max_in_flight <= 4  # the job's cap holds across the three tasks
    # Once the answers are in the target, the checkpoint is one file: each key's latest answer.
    folder = engine.checkpoint_folder("main.support.triage", steps.call)
    assert folder is not None
    assert [p.name.startswith(COMPACTED) for p in folder.glob("part-*.parquet")] == [True]
    kept = pq.read_table(next(folder.glob("part-*.parquet")))
    assert sorted(kept.column("ticket_id").to_pylist()) == list(range(120))
    # A re-run finds every key in the target: nothing is sent.
    before = server.requests_total
    again = engine.run_distributed(steps.distributed(RunOptions(endpoints=overrides)))
    assert again["sent"] == 0 and again["rows_written"] == 0
    assert agent.stats().requests_total == before


def test_an_unusable_endpoint_stops_the_run_with_agent_error(
    make_engine: Any, agent: AgentServer, tmp_path: Path
) -> None:
    tickets = write_tickets(tmp_path / "tickets.csv", 10)
    steps, _ = triage_plan(agent)
    engine = make_engine(
        {"partitions": 2},
        tables={"main.support.tickets": tickets, "main.support.triage": tmp_path / "triage"},
        output_tables=["main.support.triage"],
    )
    wrong_route = {"apps/triage-agent": f"{agent.url}/no/such/route/responses"}
    with pytest.raises(AgentError, match="404"):
        engine.run_distributed(steps.distributed(RunOptions(endpoints=wrong_route)))
    assert engine.read_table("main.support.triage").num_rows == 0


def test_without_a_checkpoint_folder_results_come_from_the_tasks(
    make_engine: Any, agent: AgentServer, tmp_path: Path
) -> None:
    tickets = write_tickets(tmp_path / "tickets.csv", 30, broken={4})
    steps, overrides = triage_plan(agent)
    engine = make_engine(
        {"partitions": 2, "checkpoint_dir": False},
        tables={"main.support.tickets": tickets, "main.support.triage": tmp_path / "triage"},
        output_tables=["main.support.triage"],
    )
    assert engine.checkpoint_folder("main.support.triage", steps.call) is None
    engine.execute(steps.ensure_target.sql)  # type: ignore[union-attr]
    answers = engine.answer_distributed(
        steps.inputs.sql,
        steps.call,
        "ticket_id",
        table="main.support.triage",
        endpoint_overrides=overrides,
    )
    assert answers.fatal is None and answers.results is not None
    rows = answers.results.collect()
    assert sorted(r["ticket_id"] for r in rows) == list(range(30))
    assert [r["ticket_id"] for r in rows if r["error"] is not None] == [4]
    assert answers.stats["ok"] == 29 and answers.stats["tasks"] == 2
    sent = agent.stats().requests_total
    rows_again = answers.results.collect()  # materialised once: reading again calls nobody
    assert len(rows_again) == 30 and agent.stats().requests_total == sent


def test_a_stopped_full_refresh_is_continued_not_paid_again(
    make_engine: Any, tmp_path: Path
) -> None:
    """A full refresh that stops part-way (here the agent starts refusing its token) writes what
    it answered and keeps its checkpoint: the next run of the same refresh (the same
    `refresh_since`, which the runner keeps in the job output's ledger) pays only the rows it had
    not reached. A new refresh (none given: it begins now) pays every row."""
    rows = 60
    with serve_agent(FaultConfig(latency_ms=20)) as agent:
        tickets = write_tickets(tmp_path / "tickets.csv", rows)
        steps, overrides = triage_plan(agent, concurrency=2)
        engine = make_engine(
            {"partitions": 2},
            tables={"main.support.tickets": tickets, "main.support.triage": tmp_path / "triage"},
            output_tables=["main.support.triage"],
        )
        refreshing, _ = triage_plan(agent, concurrency=2, full_refresh=True)
        fresh = refreshing.distributed(RunOptions(endpoints=overrides, full_refresh=True))
        engine.run_distributed(steps.distributed(RunOptions(endpoints=overrides)))
        assert agent.stats().requests_total == rows
        started = datetime.now(timezone.utc)
        refresh = dataclasses.replace(fresh, refresh_since=time.time_ns() // 1000)

        def revoke_after(calls: int) -> None:
            deadline = time.monotonic() + 120
            while agent.stats().requests_total < calls and time.monotonic() < deadline:
                time.sleep(0.005)
            agent.configure(FaultConfig(latency_ms=20, permanent={"Classify": 403}))

        revoker = threading.Thread(target=revoke_after, args=(rows + 20,), daemon=True)
        revoker.start()
        with pytest.raises(AgentError, match="403"):
            engine.run_distributed(refresh)
        revoker.join()
        agent.configure(FaultConfig(latency_ms=20))
        refreshed = {
            r["ticket_id"]
            for r in engine.read_table("main.support.triage").to_pylist()
            if r["answered_at"] >= started
        }
        assert 10 <= len(refreshed) < rows

        again = engine.run_distributed(refresh)
        assert (again["reused"], again["sent"]) == (len(refreshed), rows - len(refreshed))
        table = engine.read_table("main.support.triage").to_pylist()
        assert sorted(r["ticket_id"] for r in table) == list(range(rows))
        assert all(r["answered_at"] >= started and r["error"] is None for r in table)
        paid = agent.stats().requests_total
        assert engine.run_distributed(fresh)["sent"] == rows  # a new refresh
        assert agent.stats().requests_total == paid + rows


def test_limited_full_refreshes_take_turns_on_the_executors(
    make_engine: Any, tmp_path: Path
) -> None:
    """`--full-refresh --limit N` on the executors refreshes the N rows answered longest ago:
    two runs of half the rows each refresh every row once."""
    rows = 40
    with serve_agent(FaultConfig(latency_ms=5)) as agent:
        tickets = write_tickets(tmp_path / "tickets.csv", rows)
        steps, overrides = triage_plan(agent, concurrency=4)
        engine = make_engine(
            {"partitions": 2},
            tables={"main.support.tickets": tickets, "main.support.triage": tmp_path / "triage"},
            output_tables=["main.support.triage"],
        )
        engine.run_distributed(steps.distributed(RunOptions(endpoints=overrides)))
        started = datetime.now(timezone.utc)
        limited, _ = triage_plan(agent, concurrency=4, full_refresh=True, limit=rows // 2)
        options = RunOptions(endpoints=overrides, full_refresh=True, limit=rows // 2)
        for _ in range(2):
            assert engine.run_distributed(limited.distributed(options))["sent"] == rows // 2
        table = engine.read_table("main.support.triage").to_pylist()
        assert sorted(r["ticket_id"] for r in table) == list(range(rows))
        assert all(r["answered_at"] >= started for r in table)  # every row refreshed
        assert agent.stats().requests_total == 2 * rows
