"""The Python API from a notebook cell, in a real IPython kernel: Databricks Python notebooks run
on one (Databricks Runtime 11.3 LTS and above), and it runs every cell inside its event loop, where
`asyncio.run` refuses to start. The main job runs against the demo agent over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from tests.support.notebook import MARK, execute, ipython_kernel, result_of
from tests.support.triage import OPEN_TICKETS, TICKETS, TRIAGE

CONCURRENCY = 4

# The cell a user writes (README's Python API), and a check that the cell runs in a loop.
RUN_CELL = """
import asyncio, json, threading
import agentbatch
asyncio.get_running_loop()  # the kernel runs this cell inside its event loop
with agentbatch.run(
    {job!r},
    target={target!r},
    tables={{"main.support.tickets": {tickets!r}, "main.support.ticket_triage": {out!r}}},
    endpoints={{"apps/triage-agent": {url!r}}},
    settings={settings!r},
    state_dir={state!r},
    project_dir={project!r},
    progress=False,
) as result:
    summary = result.summary
    keys = result.to_pandas(whole_table=True)["ticket_id"].tolist()
left = [t.name for t in threading.enumerate() if t.name == "agentbatch-calls"]
print({mark!r} + json.dumps({{"summary": summary, "keys": keys, "threads_left": left}}, default=str))
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Any]:
    with ipython_kernel(tmp_path) as client:
        yield client


def job_file(tmp_path: Path) -> Path:
    """The main job, its concurrency capped so that a run lasts long enough to interrupt."""
    text = TRIAGE.read_text(encoding="utf-8")
    text = text.replace(
        "  fail_on_error: false\n", f"  fail_on_error: false\n  max_concurrency: {CONCURRENCY}\n"
    )
    assert f"max_concurrency: {CONCURRENCY}" in text
    path = tmp_path / "jobs" / "ticket_triage.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_cell(tmp_path: Path, agent: AgentServer, target: str = "local", **settings: str) -> str:
    return RUN_CELL.format(
        job=str(job_file(tmp_path)),
        target=target,
        tickets=str(TICKETS),
        out=str(tmp_path / ("out.parquet" if target == "local" else "out")),
        url=agent.url,
        settings=settings,
        state=str(tmp_path / "state"),
        project=str(tmp_path),
        mark=MARK,
    )


def test_a_run_from_a_notebook_cell_answers_every_row(kernel: Any, tmp_path: Path) -> None:
    with serve_agent() as agent:
        reply, printed = execute(kernel, run_cell(tmp_path, agent))
        assert reply["status"] == "ok", printed
        result = result_of(printed)
        assert result["summary"]["sent"] == result["summary"]["ok"] == OPEN_TICKETS
        assert result["summary"]["table_rows"] == OPEN_TICKETS
        assert result["threads_left"] == []
        assert agent.stats().requests_total == OPEN_TICKETS
    assert (
        sorted(result["keys"]) == sorted(set(result["keys"]))
        and len(result["keys"]) == OPEN_TICKETS
    )


def test_a_notebook_interrupt_stops_the_run_and_the_next_cell_pays_only_what_was_in_flight(
    kernel: Any, tmp_path: Path
) -> None:
    """The stop button (SIGINT to the kernel) ends the cell with KeyboardInterrupt while rows are
    being answered; the answers received by then are kept, the checkpoint's lock is released, and
    a second run in the same kernel sends only the rest: at most the calls that were in flight
    are paid twice, and the table holds every row once."""
    with serve_agent(FaultConfig(latency_ms=100)) as agent:
        message_id = kernel.execute(run_cell(tmp_path, agent))
        deadline = time.monotonic() + 60
        while agent.stats().requests_total < 40:
            assert time.monotonic() < deadline, "the run in the cell never got going"
            time.sleep(0.02)
        kernel.manager.interrupt_kernel()
        reply = kernel.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == message_id
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        paid_before = agent.stats().requests_total
        assert paid_before < OPEN_TICKETS  # the interrupt stopped the run

        again, printed = execute(kernel, run_cell(tmp_path, agent))
        assert again["status"] == "ok", printed
        result = result_of(printed)
        summary = result["summary"]
        stats = agent.stats()
    assert result["threads_left"] == []
    # Rows answered before the interrupt are in the table (skipped) or the checkpoint (reused).
    kept = summary["skipped"] + summary["reused"]
    assert kept + summary["sent"] == OPEN_TICKETS
    assert kept >= paid_before - CONCURRENCY
    assert stats.requests_total == paid_before + summary["sent"]
    # Paid twice: at most the calls in flight when the cell was stopped.
    assert stats.requests_total <= OPEN_TICKETS + CONCURRENCY
    assert (
        sorted(result["keys"]) == sorted(set(result["keys"]))
        and len(result["keys"]) == OPEN_TICKETS
    )


@pytest.mark.spark
@pytest.mark.slow
def test_a_spark_run_from_a_notebook_cell_calls_from_the_driver(
    kernel: Any, tmp_path: Path
) -> None:
    """Serverless notebooks' path: the spark target with the REST fallback on the driver (a local
    Spark session started in the kernel, as a cluster notebook has one)."""
    with serve_agent() as agent:
        cell = run_cell(tmp_path, agent, target="spark", rest_fallback_on="driver")
        reply, printed = execute(kernel, cell)
        assert reply["status"] == "ok", printed
        result = result_of(printed)
        assert result["summary"]["sent"] == result["summary"]["ok"] == OPEN_TICKETS
        assert agent.stats().requests_total == OPEN_TICKETS
    assert result["threads_left"] == []
    assert (
        sorted(result["keys"]) == sorted(set(result["keys"]))
        and len(result["keys"]) == OPEN_TICKETS
    )
