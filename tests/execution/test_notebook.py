"""The Python API from a notebook cell, in a real IPython kernel: Databricks Python notebooks run
on one (Databricks Runtime 11.3 LTS and above), and it runs every cell inside its event loop, where
`asyncio.run` refuses to start. The main job runs against the demo agent over real HTTP."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig

ROOT = Path(__file__).resolve().parents[2]
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"
OPEN_TICKETS = 237
CONCURRENCY = 4
MARK = "RESULT:"

# The cell a user writes (README's Python API), and a check that the cell runs in a loop.
RUN_CELL = """
import asyncio, json, threading
import agentbatch
asyncio.get_running_loop()  # the kernel runs this cell inside its event loop
with agentbatch.run(
    {job!r},
    tables={{"main.support.tickets": {tickets!r}, "main.support.ticket_triage": {out!r}}},
    endpoints={{"apps/triage-agent": {url!r}}},
    state_dir={state!r},
    project_dir={project!r},
    progress=False,
) as result:
    summary = result.summary
left = [t.name for t in threading.enumerate() if t.name == "agentbatch-calls"]
print({mark!r} + json.dumps({{"summary": summary, "threads_left": left}}, default=str))
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Any]:
    """An IPython kernel of this interpreter (a kernel spec of its own, so that no kernel
    installed on the machine is used instead), and a client talking to it."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "agentbatch-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "agentbatch test", "language": "python"})
    )
    manager = KernelManager(
        kernel_name="agentbatch-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]),
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DATABRICKS_HOST", None)
    env.pop("DATABRICKS_TOKEN", None)
    manager.start_kernel(cwd=str(tmp_path), env=env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        client.manager = manager
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def job_file(tmp_path: Path) -> Path:
    """The main job, its concurrency capped so that a run lasts long enough to interrupt."""
    text = (ROOT / "jobs" / "ticket_triage.yml").read_text(encoding="utf-8")
    text = text.replace(
        "  fail_on_error: false\n", f"  fail_on_error: false\n  max_concurrency: {CONCURRENCY}\n"
    )
    assert f"max_concurrency: {CONCURRENCY}" in text
    path = tmp_path / "jobs" / "ticket_triage.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_cell(tmp_path: Path, agent: AgentServer) -> str:
    return RUN_CELL.format(
        job=str(job_file(tmp_path)),
        tickets=str(TICKETS),
        out=str(tmp_path / "out.parquet"),
        url=agent.url,
        state=str(tmp_path / "state"),
        project=str(tmp_path),
        mark=MARK,
    )


def execute(client: Any, code: str) -> tuple[dict[str, Any], str]:
    """Run `code` as a cell; its reply and everything it printed (tracebacks included)."""
    printed: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            printed.append("\n".join(message["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=180, output_hook=collect)
    return reply["content"], "".join(printed)


def result_of(printed: str) -> dict[str, Any]:
    line = next(line for line in printed.splitlines() if line.startswith(MARK))
    return json.loads(line[len(MARK) :])  # type: ignore[no-any-return]


def table_keys(tmp_path: Path) -> list[int]:
    return pq.read_table(tmp_path / "out.parquet")["ticket_id"].to_pylist()


def test_a_run_from_a_notebook_cell_answers_every_row(kernel: Any, tmp_path: Path) -> None:
    with serve_agent() as agent:
        reply, printed = execute(kernel, run_cell(tmp_path, agent))
        assert reply["status"] == "ok", printed
        result = result_of(printed)
        assert result["summary"]["sent"] == result["summary"]["ok"] == OPEN_TICKETS
        assert result["summary"]["table_rows"] == OPEN_TICKETS
        assert result["threads_left"] == []
        assert agent.stats().requests_total == OPEN_TICKETS
    keys = table_keys(tmp_path)
    assert len(set(keys)) == len(keys) == OPEN_TICKETS


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
    keys = table_keys(tmp_path)
    assert len(set(keys)) == len(keys) == OPEN_TICKETS
