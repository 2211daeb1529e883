"""`agent.fail_on_error` over a history of runs: the job fails while any selected row is a
failure, this run's or one the table holds from an earlier run.

The agent fails some rows transiently, then recovers; the next runs are limited (`--limit`), as
a schedule working through a backlog is. Before the fix, a limited run that answered only rows
that succeeded exited 0 while the table still held transient failures for selected rows it did
not reach (only permanent failures of done rows were counted as held).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentbatch.cli.main import main as cli_main
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig

FLAKY = FaultConfig(permanent={"FLAKY": 500, "PERMANENT_ERROR": 400})
STEADY = FaultConfig(permanent={"PERMANENT_ERROR": 400})


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent(FLAKY) as server:
        yield server


class Project:
    def __init__(self, root: Path, agent: AgentServer, mode: str) -> None:
        self.root = root
        self.agent = agent
        self.mode = mode
        self.where: str | None = None
        (root / "reviews.csv").write_text(
            "review_id,text\n1,fine one\n2,FLAKY two\n3,FLAKY three\n4,FLAKY four\n5,fine five\n"
        )

    def run(self, *extra: str) -> tuple[int, dict[str, Any]]:
        job = self.root / "jobs" / "reviews.yml"
        job.parent.mkdir(exist_ok=True)
        where = f', where: "{self.where}"' if self.where else ""
        job.write_text(
            "name: reviews\n"
            f"source: {{table: main.s.reviews, key: review_id, columns: [text]{where}}}\n"
            "request: \"concat('Review: ', text)\"\n"
            "agent: {endpoint: apps/reviewer, max_retries: 0, fail_on_error: true}\n"
            f"output: {{table: main.s.answers, mode: {self.mode}}}\n"
        )
        args = [
            "run", str(job), "--json", "--no-progress", "--show", "0",
            "--table", f"main.s.reviews={self.root / 'reviews.csv'}",
            "--table", f"main.s.answers={self.root / 'answers.parquet'}",
            "--endpoint", f"apps/reviewer={self.agent.url}",
            "--state-dir", str(self.root / "state"), "--project-dir", str(self.root),
        ]  # fmt: skip
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main([*args, *extra])
        return code, json.loads(out.getvalue())["summary"]

    def failures(self) -> list[int]:
        rows = pq.read_table(self.root / "answers.parquet").to_pylist()
        assert len({r["review_id"] for r in rows}) == len(rows) == 5
        return sorted(r["review_id"] for r in rows if r["error"] is not None)


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_a_limited_run_fails_while_rows_it_did_not_reach_are_failures(
    tmp_path: Path, agent: AgentServer, mode: str
) -> None:
    p = Project(tmp_path, agent, mode)
    code, summary = p.run()
    assert (code, summary["errors"]) == (1, 3)
    assert summary["failed"].startswith("3 selected row(s) failed (3 this run, 0 held")
    assert p.failures() == [2, 3, 4]
    agent.configure(STEADY)  # the agent recovers; a schedule works through the backlog
    for left in ([3, 4], [4]):
        code, summary = p.run("--limit", "1")
        assert (code, summary["rows"], summary["errors"]) == (1, 1, 0)
        assert summary["failed"].startswith(
            f"{len(left)} selected row(s) failed (0 this run, {len(left)} held from earlier"
        )
        assert p.failures() == left
    # Failures the job does not select are not its failures.
    p.where = "review_id <> 4"
    code, summary = p.run()
    assert (code, summary["rows"]) == (0, 0)
    p.where = None
    code, summary = p.run("--limit", "1")
    assert (code, summary["rows"], summary["errors"]) == (0, 1, 0)
    assert p.failures() == []
    code, summary = p.run()  # nothing left to fail
    assert (code, summary["skipped"]) == (0, 5)


def test_held_permanent_failures_and_this_runs_are_counted_once(
    tmp_path: Path, agent: AgentServer
) -> None:
    p = Project(tmp_path, agent, "merge")
    (tmp_path / "reviews.csv").write_text(
        "review_id,text\n1,PERMANENT_ERROR one\n2,FLAKY two\n3,fine three\n"
    )
    code, summary = p.run()
    assert summary["failed"].startswith("2 selected row(s) failed (2 this run, 0 held")
    code, summary = p.run()  # the transient one fails again, the permanent one is held
    assert code == 1
    assert summary["failed"].startswith("2 selected row(s) failed (1 this run, 1 held")
