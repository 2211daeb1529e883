"""Know the bill before paying it: `agentbatch estimate` and the budget guard, end to end.

The CLI runs as a real subprocess against the loopback demo agent over real HTTP (it reports
token usage), on the local engine, with the main example job."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch import file_lock
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from tests.support.triage import OPEN_TICKETS, TRIAGE, triage_cli_args


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def cli(
    tmp_path: Path, agent: AgentServer, command: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agentbatch",
            command,
            str(TRIAGE),
            *triage_cli_args(tmp_path / "out.parquet", agent.url),
            "--state-dir",
            str(tmp_path / "state"),
            "--project-dir",
            str(tmp_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def output_rows(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "out.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


def paid_once(agent: AgentServer, total: int) -> None:
    """The agent saw exactly `total` calls: with no faults, one per ticket answered (some
    tickets share a text, so the agent's per-text counts cannot tell tickets apart)."""
    assert agent.stats().requests_total == total


def test_estimate_sends_a_kept_sample_and_projects_the_rest(
    tmp_path: Path, agent: AgentServer
) -> None:
    found = as_json(cli(tmp_path, agent, "estimate", "--json", "--sample", "20", "--seed", "7"))
    assert (found["selected"], found["skipped"], found["reusable"]) == (OPEN_TICKETS, 0, 0)
    assert found["to_send"] == OPEN_TICKETS
    assert (found["sampled"], found["sample_ok"], found["remaining"]) == (20, 20, 217)
    per_row = found["input_tokens_per_row"]
    assert 0 < per_row["low"] <= per_row["mean"] <= per_row["high"]
    projected = found["projected_tokens"]["mean"]
    tokens_per_row = per_row["mean"] + found["output_tokens_per_row"]["mean"]
    assert projected == pytest.approx(217 * tokens_per_row, rel=1e-3)
    assert found["projected_wall_s"] > 0 and found["latency_ms"] > 0
    assert found["projected_cost"] is None  # no price declared
    # The sample's answers are kept: written to the target, never paid again.
    assert len(output_rows(tmp_path)) == 20
    paid_once(agent, 20)

    run = as_json(cli(tmp_path, agent, "run", "--json", "--show", "0"))["summary"]
    assert (run["skipped"], run["sent"]) == (20, 217)
    assert len(output_rows(tmp_path)) == OPEN_TICKETS
    paid_once(agent, OPEN_TICKETS)
    # The summary shows the estimate beside what was used.
    assert run["estimated_input_tokens"] == pytest.approx(217 * per_row["mean"], abs=1)
    used = run["input_tokens"] + run["output_tokens"]
    estimated = run["estimated_input_tokens"] + run["estimated_output_tokens"]
    assert abs(estimated - used) / used < 0.15


def test_estimate_counts_rows_the_checkpoint_answers_without_sending_them(
    tmp_path: Path, agent: AgentServer
) -> None:
    as_json(cli(tmp_path, agent, "run", "--json", "--limit", "50"))
    (tmp_path / "out.parquet").unlink()  # the target forgets; the checkpoint still has them
    found = as_json(cli(tmp_path, agent, "estimate", "--json", "--sample", "0"))
    assert (found["selected"], found["skipped"]) == (OPEN_TICKETS, 0)
    assert (found["reusable"], found["to_send"], found["sampled"]) == (50, OPEN_TICKETS - 50, 0)
    paid_once(agent, 50)


def test_a_row_budget_below_the_selection_sends_nothing(tmp_path: Path, agent: AgentServer) -> None:
    done = cli(tmp_path, agent, "run", "--max-rows", "100")
    assert done.returncode == 7, done.stderr
    assert "max_rows 100" in done.stderr and "nothing was sent" in done.stderr
    assert "237 row(s)" in done.stderr
    paid_once(agent, 0)
    # A refused run writes nothing, not even an empty output file.
    assert not (tmp_path / "out.parquet").exists()


def test_a_token_budget_below_the_estimate_sends_nothing(
    tmp_path: Path, agent: AgentServer
) -> None:
    found = as_json(cli(tmp_path, agent, "estimate", "--json", "--sample", "10", "--seed", "1"))
    projected = found["projected_tokens"]["mean"]
    done = cli(tmp_path, agent, "run", "--max-tokens", str(int(projected * 0.8)))
    assert done.returncode == 7, done.stderr
    assert "max_tokens" in done.stderr and "nothing was sent" in done.stderr
    paid_once(agent, 10)  # the sample only
    # The same run with room for its estimate goes through.
    as_json(cli(tmp_path, agent, "run", "--json", "--max-tokens", str(int(projected * 1.5))))
    paid_once(agent, OPEN_TICKETS)


def test_a_budget_reached_midway_stops_writes_what_it_paid_for_and_the_next_run_finishes(
    tmp_path: Path, agent: AgentServer
) -> None:
    budget = 2_000  # about 65 of the 237 open tickets, at ~31 tokens each
    done = cli(tmp_path, agent, "run", "--max-tokens", str(budget))
    assert done.returncode == 7, done.stderr
    assert "budget reached (max_tokens 2,000" in done.stderr
    assert "row(s) answered" in done.stderr
    rows = output_rows(tmp_path)
    used = sum(r["input_tokens"] + r["output_tokens"] for r in rows)
    # Stopped at the budget, within the calls in flight; every paid answer is written.
    assert 0.8 * budget <= used <= 1.2 * budget
    assert 0 < len(rows) < OPEN_TICKETS
    paid_once(agent, len(rows))

    rest = as_json(cli(tmp_path, agent, "run", "--json", "--show", "0"))["summary"]
    assert rest["skipped"] == len(rows)
    assert rest["sent"] == OPEN_TICKETS - len(rows)
    assert len(output_rows(tmp_path)) == OPEN_TICKETS
    paid_once(agent, OPEN_TICKETS)


def test_an_agent_that_rejects_every_row_stops_after_the_minimum_count(tmp_path: Path) -> None:
    with serve_agent(FaultConfig(permanent={"Classify": 400})) as agent:
        done = cli(tmp_path, agent, "run", "--no-progress")
        assert done.returncode == 7, done.stderr
        assert "failed for good" in done.stderr
        assert "the request contains Classify; it can never succeed" in done.stderr  # the agent's
        sent = agent.stats().requests_total
        # The minimum count (20), plus at most the calls in flight (16 at the start).
        assert 20 <= sent <= 20 + 16
        rows = output_rows(tmp_path)
        assert len(rows) == sent and all(r["error"].startswith("[permanent]") for r in rows)
        # A threshold of 1 never stops: a job that wants every row tried says so.
        done = cli(tmp_path, agent, "run", "--max-error-rate", "1", "--json", "--show", "0")
        assert json.loads(done.stdout)["summary"]["table_errors"] == OPEN_TICKETS


def test_prices_give_the_cost_of_estimates_and_runs(tmp_path: Path, agent: AgentServer) -> None:
    (tmp_path / "agentbatch.yml").write_text(
        "prices:\n  apps/triage-agent: {input_per_million: 2, output_per_million: 10}\n",
        encoding="utf-8",
    )
    found = as_json(cli(tmp_path, agent, "estimate", "--json", "--sample", "20", "--seed", "2"))
    assert found["price"] == {"input_per_million": 2.0, "output_per_million": 10.0}
    projected_in = found["projected_input_tokens"]["mean"]
    projected_out = found["projected_output_tokens"]["mean"]
    assert found["projected_cost"]["mean"] == pytest.approx(
        (2 * projected_in + 10 * projected_out) / 1e6, rel=1e-3
    )
    # A cost budget below the estimate sends nothing; one above it lets the run through.
    below = found["projected_cost"]["mean"] * 0.5
    done = cli(tmp_path, agent, "run", "--max-cost", f"{below:.8f}")
    assert done.returncode == 7 and "max_cost" in done.stderr, done.stderr
    run = as_json(cli(tmp_path, agent, "run", "--json", "--show", "0"))["summary"]
    cost = (2 * run["input_tokens"] + 10 * run["output_tokens"]) / 1e6
    assert run["cost"] == pytest.approx(cost, rel=1e-4)
    assert run["estimated_cost"] > 0


def test_estimate_prints_a_table(tmp_path: Path, agent: AgentServer) -> None:
    done = cli(tmp_path, agent, "estimate", "--sample", "5")
    assert done.returncode == 0, done.stderr
    for label in ("to send", "input tokens / row", "projected tokens", "projected wall time"):
        assert label in done.stdout


def test_bad_budget_flags_are_one_line_errors(tmp_path: Path, agent: AgentServer) -> None:
    done = cli(tmp_path, agent, "run", "--max-error-rate", "1.5")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "--max-error-rate (setting max_error_rate): is a share of rows, at most 1, not 1.5"
    ]
    done = cli(tmp_path, agent, "run", "--max-rows", "0")
    assert done.returncode == 2 and "--max-rows (setting max_rows): must be more than 0" in (
        done.stderr
    )
    paid_once(agent, 0)


