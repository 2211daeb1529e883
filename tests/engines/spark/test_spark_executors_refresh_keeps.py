"""A `--full-refresh` with the REST fallback on the executors (`rest_fallback_on: executors`)
keeps a row's earlier answer when its new call fails transiently (a 503 past the retries), as on
the driver (tests/reliability/test_refresh_keeps_answers.py): a permanent failure replaces the
answer; the summary counts the kept rows; the refresh stays unfinished for them and the next
plain run asks exactly them. And the refresh's state is one for both sides: a refresh stopped
with the calls on one side is continued, not paid again, with them on the other.

Runs through the public API on the local Spark session, file tables, the loopback agent."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.errors import AgentError
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key

HEALTHY = FaultConfig()
FAILING = FaultConfig(permanent={"OUTAGE": 503, "GONE": 400})
TEXTS = {1: "fine", 2: "OUTAGE two", 3: "fine three", 4: "OUTAGE four", 5: "GONE five"}
JOB = """\
name: ex_keeps
source: {{table: main.s.src, key: id, columns: [txt]}}
request: "concat('Q: ', txt)"
agent: {{endpoint: apps/keeps, max_retries: 1, max_concurrency: 2}}
output: {{table: main.s.out, mode: {mode}}}
"""


class Project:
    """One job (`JOB` in `mode`) over `texts`, its output a parquet folder."""

    def __init__(
        self, tmp_path: Path, agent: AgentServer, texts: dict[int, str], mode: str = "merge"
    ) -> None:
        self.tmp_path, self.agent, self.texts = tmp_path, agent, texts
        self.source, self.out = tmp_path / "src.csv", tmp_path / "out.parquet"
        self.source.write_text("id,txt\n" + "".join(f"{k},{t}\n" for k, t in texts.items()))
        self.job = tmp_path / "jobs" / "keeps.yml"
        self.job.parent.mkdir()
        self.job.write_text(JOB.format(mode=mode))

    def run(self, place: str = "executors", **options: Any) -> dict[str, Any]:
        with agentbatch.run(
            self.job,
            target="spark",
            tables={"main.s.src": self.source, "main.s.out": self.out},
            endpoints={"apps/keeps": self.agent.url},
            state_dir=self.tmp_path / "state",
            project_dir=self.tmp_path,
            settings={
                "warehouse_dir": str(self.tmp_path / "wh"),
                "rest_fallback_on": place,
                "partitions": 2,
            },
            progress=False,
            **options,
        ) as result:
            summary = dict(result.summary)
        assert summary["strategy"] != "push-down", summary
        return summary

    def rows(self) -> dict[int, dict[str, Any]]:
        rows = pq.read_table(self.out).to_pylist()
        by_key = {r["id"]: r for r in rows}
        assert len(by_key) == len(rows) == len(self.texts)  # one row per key
        return by_key

    def calls(self) -> dict[int, int]:
        made = self.agent.stats().requests_by_key
        return {k: made.get(request_key(f"Q: {t}"), 0) for k, t in self.texts.items()}


def utc(moment: datetime) -> datetime:
    """An `answered_at` read from the parquet output (the session runs in UTC), as aware."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_a_transient_failure_in_a_refresh_on_the_executors_keeps_the_earlier_answer(
    tmp_path: Path, make_engine: Any, mode: str
) -> None:
    make_engine()  # the suite's session is the active one: the runs use it
    with serve_agent(HEALTHY) as agent:
        project = Project(tmp_path, agent, TEXTS, mode)
        project.run()
        before = project.rows()
        assert all(r["error"] is None for r in before.values())

        agent.configure(FAILING)
        refresh = project.run(full_refresh=True)
        rows = project.rows()
        for key in (2, 4):  # the earlier answer, as it was
            assert rows[key]["error"] is None, rows[key]
            assert rows[key]["response"] == before[key]["response"]
            assert rows[key]["answered_at"] == before[key]["answered_at"]
        assert rows[5]["error"].startswith("[permanent] "), rows[5]  # replaces the answer
        for key in (1, 3):
            assert rows[key]["answered_at"] > before[key]["answered_at"]
        assert refresh["kept_previous_answer"] == 2, refresh
        assert (refresh["sent"], refresh["errors"], refresh["rows_written"]) == (5, 3, 3), refresh

        agent.configure(HEALTHY)
        asked = project.calls()
        again = project.run()  # plain: it continues the refresh, for the kept rows only
        now = project.calls()
        assert {k for k in TEXTS if now[k] != asked[k]} == {2, 4}, again
        assert "kept_previous_answer" not in again, again
        rows = project.rows()
        for key in (2, 4):
            assert rows[key]["error"] is None
            assert rows[key]["answered_at"] > before[key]["answered_at"]
        assert project.run()["sent"] == 0  # the refresh finished


