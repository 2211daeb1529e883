"""Two runs writing one output table at once on a SQL warehouse: two users' jobs, or a manual run
beside the scheduled one, on machines that share only the warehouse (each run has its own
checkpoint; the local output lock cannot see the other). Delta commits optimistically: the MERGE
that commits second was overtaken and fails (DELTA_CONCURRENT_APPEND, the loopback's commits.py).
The engine runs it again; the table ends as if the runs had written one after the other."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agentbatch
from agentbatch.engines import write_conflicts as conflicts
from agentbatch.testing.agent_server import AgentServer
from tests.support.warehouse.server import Warehouse

from . import test_databricks_sql_run as runs
from .test_databricks_sql_run import (
    ALL_TICKETS,
    OPEN_TICKETS,
    SUMMARISE,
    TICKETS_CSV,
    TRIAGE,
    target_settings,
)

# The loopback warehouse with the tickets, the demo agent, no ambient Databricks credentials.
warehouse = runs.warehouse
agent = runs.agent
isolated_auth = runs.isolated_auth


def half(job: Path, parity: int, folder: Path) -> Path:
    """The job over the tickets whose key has `parity`, writing the same output table."""
    text = job.read_text().replace("name: ", f"name: half{parity}_", 1)
    if "where: " in text:
        text = text.replace('where: "', f'where: "ticket_id % 2 = {parity} AND ', 1)
    else:
        text = text.replace(
            "  key: ticket_id\n", f'  key: ticket_id\n  where: "ticket_id % 2 = {parity}"\n'
        )
    copy = folder / "jobs" / f"{job.stem}_{parity}.yml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text)
    return copy


@contextlib.contextmanager
def run_both_at_once(
    warehouse: Warehouse,
    agent: AgentServer,
    jobs: list[Path],
    folder: Path,
    **settings: Any,
) -> Iterator[Any]:
    """Run the jobs in threads, each in its own project and checkpoint folder; their MERGEs are
    held until both have started (both read the table at the same version), then let go."""
    gate = warehouse.hold("MERGE INTO")
    results: dict[int, Any] = {}
    settings = {**target_settings(warehouse), "conflict_backoff_s": 0.05, **settings}

    def run(number: int, job: Path) -> None:
        try:
            results[number] = agentbatch.run(
                job,
                target="databricks-sql",
                settings=settings,
                endpoints={"apps/triage-agent": agent.url} if "triage" in job.stem else {},
                project_dir=folder / f"machine{number}",
                state_dir=folder / f"machine{number}" / "state",
                progress=False,
            )
        except BaseException as err:  # the assertion below shows it
            results[number] = err

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(jobs)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while sum("MERGE INTO" in op.sql for op in warehouse.service.running()) < len(jobs):
        assert all(t.is_alive() for t in threads), results
        assert time.monotonic() < deadline, "the runs never reached their MERGEs together"
        time.sleep(0.01)
    gate.set()
    for thread in threads:
        thread.join(180)
    try:
        for number in range(len(jobs)):
            assert not isinstance(results[number], BaseException), results[number]
        yield [results[number] for number in range(len(jobs))]
    finally:
        for result in results.values():
            if not isinstance(result, BaseException) and result.engine is not None:
                result.engine.close()


def merges_into(warehouse: Warehouse, table: str) -> int:
    return sum(s.startswith(f"MERGE INTO {table}") for s in warehouse.statements)


def open_tickets(parity: int) -> int:
    import csv

    with TICKETS_CSV.open() as tickets:
        rows = csv.DictReader(tickets)
        return sum(r["status"] == "open" and int(r["ticket_id"]) % 2 == parity for r in rows)


def test_rest_fallback_runs_at_once_each_write_their_answers(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path
) -> None:
    """The REST fallback: the second MERGE conflicts and runs again from the staged answers; no
    row is sent twice. Before, the second run failed with the warehouse's error (exit 5)."""
    jobs = [half(TRIAGE, parity, tmp_path) for parity in (0, 1)]
    with run_both_at_once(warehouse, agent, jobs, tmp_path) as (first, second):
        rows = first.engine.read_table("main.support.ticket_triage").to_pylist()
        assert len(rows) == len({r["ticket_id"] for r in rows}) == OPEN_TICKETS
        assert all(r["response"] is not None and r["error"] is None for r in rows)
        assert (first.summary["sent"], second.summary["sent"]) == (open_tickets(0), open_tickets(1))
        assert agent.stats().requests_total == OPEN_TICKETS  # the retry sent nothing
        assert merges_into(warehouse, "`main`.`support`.`ticket_triage`") == 3  # one conflict