def test_a_cost_budget_without_a_price_is_a_configuration_error(
    tmp_path: Path, agent: AgentServer
) -> None:
    done = cli(tmp_path, agent, "run", "--max-cost", "5")
    assert done.returncode == 3
    assert "max_cost needs a price for endpoint 'apps/triage-agent'" in done.stderr
    paid_once(agent, 0)


def test_the_plan_of_a_refresh_shows_where_it_continues(tmp_path: Path, agent: AgentServer) -> None:
    """`plan --full-refresh` prints the SQL the run would send: after `estimate --full-refresh`
    began a refresh, the inputs leave out the keys answered since then, and the plan says so.
    Before, it printed a refresh of every row while the run sent the rest only."""
    as_json(cli(tmp_path, agent, "run", "--json"))
    fresh = cli(tmp_path, agent, "plan", "--full-refresh")
    assert fresh.returncode == 0, fresh.stderr
    assert "refresh:" not in fresh.stdout
    assert as_json(cli(tmp_path, agent, "estimate", "--full-refresh", "--sample", "5", "--json"))
    continuing = cli(tmp_path, agent, "plan", "--full-refresh")
    assert continuing.returncode == 0, continuing.stderr
    line = next(x for x in continuing.stdout.splitlines() if x.startswith("refresh:"))
    began = line.split("begun ")[1][:10]  # the date of its ISO time, as the SQL's literal has it
    assert "keys whose row answers this request since then are not sent" in line
    sql_then = fresh.stdout.split("-- step", 1)[1]
    sql_now = continuing.stdout.split("-- step", 1)[1]
    assert sql_now != sql_then and began in sql_now and began not in sql_then
    refresh = as_json(cli(tmp_path, agent, "run", "--full-refresh", "--json"))["summary"]
    assert refresh["skipped"] == 5 and refresh["rows"] == OPEN_TICKETS - 5
    # That refresh finished: the next one starts afresh, and the plan says nothing more.
    assert "refresh:" not in cli(tmp_path, agent, "plan", "--full-refresh").stdout