@pytest.mark.parametrize("first", ["executors", "driver"])
def test_a_refresh_stopped_on_one_side_is_continued_on_the_other(
    tmp_path: Path, make_engine: Any, first: str
) -> None:
    """The refresh is recorded in the job output's ledger for both sides: the rows the stopped
    one answered (written to the target) are not paid again when `rest_fallback_on` changes."""
    make_engine()
    other = {"executors": "driver", "driver": "executors"}[first]
    texts = {k: f"text {k}" for k in range(24)}
    with serve_agent(FaultConfig(latency_ms=30)) as agent:
        project = Project(tmp_path, agent, texts)
        project.run(first)
        before = project.calls()
        began = datetime.now(timezone.utc)

        def revoke_after(calls: int) -> None:
            deadline = time.monotonic() + 120
            while agent.stats().requests_total < calls and time.monotonic() < deadline:
                time.sleep(0.005)
            agent.configure(FaultConfig(latency_ms=30, permanent={"Q: ": 403}))

        revoker = threading.Thread(
            target=revoke_after, args=(agent.stats().requests_total + 6,), daemon=True
        )
        revoker.start()
        with pytest.raises(AgentError, match="403"):
            project.run(first, full_refresh=True)
        revoker.join()
        agent.configure(FaultConfig(latency_ms=30))
        refreshed = {k for k, r in project.rows().items() if utc(r["answered_at"]) >= began}
        assert 0 < len(refreshed) < len(texts), refreshed

        stopped = project.calls()
        project.run(other, full_refresh=True)
        now = project.calls()
        # Only the rows the stopped refresh had not answered are asked, once each.
        assert {k: now[k] - stopped[k] for k in texts if now[k] != stopped[k]} == dict.fromkeys(
            set(texts) - refreshed, 1
        )
        assert all(utc(r["answered_at"]) >= began for r in project.rows().values())
        assert all(now[k] > before[k] for k in texts)  # every row refreshed
        # Finished: the next refresh pays every row again.
        assert project.run(first, full_refresh=True)["sent"] == len(texts)


@pytest.mark.parametrize("mode", ["merge", "overwrite"])
def test_a_refresh_whose_every_call_fails_transiently_leaves_the_table_as_it_was(
    tmp_path: Path, make_engine: Any, mode: str
) -> None:
    """Nothing to write (every answer kept): an overwrite must not replace the table with no
    rows, nor a merge touch it."""
    make_engine()
    texts = {k: f"OUTAGE {k}" for k in range(1, 5)}
    with serve_agent(HEALTHY) as agent:
        project = Project(tmp_path, agent, texts, mode)
        project.run()
        before = project.rows()

        agent.configure(FAILING)
        refresh = project.run(full_refresh=True)
        assert project.rows() == before
        assert refresh["kept_previous_answer"] == len(texts), refresh
        assert refresh["rows_written"] == 0, refresh

        agent.configure(HEALTHY)
        again = project.run()  # the refresh goes on: every row is asked again
        assert again["sent"] == len(texts), again
        assert all(r["answered_at"] > before[k]["answered_at"] for k, r in project.rows().items())
