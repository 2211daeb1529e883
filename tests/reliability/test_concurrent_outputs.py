"""Two runs writing one output table at the same time: a scheduled job overlapping another that
writes the same table (a mapped file or the local warehouse file), each with its own checkpoint.
Each would read the table, add its rows and save, and the last to save would drop the other's
paid rows; so the second run stops before any call, naming the run that holds the output."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig

from .processes import PYTHON, child_env, run_cli

ROWS = 40
JOB = """\
name: {name}
source: {{table: main.s.src, key: id, columns: [txt], where: "id % 2 = {parity}"}}
request: "concat('Q: ', txt)"
agent: {{endpoint: apps/a, max_concurrency: 2}}
output: {{table: main.s.out}}
"""


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    # Slow (5 s for a run's 20 rows) so the first run still sends when the second one ends.
    with serve_agent(FaultConfig(latency_ms=500)) as server:
        yield server


@pytest.fixture
def project(tmp_path: Path) -> Path:
    lines = ["id,txt", *(f"{i},text {i}" for i in range(ROWS))]
    (tmp_path / "src.csv").write_text("\n".join(lines) + "\n")
    for name, parity in (("even", 0), ("odd", 1)):
        (tmp_path / f"{name}.yml").write_text(JOB.format(name=name, parity=parity))
    return tmp_path


def run_args(job: str, agent: AgentServer, output: str | None) -> list[str]:
    mapped = ["--table", f"main.s.out={output}"] if output else []
    return [
        "run", f"{job}.yml", "--table", "main.s.src=src.csv", *mapped,
        "--endpoint", f"apps/a={agent.url}", "--state-dir", f"state-{job}",
        "--no-progress", "--show", "0",
    ]  # fmt: skip


def start(project: Path, args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "agentbatch", *args],
        cwd=project,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_calls(agent: AgentServer, first: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while agent.stats().requests_total == 0:
        assert first.poll() is None, "the first run ended before sending"
        assert time.monotonic() < deadline, "the first run sent nothing"
        time.sleep(0.05)


def output_ids(project: Path, output: str | None) -> list[int]:
    if output and output.endswith(".parquet"):
        return sorted(pq.read_table(project / output)["id"].to_pylist())
    if output:
        return sorted(DeltaTable(str(project / output)).to_pyarrow_table()["id"].to_pylist())
    with duckdb.connect(str(project / ".agentbatch" / "warehouse" / "main.duckdb")) as con:
        return [row[0] for row in con.sql('SELECT id FROM "s"."out" ORDER BY id').fetchall()]


@pytest.mark.parametrize("output", ["out.parquet", "out_delta", None])
def test_a_second_run_writing_the_same_output_stops_before_any_call(
    project: Path, agent: AgentServer, output: str | None
) -> None:
    first = start(project, run_args("even", agent, output))
    try:
        wait_for_calls(agent, first)
        second = run_cli(run_args("odd", agent, output), cwd=project, timeout=60)
        assert first.poll() is None, "the first run must still hold the output"
    finally:
        agent.configure(FaultConfig())
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err.decode()
    assert second.returncode == 5, second.stderr
    error = second.stderr.strip().splitlines()[-1]
    assert "is being written by another run" in error and "job even" in error
    assert "Traceback" not in second.stderr
    assert agent.stats().requests_total == ROWS // 2  # the second run paid for nothing
    assert output_ids(project, output) == list(range(0, ROWS, 2))
    # Once the first run is done, the second runs, and the table holds both halves.
    again = run_cli(run_args("odd", agent, output), cwd=project, timeout=120)
    assert again.returncode == 0, again.stderr
    assert output_ids(project, output) == list(range(ROWS))
    assert agent.stats().requests_total == ROWS


def test_a_killed_run_leaves_the_output_free(project: Path, agent: AgentServer) -> None:
    first = start(project, run_args("even", agent, "out.parquet"))
    try:
        wait_for_calls(agent, first)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
        agent.configure(FaultConfig())
    again = run_cli(run_args("odd", agent, "out.parquet"), cwd=project, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (project / ".out.parquet.lock").exists()  # left behind, and inert
