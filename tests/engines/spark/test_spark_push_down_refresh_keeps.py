"""A push-down `--full-refresh` on the spark target (the registered ai_query, file tables) keeps
a row's earlier answer when its new call fails transiently (a 503 past ai_query's retries), as
the REST fallback does (tests/reliability/test_refresh_keeps_answers.py): a permanent failure
replaces the answer; the refresh stays unfinished for the kept rows and the next plain run asks
exactly them. In each mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key

HEALTHY = FaultConfig()
FAILING = FaultConfig(permanent={"OUTAGE": 503, "GONE": 400})
TEXTS = {1: "fine", 2: "OUTAGE two", 3: "fine three", 4: "OUTAGE four", 5: "GONE five"}
JOB = """\
name: pd_keeps
source: {{table: main.s.src, key: id, columns: [txt]}}
request: "concat('Q: ', txt)"
agent: {{endpoint: pdmodel, api: chat}}
output: {{table: main.s.out, mode: {mode}}}
"""


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_a_transient_failure_in_a_push_down_refresh_keeps_the_earlier_answer(
    tmp_path: Path, make_engine: Any, mode: str
) -> None:
    make_engine()  # the suite's session is the active one: the runs use it
    source, out = tmp_path / "src.csv", tmp_path / "out.parquet"
    source.write_text("id,txt\n" + "".join(f"{k},{t}\n" for k, t in TEXTS.items()))
    job = tmp_path / "jobs" / "pd.yml"
    job.parent.mkdir()
    job.write_text(JOB.format(mode=mode))
    with serve_agent(HEALTHY) as agent:
        url = f"{agent.url}/serving-endpoints/pdmodel/invocations"

        def run(**options: Any) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
            with agentbatch.run(
                job,
                target="spark",
                tables={"main.s.src": source, "main.s.out": out},
                state_dir=tmp_path / "state",
                project_dir=tmp_path,
                settings={
                    "warehouse_dir": str(tmp_path / "wh"),
                    "ai_query_endpoints": {"pdmodel": url},
                    "max_retries": 1,
                },
                progress=False,
                **options,
            ) as result:
                summary = dict(result.summary)
            assert summary["strategy"] == "push-down"
            rows = pq.read_table(out).to_pylist()
            by_key = {r["id"]: r for r in rows}
            assert len(by_key) == len(rows) == len(TEXTS)  # one row per key
            return summary, by_key

        def calls() -> dict[int, int]:
            made = agent.stats().requests_by_key
            return {k: made.get(request_key(f"Q: {t}"), 0) for k, t in TEXTS.items()}

        _, before = run()
        assert all(r["error"] is None for r in before.values())
        agent.configure(FAILING)
        refresh, rows = run(full_refresh=True)
        for key in (2, 4):  # the earlier answer, as it was
            assert rows[key]["error"] is None, rows[key]
            assert rows[key]["response"] == before[key]["response"]
            assert rows[key]["answered_at"] == before[key]["answered_at"]
        assert rows[5]["error"].startswith("[permanent] "), rows[5]  # replaces the answer
        for key in (1, 3):
            assert rows[key]["answered_at"] > before[key]["answered_at"]
        assert refresh["kept_previous_answer"] == 2, refresh
        assert (refresh["sent"], refresh["errors"]) == (5, 3), refresh

        agent.configure(HEALTHY)
        asked = calls()
        again, rows = run()  # plain: it continues the refresh, for the kept rows only
        now = calls()
        assert {k for k in TEXTS if now[k] != asked[k]} == {2, 4}, again
        assert "kept_previous_answer" not in again, again
        for key in (2, 4):
            assert rows[key]["error"] is None
            assert rows[key]["answered_at"] > before[key]["answered_at"]
        last, _ = run()  # the refresh finished
        assert last["sent"] == 0, last
