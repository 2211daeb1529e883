"""The budget guard while sending, when nothing tells what a row costs before the run (no
estimate): end to end through the CLI against the loopback demo agent, whose rows here all use
the same tokens, so the bound the guard keeps can be asserted exactly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig

ROWS = 300
# "Q: text 7" is 3 input tokens and "answer: Q: text 7" 4 output tokens, for every row.
ROW_TOKENS = 7
# A price of one per token: the cost of a run is its tokens.
JOB = """\
name: b
source: {table: main.s.src, key: id, columns: [txt]}
request: "concat('Q: ', txt)"
agent: {endpoint: apps/a, price: {input_per_million: 1000000, output_per_million: 1000000}}
output: {table: main.s.out}
"""


def cli(tmp_path: Path, agent: AgentServer, *args: str, first: str = "text") -> dict[str, Any]:
    """Run the job over ROWS rows (the first one's text is `first`): exit code, summary, logs."""
    source = tmp_path / "src.csv"
    lines = ["id,txt", f"1,{first} 1", *(f"{i},text {i}" for i in range(2, ROWS + 1))]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "b.yml").write_text(JOB, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentbatch",
            "run",
            str(tmp_path / "b.yml"),
            "--table",
            f"main.s.src={source}",
            "--table",
            f"main.s.out={tmp_path / 'out.parquet'}",
            "--endpoint",
            f"apps/a={agent.url}",
            "--state-dir",
            str(tmp_path / "state"),
            "--project-dir",
            str(tmp_path),
            "--no-progress",
            "--json",
            "--show",
            "0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads(done.stdout)["summary"] if done.stdout.strip() else {}
    return {"code": done.returncode, "summary": summary, "stderr": done.stderr}


def tokens_written(tmp_path: Path) -> int:
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    return sum((r["input_tokens"] or 0) + (r["output_tokens"] or 0) for r in rows)


def answered_counts(stderr: str) -> list[tuple[int, bool]]:
    """Each budget message's row count, and whether it says the count is "so far"."""
    found = re.findall(r"(\d+) row\(s\) answered( so far)?", stderr)
    return [(int(count), bool(so_far)) for count, so_far in found]


def test_without_an_estimate_one_call_finds_out_what_a_row_costs_before_others_go(
    tmp_path: Path,
) -> None:
    with serve_agent(FaultConfig(latency_ms=50)) as agent:
        run = cli(tmp_path, agent, "--max-cost", "10")
        sent = agent.stats().requests_total
    assert run["code"] == 7, run["stderr"]
    # The first answer costs 7; a second call would bring the run to 14, over 10: one call.
    assert sent == 1
    summary = run["summary"]
    assert (summary["rows"], summary["sent"]) == (1, 1)
    # A stopped run's summary shows its cost, as a finished run's does.
    assert summary["cost"] == ROW_TOKENS
    assert "1 row(s) answered (7 tokens, cost 7)" in summary["stopped"]
    assert tokens_written(tmp_path) == ROW_TOKENS


def test_a_limit_below_one_row_lets_only_the_first_call_pass_it(tmp_path: Path) -> None:
    with serve_agent(FaultConfig(latency_ms=50)) as agent:
        run = cli(tmp_path, agent, "--max-tokens", "6")
        assert agent.stats().requests_total == 1
    assert run["code"] == 7, run["stderr"]
    # The bound: over the limit by the first answered row alone, never by a wave of calls.
    assert tokens_written(tmp_path) == ROW_TOKENS


def test_rows_that_use_the_same_tokens_never_pass_the_budget(tmp_path: Path) -> None:
    limit = 100
    with serve_agent(FaultConfig(latency_ms=50)) as agent:
        run = cli(tmp_path, agent, "--max-tokens", str(limit))
        sent = agent.stats().requests_total
    assert run["code"] == 7, run["stderr"]
    # Each call goes while spent + (in flight + 1) x 7 <= 100, so the run stops at the last
    # whole row within the limit: 14 rows, 98 tokens.
    rows = limit // ROW_TOKENS
    assert sent == rows
    assert tokens_written(tmp_path) == rows * ROW_TOKENS
    summary = run["summary"]
    assert summary["rows"] == rows
    # Only the first call went alone: once a row's cost was known the rest went together.
    assert summary["peak_concurrency"] > 1
    # The message said when sending stopped counts the rows answered by then "so far"; the
    # final one counts the summary's rows.
    assert answered_counts(summary["stopped"]) == [(rows, False)]
    for count, so_far in answered_counts(run["stderr"]):
        assert count == rows or (so_far and count < rows)


def test_a_first_call_that_fails_or_is_retried_holds_the_others_only_until_it_settles(
    tmp_path: Path,
) -> None:
    # The first row fails for good; every other row's first attempt fails and is retried.
    faults = FaultConfig(fail_first=1, permanent={"BROKEN": 400})
    with serve_agent(faults) as agent:
        run = cli(tmp_path, agent, "--max-tokens", "10", first="BROKEN")
        sent = agent.stats().requests_total
    assert run["code"] == 7, run["stderr"]
    # One call at a time until an answer told a row's cost: the broken row (sent first, as the
    # input is read in order: one request), then the next row alone (its failed attempt and
    # its retry); one more row would pass 10 tokens. No other call went meanwhile.
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    failed = [r for r in rows if r["error"] is not None]
    answered = [r for r in rows if r["error"] is None]
    assert all(r["error"].startswith("[permanent]") and r["attempts"] == 1 for r in failed)
    assert [r["attempts"] for r in answered] == [2]
    assert sent == len(failed) + 2
    assert tokens_written(tmp_path) == ROW_TOKENS
    assert f"{len(rows)} row(s) answered (7 tokens" in run["summary"]["stopped"]


def test_an_agent_that_reports_no_usage_cannot_be_guarded_by_tokens(tmp_path: Path) -> None:
    with serve_agent(FaultConfig(latency_ms=50), minimal=True) as agent:  # no usage in replies
        run = cli(tmp_path, agent, "--max-tokens", "1000")
        sent = agent.stats().requests_total
    assert run["code"] == 7, run["stderr"]
    # Not counted as free: the run stops at the first answer that says nothing of its cost.
    assert sent == 1
    assert "answered without reporting its token usage, so max_tokens 1,000" in run["stderr"]
    assert "cannot be guarded" in run["summary"]["stopped"]
