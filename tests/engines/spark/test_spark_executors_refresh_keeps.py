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

import pytest

from agentbatch.errors import AgentError
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from tests.engines.spark.file_project import (
    FAILING,
    HEALTHY,
    TEXTS,
    Project,
    refresh_keeps_and_continues,
)

JOB = """\
name: ex_keeps
source: {{table: main.s.src, key: id, columns: [txt]}}
request: "concat('Q: ', txt)"
agent: {{endpoint: apps/keeps, max_retries: 1, max_concurrency: 2}}
output: {{table: main.s.out, mode: {mode}}}
"""


def keeps(
    tmp_path: Path, agent: AgentServer, texts: dict[int, str], mode: str = "merge"
) -> Project:
    """One job (`JOB` in `mode`) over `texts`, its output a parquet folder."""
    return Project(tmp_path, agent, texts, JOB.format(mode=mode), "keeps.yml")


def utc(moment: datetime) -> datetime:
    """An `answered_at` read from the parquet output (the session runs in UTC), as aware."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_a_transient_failure_in_a_refresh_on_the_executors_keeps_the_earlier_answer(
    tmp_path: Path, make_engine: Any, mode: str
) -> None:
    make_engine()  # the suite's session is the active one: the runs use it
    with serve_agent(HEALTHY) as agent:
        counted = {"sent": 5, "errors": 3, "rows_written": 3}
        refresh_keeps_and_continues(keeps(tmp_path, agent, TEXTS, mode), "executors", counted)


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
        project = keeps(tmp_path, agent, texts)
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
        project = keeps(tmp_path, agent, texts, mode)
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