def test_same_job_twice_at_once_keeps_every_key_once(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path
) -> None:
    """Two runs of one job: both pay for every row (both started before either wrote: calls in
    flight), the table holds each key once, and nothing more is sent."""
    with run_both_at_once(warehouse, agent, [TRIAGE, TRIAGE], tmp_path) as (first, second):
        rows = first.engine.read_table("main.support.ticket_triage").to_pylist()
        assert len(rows) == len({r["ticket_id"] for r in rows}) == OPEN_TICKETS
        assert first.summary["sent"] == second.summary["sent"] == OPEN_TICKETS
        assert agent.stats().requests_total == 2 * OPEN_TICKETS
        assert merges_into(warehouse, "`main`.`support`.`ticket_triage`") == 3


def test_push_down_runs_at_once_each_write_their_answers(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path
) -> None:
    """Push-down: the MERGE that calls ai_query conflicts at its commit, after its calls; run
    again, it calls the endpoint for its rows still not done. Every key is written once; the
    answers of the attempt the warehouse discarded are paid again (push-down keeps no
    checkpoint). Before, the second run failed and its half stayed unanswered."""
    jobs = [half(SUMMARISE, parity, tmp_path) for parity in (0, 1)]
    with run_both_at_once(warehouse, agent, jobs, tmp_path) as (first, _second):
        rows = first.engine.read_table("main.support.ticket_summaries").to_pylist()
        assert len(rows) == len({r["ticket_id"] for r in rows}) == ALL_TICKETS
        assert all(r["response"] and r["error"] is None for r in rows)
        assert merges_into(warehouse, "`main`.`support`.`ticket_summaries`") == 3
        assert agent.stats().requests_total == ALL_TICKETS + ALL_TICKETS // 2


def test_when_conflicts_outlast_the_retries_the_run_fails_and_a_rerun_pays_nothing(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path
) -> None:
    """With no retry left the run stops with the warehouse's conflict and says to run again; its
    answers wait in its checkpoint, and the rerun writes them without calling the agent."""
    jobs = [half(TRIAGE, parity, tmp_path) for parity in (0, 1)]
    with (
        pytest.raises(AssertionError, match=r"DELTA_CONCURRENT_APPEND.*1 attempts failed"),
        run_both_at_once(warehouse, agent, jobs, tmp_path, conflict_attempts=1),
    ):
        pass
    sent = agent.stats().requests_total
    assert sent == OPEN_TICKETS
    reruns = []
    try:
        for number, job in enumerate(jobs):  # each machine runs its job again
            reruns.append(
                agentbatch.run(
                    job,
                    target="databricks-sql",
                    settings=target_settings(warehouse),
                    endpoints={"apps/triage-agent": agent.url},
                    project_dir=tmp_path / f"machine{number}",
                    state_dir=tmp_path / f"machine{number}" / "state",
                    progress=False,
                )
            )
        assert [again.summary["sent"] for again in reruns] == [0, 0]
        rows = reruns[-1].to_arrow(whole_table=True)["ticket_id"].to_pylist()
        assert len(rows) == len(set(rows)) == OPEN_TICKETS
        assert agent.stats().requests_total == sent
    finally:
        for again in reruns:
            if again.engine is not None:
                again.engine.close()


@pytest.mark.parametrize(
    ("message", "conflict"),
    [
        (
            "[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] Transaction conflict detected. ... "
            "SQLSTATE: 2D521",
            "DELTA_CONCURRENT_APPEND",
        ),
        ("[DELTA_CONCURRENT_DELETE_READ] Transaction conflict", "DELTA_CONCURRENT_DELETE_READ"),
        ("[DELTA_METADATA_CHANGED] MetadataChangedException: ...", "DELTA_METADATA_CHANGED"),
        (
            "io.delta.exceptions.ConcurrentAppendException: Files were added to the root of "
            "the table by a concurrent update. Please try the operation again.",
            "ConcurrentAppendException",
        ),
        ("[SOME_FUTURE_CONFLICT] ... SQLSTATE: 2D521", "SQLSTATE 2D521"),
        ("[DELTA_CONCURRENT_APPENDIX] not one", None),
        ("[TABLE_OR_VIEW_NOT_FOUND] ... SQLSTATE: 42P01", None),
        ("[USER_RAISED_EXCEPTION] ConcurrentAppendException-ish text SQLSTATE: P0001", None),
    ],
)
def test_which_failures_are_write_conflicts(message: str, conflict: str | None) -> None:
    assert conflicts.write_conflict(message) == conflict