def test_plan_of_a_refresh_while_a_run_holds_the_checkpoint(
    tmp_path: Path, agent: AgentServer
) -> None:
    """`plan` takes no lock and changes nothing: while a run holds the output's checkpoint,
    `plan --full-refresh` still shows the continuation, and leaves the ledger as it was (a plan
    beside a scheduled run never makes it fail)."""
    as_json(cli(tmp_path, agent, "estimate", "--full-refresh", "--sample", "5", "--json"))
    (ledger,) = (tmp_path / "state").glob("*.ledger.sqlite")
    before = ledger.read_bytes()
    held = file_lock.take(Path(f"{ledger}.lock"), "a run")
    try:
        planned = cli(tmp_path, agent, "plan", "--full-refresh")
    finally:
        assert held is not None
        held.close()
    assert planned.returncode == 0, planned.stderr
    assert "refresh:   continues the one begun" in planned.stdout
    assert ledger.read_bytes() == before


FAILING_JOB = """\
name: half_failing
source:
  table: main.s.questions
  key: id
  columns: [question]
request: question
agent:
  endpoint: apps/triage-agent
output:
  table: main.s.answers
  mode: merge
"""


def test_a_sample_with_errors_projects_the_rows_expected_to_fail_apart(tmp_path: Path) -> None:
    """Rows the agent refuses (HTTP 400, no usage) are not projected at the answered rows' mean
    tokens and cost: the estimate counts the rows expected to fail, says their cost is unknown,
    and gives every row at the answered rows' mean beside it. It projected all 80 remaining rows
    at the answered mean, as if none would fail."""
    lines = ["id,question"] + [
        f"{i},{'PERMANENT_ERROR ' if i % 2 else ''}where is my order number {i}?"
        for i in range(100)
    ]
    (tmp_path / "questions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "job.yml").write_text(FAILING_JOB, encoding="utf-8")
    (tmp_path / "agentbatch.yml").write_text(
        "prices:\n  apps/triage-agent: {input_per_million: 2, output_per_million: 10}\n",
        encoding="utf-8",
    )
    with serve_agent() as server:
        done = subprocess.run(
            [sys.executable, "-m", "agentbatch", "estimate", str(tmp_path / "job.yml"),
             "--table", f"main.s.questions={tmp_path / 'questions.csv'}",
             "--table", f"main.s.answers={tmp_path / 'out.parquet'}",
             "--endpoint", f"apps/triage-agent={server.url}",
             "--state-dir", str(tmp_path / "state"), "--project-dir", str(tmp_path),
             "--json", "--sample", "20", "--seed", "3"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    found = as_json(done)
    ok, errors, remaining = found["sample_ok"], found["sample_errors"], found["remaining"]
    assert (found["sampled"], remaining) == (20, 80) and ok and errors
    per_row = found["input_tokens_per_row"]["mean"] + found["output_tokens_per_row"]["mean"]
    assert found["projected_tokens"]["mean"] == pytest.approx(80 * ok / 20 * per_row, rel=1e-3)
    assert found["error_input_tokens_per_row"] is None  # a 400 reports no usage
    assert found["projected_errors"]["mean"] == pytest.approx(80 * errors / 20, abs=1e-3)
    assert found["projected_tokens_all_answered"]["mean"] == pytest.approx(80 * per_row, rel=1e-3)
    tokens = found["projected_tokens"]
    assert tokens["low"] <= tokens["mean"] <= tokens["high"]
    cost, every = found["projected_cost"]["mean"], found["projected_cost_all_answered"]["mean"]
    assert cost == pytest.approx(every * ok / 20, rel=1e-3)
    assert any(
        f"{errors} of 20 sampled row(s) failed" in note and "cost is unknown" in note
        for note in found["notes"]
    ), found["notes"]


@pytest.mark.parametrize("retry_errors", [False, True])
def test_sampled_rows_that_failed_transiently_are_still_to_pay(
    tmp_path: Path, retry_errors: bool
) -> None:
    """A sampled row that failed transiently ([transient] HTTP 503) is sent again by the next
    run, as is every failed one with --retry-errors: `remaining` counts them, and it is what
    the next run pays for. It counted only the rows not sampled, as if those were done."""
    lines = ["id,question"] + [
        f"{i},{'BUSY ' if i % 3 == 0 else ''}{'PERMANENT_ERROR ' if i % 3 == 1 else ''}"
        f"where is my order number {i}?"
        for i in range(60)
    ]
    (tmp_path / "questions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "job.yml").write_text(
        FAILING_JOB.replace(
            "  endpoint: apps/triage-agent\n", "  endpoint: apps/triage-agent\n  max_retries: 0\n"
        ),
        encoding="utf-8",
    )
    options: dict[str, Any] = {
        "tables": {
            "main.s.questions": tmp_path / "questions.csv",
            "main.s.answers": tmp_path / "out.parquet",
        },
        "state_dir": tmp_path / "state",
        "project_dir": tmp_path,
        "progress": False,
        "retry_errors": retry_errors,
    }
    # BUSY rows: HTTP 503 at every attempt, a transient failure; PERMANENT_ERROR rows: HTTP 400.
    faults = FaultConfig(permanent={"BUSY": 503, "PERMANENT_ERROR": 400})
    with serve_agent(faults) as server:
        options["endpoints"] = {"apps/triage-agent": server.url}
        found = agentbatch.estimate(tmp_path / "job.yml", sample=20, seed=3, **options)
        errors = [r["error"] for r in output_rows(tmp_path) if r["error"] is not None]
        transient = sum(1 for error in errors if error.startswith("[transient] "))
        failed = len(errors)
        assert found.sampled == 20 and 0 < transient < failed < 20
        again = failed if retry_errors else transient
        assert found.remaining == 40 + again
        assert found.projected_errors is not None
        paid = server.stats().requests_total
        with agentbatch.run(tmp_path / "job.yml", **options) as result:
            summary = dict(result.summary)
        # What the estimate said was left is what the run paid for.
        assert summary["sent"] == server.stats().requests_total - paid == found.remaining
