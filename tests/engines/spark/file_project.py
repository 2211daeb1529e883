"""A job over a CSV file on the spark target, its output a parquet folder, its agent the loopback
one: the runs of the refresh-keeps tests (over REST, on the driver or the executors, or pushed
down through the registered ai_query) and what they read back (the rows, the calls per row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import agentbatch
from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key

HEALTHY = FaultConfig()
FAILING = FaultConfig(permanent={"OUTAGE": 503, "GONE": 400})
TEXTS = {1: "fine", 2: "OUTAGE two", 3: "fine three", 4: "OUTAGE four", 5: "GONE five"}
PUSH_DOWN = "push-down"


class Project:
    """The job `job` (jobs/`name`) over `texts`, a row `id,txt` each in src.csv."""

    def __init__(
        self, tmp_path: Path, agent: AgentServer, texts: dict[int, str], job: str, name: str
    ) -> None:
        self.tmp_path, self.agent, self.texts = tmp_path, agent, texts
        self.source, self.out = tmp_path / "src.csv", tmp_path / "out.parquet"
        self.source.write_text("id,txt\n" + "".join(f"{k},{t}\n" for k, t in texts.items()))
        self.job = tmp_path / "jobs" / name
        self.job.parent.mkdir()
        self.job.write_text(job)

    def options(self, place: str) -> dict[str, Any]:
        """`agentbatch.run`'s options: the job's endpoint `pdmodel` pushed down (`place`
        PUSH_DOWN, one retry a call), or `apps/keeps` called over REST on `place` (the driver
        or the executors, over two partitions)."""
        settings: dict[str, Any] = {"warehouse_dir": str(self.tmp_path / "wh")}
        endpoints = {}
        if place == PUSH_DOWN:
            url = f"{self.agent.url}/serving-endpoints/pdmodel/invocations"
            settings |= {"ai_query_endpoints": {"pdmodel": url}, "max_retries": 1}
        else:
            endpoints = {"endpoints": {"apps/keeps": self.agent.url}}
            settings |= {"rest_fallback_on": place, "partitions": 2}
        return {
            "target": "spark",
            "tables": {"main.s.src": self.source, "main.s.out": self.out},
            **endpoints,
            "state_dir": self.tmp_path / "state",
            "project_dir": self.tmp_path,
            "settings": settings,
            "progress": False,
        }

    def run(self, place: str = "executors", **options: Any) -> dict[str, Any]:
        """A run's summary, by the strategy `place` asks for. A push-down run reads the output
        back after it (one row per key)."""
        with agentbatch.run(self.job, **self.options(place), **options) as result:
            summary = dict(result.summary)
        if place == PUSH_DOWN:
            assert summary["strategy"] == "push-down"
            self.rows()
        else:
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


def refresh_keeps_and_continues(project: Project, place: str, counted: dict[str, int]) -> None:
    """Over TEXTS: a `--full-refresh` whose calls for 2 and 4 fail transiently (a 503) keeps
    their earlier answers, 5's permanent failure replaces its answer, 1 and 3 are answered again;
    the refresh's summary counts the kept rows and `counted`. The next plain run asks exactly 2
    and 4 again, and the one after it sends nothing (the refresh finished)."""
    agent = project.agent
    project.run(place)
    before = project.rows()
    assert all(r["error"] is None for r in before.values())

    agent.configure(FAILING)
    refresh = project.run(place, full_refresh=True)
    rows = project.rows()
    for key in (2, 4):  # the earlier answer, as it was
        assert rows[key]["error"] is None, rows[key]
        assert rows[key]["response"] == before[key]["response"]
        assert rows[key]["answered_at"] == before[key]["answered_at"]
    assert rows[5]["error"].startswith("[permanent] "), rows[5]  # replaces the answer
    for key in (1, 3):
        assert rows[key]["answered_at"] > before[key]["answered_at"]
    assert refresh["kept_previous_answer"] == 2, refresh
    assert {k: refresh[k] for k in counted} == counted, refresh

    agent.configure(HEALTHY)
    asked = project.calls()
    again = project.run(place)  # plain: it continues the refresh, for the kept rows only
    now = project.calls()
    assert {k for k in TEXTS if now[k] != asked[k]} == {2, 4}, again
    assert "kept_previous_answer" not in again, again
    rows = project.rows()
    for key in (2, 4):
        assert rows[key]["error"] is None
        assert rows[key]["answered_at"] > before[key]["answered_at"]
    last = project.run(place)  # the refresh finished
    assert last["sent"] == 0, last
