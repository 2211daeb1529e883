"""The main job end to end through the facade, `agentbatch.run(job, target="spark", ...)`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import agentbatch
from agentbatch.testing.agent_server import AgentServer

ROOT = Path(__file__).resolve().parents[3]
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"
TRIAGE = ROOT / "jobs" / "ticket_triage.yml"
OPEN_TICKETS = 237


def push_down_job(tmp_path: Path, agent: AgentServer, rows: int) -> tuple[Path, dict[str, Any]]:
    """A push-down job over a source of `rows` keys, its agent the demo agent's Model Serving
    route (`pdmodel`, called by ai_query), and `agentbatch.run`'s options for it on Spark."""
    source = tmp_path / "src.csv"
    source.write_text("id,txt\n" + "".join(f"{i},t{i}\n" for i in range(1, rows + 1)))
    job = tmp_path / "jobs" / "pd.yml"
    job.parent.mkdir()
    job.write_text(
        "name: pd\nsource: {table: main.s.src, key: id, columns: [txt]}\n"
        "request: \"concat('Q: ', txt)\"\nagent: {endpoint: pdmodel, api: chat}\n"
        "output: {table: main.s.out, mode: merge}\n"
    )
    options: dict[str, Any] = {
        "target": "spark",
        "tables": {"main.s.src": source, "main.s.out": tmp_path / "out.parquet"},
        "state_dir": tmp_path / "state",
        "project_dir": tmp_path,
        "settings": {
            "warehouse_dir": str(tmp_path / "wh"),
            "ai_query_endpoints": {"pdmodel": f"{agent.url}/serving-endpoints/pdmodel/invocations"},
        },
        "progress": False,
    }
    return job, options


def test_main_job_on_spark_answers_every_open_ticket_once(
    agent: AgentServer, tmp_path: Path, make_engine: Any
) -> None:
    make_engine()  # the suite's session is the active one: the run uses it
    out = tmp_path / "triage.parquet"

    def run(**options: Any) -> Any:
        return agentbatch.run(
            TRIAGE,
            target="spark",
            tables={"main.support.tickets": TICKETS, "main.support.ticket_triage": out},
            endpoints={"apps/triage-agent": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            settings={"warehouse_dir": str(tmp_path / "warehouse")},
            progress=False,
            **options,
        )

    dry = run(dry_run=True)  # no target yet: checked and counted, nothing created
    assert dry.summary["rows"] == OPEN_TICKETS and not out.exists()
    result = run()
    assert result.summary["strategy"] == "rest-fallback"
    assert result.summary["table_rows"] == OPEN_TICKETS
    assert result.summary["errors"] == 0
    rows = pq.read_table(out).to_pylist()
    assert len({r["ticket_id"] for r in rows}) == len(rows) == OPEN_TICKETS
    right = sum(r["response"]["label"] == r["label"] for r in rows)
    assert right / len(rows) > 0.85
    assert agent.stats().requests_total == OPEN_TICKETS
    again = run()
    assert again.summary["table_rows"] == OPEN_TICKETS
    assert agent.stats().requests_total == OPEN_TICKETS  # nothing re-sent
    assert run(dry_run=True).summary["rows"] == 0


def test_a_history_of_runs_leaves_every_key_once_in_the_target(
    agent: AgentServer, tmp_path: Path, make_engine: Any
) -> None:
    """Drop the target, change the mode, re-map the output, refresh: after each run the target
    holds every selected key exactly once, with the current fingerprint."""
    make_engine()
    overwrite = tmp_path / "jobs" / "triage_overwrite.yml"
    overwrite.parent.mkdir()
    overwrite.write_text(TRIAGE.read_text().replace("mode: merge", "mode: overwrite"))

    def run(job: Path, out: Path, **options: Any) -> dict[str, Any]:
        with agentbatch.run(
            job,
            target="spark",
            tables={"main.support.tickets": TICKETS, "main.support.ticket_triage": out},
            endpoints={"apps/triage-agent": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            settings={"warehouse_dir": str(tmp_path / "warehouse")},
            progress=False,
            **options,
        ) as result:
            keys = pq.read_table(out)["ticket_id"].to_pylist()
            assert sorted(keys) == sorted(set(keys)) and len(keys) == OPEN_TICKETS
            return dict(result.summary)

    first = tmp_path / "first.parquet"
    run(TRIAGE, first)
    if first.is_dir() and not first.is_symlink():
        shutil.rmtree(first)
    else:
        first.unlink()
    after_drop = run(TRIAGE, first)  # dropped: every row is written again, none restored
    assert after_drop["skipped"] == 0 and after_drop["rows"] == OPEN_TICKETS
    calls = agent.stats().requests_total
    second = tmp_path / "second.parquet"
    run(overwrite, second)  # another mode, another file: every row
    run(overwrite, second)  # and again: nothing is paid twice
    assert agent.stats().requests_total - calls <= OPEN_TICKETS
    settled = agent.stats().requests_total
    assert run(overwrite, second)["skipped"] == OPEN_TICKETS
    assert agent.stats().requests_total == settled
    run(overwrite, second, full_refresh=True)
    assert agent.stats().requests_total == settled + OPEN_TICKETS


def test_a_limited_push_down_run_calls_the_agent_for_its_rows_only(
    agent: AgentServer, tmp_path: Path, make_engine: Any
) -> None:
    """Spark's optimizer evaluated a deterministic ai_query below the statement's ORDER BY ...
    LIMIT: `--limit 3` called the agent for every row still to do and kept 3 answers (push-down
    keeps no checkpoint: the rest were paid for nothing)."""
    make_engine()
    job, options = push_down_job(tmp_path, agent, 20)

    def run(**more: Any) -> tuple[int, int]:
        before = agent.stats().requests_total
        with agentbatch.run(job, **options, **more) as result:
            assert result.summary["strategy"] == "push-down"
            return int(result.summary["rows"]), agent.stats().requests_total - before

    assert run(limit=3) == (3, 3)
    assert run(limit=3) == (3, 3)
    assert run(full_refresh=True, limit=2) == (2, 2)
