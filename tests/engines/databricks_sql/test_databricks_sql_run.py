"""The example jobs end to end through `agentbatch.run(..., target="databricks-sql")`, the unmodified
connector and the loopback warehouse: push-down `ai_query` answered by the demo agent's Model
Serving route, and the Apps agent through the REST fallback, including a kill mid-write."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import agentbatch
from agentbatch.engines.databricks_sql.engine import DatabricksSQLEngine
from agentbatch.errors import ConfigError, EngineError
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.fake_workspace import serve_workspace
from tests.support.databricks_env import isolate
from tests.support.warehouse.agents import slow_agent
from tests.support.warehouse.duckdb_executor import DuckDBExecutor
from tests.support.warehouse.server import Warehouse, serve_warehouse
from tests.support.warehouse.service import WarehouseSettings

ROOT = Path(__file__).resolve().parents[3]
TICKETS_CSV = ROOT / "agentbatch" / "data" / "support_tickets.csv"
SUMMARISE = ROOT / "jobs" / "summarise_tickets.yml"
TRIAGE = ROOT / "jobs" / "ticket_triage.yml"
ALL_TICKETS = 300
OPEN_TICKETS = 237
TOKEN = "dapi-run-test-token"


def serving_ai_query(agent_url: str) -> Any:
    """`ai_query` inside the warehouse: a chat call to the demo agent's Model Serving route."""

    client = httpx.Client(base_url=agent_url, timeout=30)  # pooled keep-alive connections

    def ai_query(endpoint: str, request: Any, **named: Any) -> str:
        body = {
            "messages": [{"role": "user", "content": request}],
            **named.get("modelParameters", {}),
        }
        reply = client.post(f"/serving-endpoints/{endpoint}/invocations", json=body)
        reply.raise_for_status()
        content: str = reply.json()["choices"][0]["message"]["content"]
        return content

    return ai_query


@pytest.fixture(autouse=True)
def isolated_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, token=TOKEN)


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


@pytest.fixture
def warehouse(
    tmp_path: Path, agent: AgentServer, request: pytest.FixtureRequest
) -> Iterator[Warehouse]:
    """The loopback warehouse with the tickets; `indirect` parameter: its session time zone."""
    volumes = tmp_path / "volumes"
    raw = volumes / "main" / "support" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(TICKETS_CSV, raw / "support_tickets.csv")
    with (
        DuckDBExecutor(
            ai_query=serving_ai_query(agent.url),
            volumes_dir=volumes,
            ai_query_concurrency=8,
            time_zone=getattr(request, "param", "UTC"),
        ) as executor,
        serve_warehouse(executor, token=TOKEN, volumes_dir=volumes) as wh,
    ):
        load_tickets(wh)
        yield wh


def load_tickets(wh: Warehouse) -> None:
    import databricks.sql

    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA main.support")
        cur.execute(
            "CREATE TABLE main.support.tickets AS SELECT * FROM "
            "read_files('/Volumes/main/support/raw/support_tickets.csv', format => 'csv')"
        )


def target_settings(wh: Warehouse) -> dict[str, Any]:
    return {"host": f"http://{wh.host}:{wh.port}", "warehouse_id": wh.warehouse_id}


@pytest.fixture
def run_job(warehouse: Warehouse, agent: AgentServer, tmp_path: Path) -> Iterator[Any]:
    """`run_job(job, **options)`: agentbatch.run on the loopback warehouse. The engines of the
    runs are closed before the warehouse stops (an open connector session retries its close
    against a stopped server for minutes)."""
    results: list[Any] = []

    def run(job: Path, **options: Any) -> Any:
        options.setdefault("settings", target_settings(warehouse))
        result = agentbatch.run(
            job,
            target="databricks-sql",
            project_dir=tmp_path,
            state_dir=tmp_path / "state",
            progress=False,
            **options,
        )
        results.append(result)
        return result

    yield run
    for result in results:
        if result.engine is not None:
            result.engine.close()


def test_push_down_job_runs_ai_query_in_the_warehouse(
    warehouse: Warehouse, agent: AgentServer, run_job: Any
) -> None:
    result = run_job(SUMMARISE)
    assert result.summary["strategy"] == "push-down"
    assert result.summary["table_rows"] == ALL_TICKETS
    assert result.summary["table_errors"] == 0
    assert agent.stats().requests_total == ALL_TICKETS
    merge = next(s for s in warehouse.statements if s.startswith("MERGE INTO"))
    assert "ai_query('databricks-meta-llama-3-3-70b-instruct'" in merge
    assert "modelParameters => NAMED_STRUCT('max_tokens', 128, 'temperature', 0.0)" in merge
    rows = result.to_arrow().to_pylist()
    assert len({r["ticket_id"] for r in rows}) == ALL_TICKETS
    assert all(r["response"] for r in rows)
    again = run_job(SUMMARISE)  # merge is incremental: nothing is asked twice
    assert again.summary["table_rows"] == ALL_TICKETS
    assert agent.stats().requests_total == ALL_TICKETS


def test_a_dry_run_checks_the_selection_on_the_warehouse_before_and_after_a_run(
    warehouse: Warehouse, agent: AgentServer, run_job: Any
) -> None:
    # Mode merge, no target yet: the dry run's checks must not read it, nor create it.
    loaded = len(warehouse.statements)
    before = run_job(SUMMARISE, dry_run=True).summary
    assert before["rows"] == ALL_TICKETS and "null_keys" not in before
    sent = warehouse.statements[loaded:]
    assert any("`null_keys`" in s for s in sent)  # the run's checks ran
    assert not any(s.startswith(("CREATE", "MERGE", "INSERT")) for s in sent)
    run_job(SUMMARISE)
    after = run_job(SUMMARISE, dry_run=True).summary
    assert after["rows"] == 0
    assert agent.stats().requests_total == ALL_TICKETS


def test_a_push_down_dry_run_counts_what_the_run_would_send_in_every_mode(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """The dry run counts the selection the push-down statement embeds (it counted every row of
    an overwrite job whose target already held all of them, and ignored --replace-target)."""
    overwrite = tmp_path / "jobs" / "summarise_overwrite.yml"
    overwrite.parent.mkdir()
    overwrite.write_text(SUMMARISE.read_text().replace("mode: merge", "mode: overwrite"))
    assert "mode: overwrite" in overwrite.read_text()
    assert run_job(overwrite, dry_run=True).summary["rows"] == ALL_TICKETS
    run_job(overwrite, limit=10)
    assert agent.stats().requests_total == 10
    assert run_job(overwrite, dry_run=True).summary["rows"] == ALL_TICKETS - 10
    assert run_job(overwrite, dry_run=True, replace_target=True).summary["rows"] == ALL_TICKETS
    run_job(overwrite)
    assert agent.stats().requests_total == ALL_TICKETS  # what the dry run said: 290 more
    assert run_job(overwrite, dry_run=True).summary["rows"] == 0
    assert run_job(overwrite, dry_run=True, full_refresh=True).summary["rows"] == ALL_TICKETS


# West of UTC a start time read in the session's zone would come after the sample's answers.
@pytest.mark.parametrize("warehouse", ["UTC", "America/Los_Angeles"], indirect=True)
def test_push_down_estimate_samples_through_ai_query_and_keeps_the_answers(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    found = agentbatch.estimate(
        SUMMARISE,
        target="databricks-sql",
        settings=target_settings(warehouse),
        project_dir=tmp_path,
        state_dir=tmp_path / "state",
        sample=10,
        seed=3,
    )
    assert (found.strategy, found.to_send, found.sampled) == ("push-down", ALL_TICKETS, 10)
    assert (found.sample_ok, found.remaining) == (10, ALL_TICKETS - 10)
    assert found.projected_wall_s is not None and found.projected_wall_s > 0
    assert found.input_tokens_per_row is None  # ai_query reports no usage per row
    assert any("no token usage" in note for note in found.notes)
    # The sample went through the engine's ai_query: the push-down MERGE, restricted to its keys.
    merge = next(s for s in warehouse.statements if s.startswith("MERGE INTO"))
    assert "ai_query('databricks-meta-llama-3-3-70b-instruct'" in merge
    assert "IN (" in merge
    assert agent.stats().requests_total == 10
    result = run_job(SUMMARISE)  # the rest; the sample's answers are kept, not asked again
    assert result.summary["skipped"] == 10
    assert result.summary["table_rows"] == ALL_TICKETS
    assert agent.stats().requests_total == ALL_TICKETS


@pytest.mark.parametrize("job", [SUMMARISE, TRIAGE])
def test_a_run_over_its_row_budget_sends_nothing_and_creates_nothing(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, job: Path
) -> None:
    from agentbatch.errors import BudgetError

    selected = ALL_TICKETS if job == SUMMARISE else OPEN_TICKETS
    endpoints = {"apps/triage-agent": agent.url} if job == TRIAGE else {}
    settings = {**target_settings(warehouse), "max_rows": selected - 1}
    before = len(warehouse.statements)
    with pytest.raises(BudgetError, match=f"would send {selected} row"):
        run_job(job, endpoints=endpoints, settings=settings)
    assert agent.stats().requests_total == 0
    # Refused before anything was written: not even the empty target (push-down and REST).
    run = warehouse.statements[before:]
    assert run and not [s for s in run if s.startswith(("MERGE", "CREATE", "INSERT"))]
    result = run_job(job, endpoints=endpoints, settings={**settings, "max_rows": selected})
    assert result.summary["table_rows"] == selected
    assert agent.stats().requests_total == selected


@pytest.mark.parametrize("staging", ["json-parameter", "volume"])
def test_apps_agent_job_runs_through_the_rest_fallback(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, staging: str
) -> None:
    endpoints = {"apps/triage-agent": agent.url}
    extra = {"staging_volume": "/Volumes/main/support/staging"} if staging == "volume" else {}
    warehouse.create_volume("main.support.staging")
    result = run_job(TRIAGE, endpoints=endpoints, settings={**target_settings(warehouse), **extra})
    assert result.summary["strategy"] == "rest-fallback"
    assert result.summary["table_rows"] == OPEN_TICKETS
    assert result.summary["errors"] == 0
    rows = result.to_arrow().to_pylist()
    assert len({r["ticket_id"] for r in rows}) == len(rows) == OPEN_TICKETS
    right = sum(r["response"]["label"] == r["label"] for r in rows)
    assert right / len(rows) > 0.85
    assert all(r["http_status"] == 200 for r in rows)
    # the answers were staged in bulk: a few statements, not one per row
    assert len(warehouse.statements) < 20
    puts = [s for s in warehouse.statements if s.startswith("PUT ")]
    assert bool(puts) == (staging == "volume")
    again = run_job(TRIAGE, endpoints=endpoints)
    assert again.summary["table_rows"] == OPEN_TICKETS
    assert agent.stats().requests_total == OPEN_TICKETS


def test_oauth_m2m_through_unified_auth(
    tmp_path: Path, agent: AgentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABRICKS_TOKEN")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "demo-client")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "demo-secret")
    with (
        serve_workspace() as workspace,
        DuckDBExecutor() as executor,
        serve_warehouse(
            executor,
            authorize=lambda header: workspace.authority.check_header(header).ok,
            upstream=workspace.url,
        ) as wh,
    ):
        engine = DatabricksSQLEngine(target_settings(wh))
        try:
            assert engine.fetch_one("SELECT 1 AS one") == {"one": 1}
        finally:
            engine.close()
        assert workspace.stats()["token_requests"] == 1
        assert all(a.startswith("Bearer ") and "demo-secret" not in a for a in wh.authorizations)


def test_ctrl_c_during_a_push_down_statement_cancels_it_on_the_warehouse(
    tmp_path: Path, run_job: Any
) -> None:
    volumes = tmp_path / "slow-volumes"
    raw = volumes / "main" / "support" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(TICKETS_CSV, raw / "support_tickets.csv")
    main = threading.main_thread().ident
    assert main == threading.get_ident(), "signals are delivered to the main thread"
    with (
        DuckDBExecutor(
            ai_query=slow_agent, volumes_dir=volumes, ai_query_concurrency=2
        ) as executor,
        serve_warehouse(executor, token=TOKEN, volumes_dir=volumes) as wh,
    ):
        load_tickets(wh)

        def press_ctrl_c() -> None:
            wh.wait_until_running("MERGE INTO")
            signal.pthread_kill(main, signal.SIGINT)

        helper = threading.Thread(target=press_ctrl_c)
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            run_job(SUMMARISE, settings=target_settings(wh))
        helper.join()
        assert [s.split()[:2] for s in wh.cancelled] == [["MERGE", "INTO"]]
        assert "ai_query(" in wh.cancelled[0]
        assert wh.wait_until_idle(timeout_s=30)  # 300 rows x 50 ms / 2 would take 7.5 s more


CHILD = """
import json, sys
import agentbatch
from agentbatch.engines.databricks_sql.engine import DatabricksSQLEngine
from agentbatch.errors import ConfigError, EngineError
config = json.loads(sys.argv[1])
agentbatch.run(
    config["job"], target="databricks-sql", settings=config["settings"],
    endpoints={"apps/triage-agent": config["agent"]}, project_dir=config["project"],
    state_dir=config["state"], progress=False,
)
"""


def test_killed_during_the_write_a_rerun_leaves_each_key_once(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path, run_job: Any
) -> None:
    config = {
        "job": str(TRIAGE),
        "settings": target_settings(warehouse),
        "agent": agent.url,
        "project": str(tmp_path),
        "state": str(tmp_path / "state"),
    }
    gate = warehouse.hold("MERGE INTO")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        warehouse.wait_until_running("MERGE INTO", timeout_s=120)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
        if child.stderr is not None:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    gate.set()  # the warehouse finishes the orphaned MERGE: the write did land, unrecorded
    assert warehouse.wait_until_idle(timeout_s=60)
    sent = agent.stats().requests_total
    assert sent == OPEN_TICKETS

    result = run_job(TRIAGE, endpoints={"apps/triage-agent": agent.url})
    rows = result.engine.read_table("main.support.ticket_triage").to_pylist()
    assert len(rows) == len({r["ticket_id"] for r in rows}) == OPEN_TICKETS
    assert agent.stats().requests_total == sent  # the ledger had every answer: none re-sent


def test_two_runs_at_once_each_write_their_own_answers(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path
) -> None:
    """Two runs of one job at once (each with its own checkpoint): the second stages its answers
    while the first waits at its MERGE. Each merges the answers it staged. With one staging
    table per target the second replaced the first's rows, and the first reported success
    having written the second's 5 rows. (The MERGE overtaken by the other's commit fails with a
    Delta write conflict and is run again.)"""
    first_gate = warehouse.hold("MERGE INTO")
    results: dict[str, Any] = {}

    def run(name: str, **options: Any) -> None:
        try:
            results[name] = agentbatch.run(
                TRIAGE,
                target="databricks-sql",
                settings=target_settings(warehouse),
                endpoints={"apps/triage-agent": agent.url},
                project_dir=tmp_path / name,
                state_dir=tmp_path / name / "state",
                progress=False,
                **options,
            )
        except BaseException as err:  # the assertion below shows it
            results[name] = err

    def merges() -> int:
        return sum("MERGE INTO" in op.sql for op in warehouse.service.running())

    first = threading.Thread(target=run, args=("first",))
    first.start()
    warehouse.wait_until_running("MERGE INTO", timeout_s=120)
    second_gate = warehouse.hold("MERGE INTO")  # the second's MERGE waits for both gates
    second = threading.Thread(target=run, args=("second",), kwargs={"limit": 5})
    second.start()
    deadline = time.monotonic() + 120
    while merges() < 2 and second.is_alive():
        assert time.monotonic() < deadline, "the second run never reached its MERGE"
        time.sleep(0.01)
    first_gate.set()
    first.join(120)
    second_gate.set()
    second.join(120)
    for name in ("first", "second"):
        assert not isinstance(results[name], BaseException), results[name]
    engine = results["first"].engine
    try:
        rows = engine.read_table("main.support.ticket_triage").to_pylist()
        assert len(rows) == len({r["ticket_id"] for r in rows}) == OPEN_TICKETS
        assert all(r["response"] is not None for r in rows)
        staged = [n for n in _tables(warehouse) if "__agentbatch_staged" in n]
        assert staged == []
    finally:
        for result in results.values():
            result.engine.close()


def test_a_staging_table_a_killed_run_left_is_dropped_a_day_later(
    warehouse: Warehouse, agent: AgentServer, run_job: Any
) -> None:
    """A run killed during its write leaves its staging table (named for it); a later run of the
    target drops it once its run started more than a day ago, and leaves a younger one (a run
    that may still be at work) alone."""
    import databricks.sql

    old = "ticket_triage__agentbatch_staged_20200101T000000_0badf00d"
    young = "ticket_triage__agentbatch_staged_" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS main.support")
        for name in (old, young):
            cur.execute(f"CREATE TABLE main.support.{name} (ticket_id BIGINT)")
    run_job(TRIAGE, endpoints={"apps/triage-agent": agent.url})
    staged = [n for n in _tables(warehouse) if "__agentbatch_staged" in n]
    assert staged == [young]


def test_a_staging_table_that_cannot_be_dropped_fails_no_run(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answers are merged; the warehouse then refuses the staging table's DROP once: the run
    succeeds (a warning), and the table waits for a later run to drop it."""
    execute = DuckDBExecutor.__call__
    refused: list[str] = []

    def refusing_one_drop(self: DuckDBExecutor, sql: str, params: Any) -> Any:
        if sql.startswith("DROP TABLE IF EXISTS") and "__agentbatch_staged" in sql and not refused:
            refused.append(sql)
            raise RuntimeError("injected: the warehouse refused the DROP")
        return execute(self, sql, params)

    monkeypatch.setattr(DuckDBExecutor, "__call__", refusing_one_drop)
    result = run_job(TRIAGE, endpoints={"apps/triage-agent": agent.url})
    assert refused and result.summary["rows_written"] == OPEN_TICKETS
    rows = result.engine.read_table("main.support.ticket_triage").to_pylist()
    assert len({r["ticket_id"] for r in rows}) == len(rows) == OPEN_TICKETS
    assert [n for n in _tables(warehouse) if "__agentbatch_staged" in n] != []


def _tables(wh: Warehouse) -> list[str]:
    import databricks.sql

    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.tables(catalog_name="main", schema_name="support")
        return sorted(str(row[2]) for row in cur.fetchall())


def drop_table(wh: Warehouse, table: str) -> None:
    import databricks.sql

    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE {table}")


def with_mode(job: Path, mode: str, folder: Path) -> Path:
    copy = folder / "jobs" / f"{job.stem}_{mode}.yml"
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(job.read_text().replace("mode: merge", f"mode: {mode}"))
    return copy


def test_a_history_of_rest_fallback_runs_keeps_every_key_once(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """Drop the table, change the mode, refresh: the target always ends with every key once, and
    answers paid for are written again from the checkpoint instead of calling the agent."""
    endpoints = {"apps/triage-agent": agent.url}

    def keys(result: Any) -> list[int]:
        rows = result.to_arrow(whole_table=True)["ticket_id"].to_pylist()
        assert len(rows) == len(set(rows)) == OPEN_TICKETS
        return rows

    keys(run_job(TRIAGE, endpoints=endpoints))
    drop_table(warehouse, "main.support.ticket_triage")
    again = run_job(TRIAGE, endpoints=endpoints)
    keys(again)
    assert (again.summary["sent"], again.summary["reused"]) == (0, OPEN_TICKETS)
    overwrite = with_mode(TRIAGE, "overwrite", tmp_path)
    keys(run_job(overwrite, endpoints=endpoints))
    assert agent.stats().requests_total == OPEN_TICKETS
    keys(run_job(overwrite, endpoints=endpoints, full_refresh=True))
    assert agent.stats().requests_total == 2 * OPEN_TICKETS


def test_a_history_of_push_down_runs_keeps_every_key_once(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    def keys(result: Any) -> None:
        rows = result.to_arrow(whole_table=True)["ticket_id"].to_pylist()
        assert len(rows) == len(set(rows)) == ALL_TICKETS

    keys(run_job(SUMMARISE))
    drop_table(warehouse, "main.support.ticket_summaries")
    keys(run_job(SUMMARISE))  # push-down keeps no checkpoint: the dropped answers are paid again
    assert agent.stats().requests_total == 2 * ALL_TICKETS
    overwrite = with_mode(SUMMARISE, "overwrite", tmp_path)
    keys(run_job(overwrite))  # the rows the table holds are kept, not paid again
    assert agent.stats().requests_total == 2 * ALL_TICKETS
    append = with_mode(SUMMARISE, "append", tmp_path)
    keys(run_job(append))
    assert agent.stats().requests_total == 2 * ALL_TICKETS
    keys(run_job(overwrite, full_refresh=True))
    assert agent.stats().requests_total == 3 * ALL_TICKETS


def test_limited_push_down_refreshes_take_turns_over_the_table(
    warehouse: Warehouse, agent: AgentServer, run_job: Any
) -> None:
    """`--full-refresh --limit N` through ai_query refreshes the N rows answered longest ago:
    three runs of a third each refresh every row once, not the lowest keys three times."""
    first = run_job(SUMMARISE).to_arrow(whole_table=True)
    before = max(first["answered_at"].to_pylist())
    for _ in range(3):
        last = run_job(SUMMARISE, full_refresh=True, limit=ALL_TICKETS // 3)
    rows = last.to_arrow(whole_table=True).to_pylist()
    assert len(rows) == len({r["ticket_id"] for r in rows}) == ALL_TICKETS
    assert all(r["answered_at"] > before for r in rows)  # every row refreshed
    assert agent.stats().requests_total == 2 * ALL_TICKETS  # each once


def test_limited_runs_select_the_same_rows_in_every_statement(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """A LIMIT without ORDER BY may select other rows each time it runs (the loopback warehouse
    takes random ones, as Databricks may): the rows sent, the rows an overwrite keeps and the
    next run must agree, so a limit takes the lowest keys."""
    overwrite = with_mode(SUMMARISE, "overwrite", tmp_path)
    first = run_job(overwrite, limit=5)
    keys = sorted(first.to_arrow(whole_table=True)["ticket_id"].to_pylist())
    with TICKETS_CSV.open(newline="") as f:
        lowest = sorted(int(row["ticket_id"]) for row in csv.DictReader(f))
    assert keys == lowest[:5]
    # The next 5 keys are sent; the 5 the table holds are kept (an overwrite keeps the selected
    # rows it holds), not paid again.
    again = run_job(overwrite, limit=5)
    assert sorted(again.to_arrow(whole_table=True)["ticket_id"].to_pylist()) == lowest[:10]
    assert agent.stats().requests_total == 10
    # An edited prompt, limited: the 10 answered rows not reached keep their answers until a
    # run answers them.
    held = {
        r["ticket_id"]: r["request_fingerprint"]
        for r in again.to_arrow(whole_table=True).to_pylist()
    }
    edited = tmp_path / "jobs" / "edited.yml"
    edited.write_text(overwrite.read_text().replace("in one sentence", "in five words"))
    third = run_job(edited, limit=3).to_arrow(whole_table=True).to_pylist()
    assert sorted(r["ticket_id"] for r in third) == lowest[:10]
    changed = [r["ticket_id"] for r in third if r["request_fingerprint"] != held[r["ticket_id"]]]
    assert sorted(changed) == lowest[:3]
    assert agent.stats().requests_total == 13


@pytest.mark.parametrize("warehouse", ["America/Los_Angeles", "Asia/Tokyo"], indirect=True)
def test_the_summary_counts_this_runs_rows_in_any_session_time_zone(
    warehouse: Warehouse, run_job: Any
) -> None:
    """A warehouse reads a timestamp literal without an offset in its session time zone, which
    an admin may set: the run's start carries its offset, so `rows` counts this run's answers."""
    result = run_job(SUMMARISE)
    assert result.summary["strategy"] == "push-down"
    assert result.summary["rows"] == result.summary["table_rows"] == ALL_TICKETS
    assert run_job(SUMMARISE).summary["rows"] == 0


def test_on_a_classic_warehouse_the_endpoint_is_called_over_rest(
    tmp_path: Path, agent: AgentServer
) -> None:
    """ai_query is not available on SQL Classic warehouses: the run asks the warehouses API and
    calls the Model Serving endpoint over REST, through the workspace host, instead."""
    import databricks.sql

    volumes = tmp_path / "volumes"
    raw = volumes / "main" / "support" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(TICKETS_CSV, raw / "support_tickets.csv")
    classic = WarehouseSettings(warehouse_type="CLASSIC", serverless=False)
    with (
        DuckDBExecutor(ai_query=serving_ai_query(agent.url), volumes_dir=volumes) as executor,
        serve_warehouse(
            executor, token=TOKEN, volumes_dir=volumes, settings=classic, upstream=agent.url
        ) as wh,
    ):
        load_tickets(wh)
        with (
            databricks.sql.connect(**wh.connect_kwargs()) as conn,
            conn.cursor() as cur,
            pytest.raises(databricks.sql.exc.Error, match="SQL Classic"),
        ):
            cur.execute("SELECT ai_query('any', 'question') AS answer")
        # The REST calls go to the workspace the target names (DATABRICKS_HOST is not set).
        before = len(wh.statements)
        sampled = agentbatch.estimate(
            SUMMARISE,
            target="databricks-sql",
            sample=5,
            settings=target_settings(wh),
            project_dir=tmp_path,
            progress=False,
        )
        assert sampled.sampled == 5 and agent.stats().requests_total == 5
        runs = []
        try:
            for _ in range(2):
                runs.append(
                    agentbatch.run(
                        SUMMARISE,
                        target="databricks-sql",
                        settings=target_settings(wh),
                        project_dir=tmp_path,
                        progress=False,
                    )
                )
            first, second = (run.summary for run in runs)
            assert first["strategy"] == second["strategy"] == "rest-fallback"
            assert "SQL Classic" in runs[0].plan.reason
            assert first["table_rows"] == ALL_TICKETS and first["table_errors"] == 0
            assert second["sent"] == 0  # the target says every row is done
            assert agent.stats().requests_total == ALL_TICKETS  # the sample's answers reused
            assert not [s for s in wh.statements[before:] if "ai_query(" in s.lower()]
        finally:
            for run in runs:
                run.engine.close()


def test_agents_are_looked_up_in_the_workspace_the_target_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target with `host:` reads and writes that workspace's tables: its Apps agent is that
    workspace's too, not the one of the same name where DATABRICKS_HOST points."""
    monkeypatch.delenv("DATABRICKS_TOKEN")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "demo-client")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "demo-secret")
    volumes = tmp_path / "volumes"
    (volumes / "main" / "support" / "raw").mkdir(parents=True)
    shutil.copy(TICKETS_CSV, volumes / "main" / "support" / "raw")
    with (
        serve_agent() as prod_agent,
        serve_agent() as dev_agent,
        serve_workspace({"triage-agent": prod_agent.url}) as prod,
        serve_workspace({"triage-agent": dev_agent.url}) as dev,
        DuckDBExecutor(volumes_dir=volumes) as executor,
        serve_warehouse(executor, token=None, upstream=prod.url, volumes_dir=volumes) as wh,
    ):
        load_tickets(wh)
        monkeypatch.setenv("DATABRICKS_HOST", dev.url)  # the environment's workspace: another
        result = agentbatch.run(
            TRIAGE,
            target="databricks-sql",
            settings=target_settings(wh),
            project_dir=tmp_path,
            progress=False,
        )
        try:
            assert result.summary["table_rows"] == OPEN_TICKETS
            assert result.summary["errors"] == 0
        finally:
            result.engine.close()
        assert prod_agent.stats().requests_total == OPEN_TICKETS
        assert dev_agent.stats().requests_total == 0
        assert dev.stats().get("apps_get", 0) == 0


def test_push_down_and_rest_fallback_runs_take_up_each_others_answers(
    warehouse: Warehouse, agent: AgentServer, run_job: Any
) -> None:
    """A job answered by ai_query and then by the REST fallback (the endpoint mapped to a URL for a
    run, as a user does to debug it), or the other way round, pays for no row twice: both paths
    write the same fingerprint, and the table keeps each key once."""
    endpoint = "databricks-meta-llama-3-3-70b-instruct"
    over_rest = {endpoint: f"{agent.url}/serving-endpoints/{endpoint}/invocations"}

    def answered(result: Any) -> dict[int, tuple[str, str]]:
        table = result.to_arrow(whole_table=True).to_pylist()
        assert len({row["ticket_id"] for row in table}) == len(table) == ALL_TICKETS
        assert all(row["error"] is None for row in table)
        return {row["ticket_id"]: (row["request_fingerprint"], row["response"]) for row in table}

    first = run_job(SUMMARISE)
    assert first.plan.strategy == "push-down"
    pushed = answered(first)
    again = run_job(SUMMARISE, endpoints=over_rest)
    assert again.plan.strategy == "rest-fallback"
    assert answered(again) == pushed
    assert agent.stats().requests_total == ALL_TICKETS
    drop_table(warehouse, "main.support.ticket_summaries")
    refilled = run_job(SUMMARISE, endpoints=over_rest)
    assert answered(refilled).keys() == pushed.keys()
    assert agent.stats().requests_total == 2 * ALL_TICKETS
    assert answered(run_job(SUMMARISE)) == answered(refilled)
    assert agent.stats().requests_total == 2 * ALL_TICKETS


def test_a_target_naming_a_profile_is_not_sent_where_databricks_host_points(
    warehouse: Warehouse, run_job: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """databricks-sdk takes DATABRICKS_HOST over the host of a named profile and signs in there
    with the profile's token: a `profile: prod` target would run in another workspace. The run
    is refused, naming both hosts, before anything reaches either; so is a DATABRICKS_TOKEN the
    SDK would send in place of the profile's. Without them it runs where the profile points."""
    config = tmp_path / "databrickscfg"
    config.write_text(f"[prod]\nhost = http://{warehouse.host}:{warehouse.port}\ntoken = {TOKEN}\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))
    monkeypatch.delenv("DATABRICKS_TOKEN")
    settings = {"profile": "prod", "warehouse_id": warehouse.warehouse_id}
    with serve_workspace() as elsewhere:
        monkeypatch.setenv("DATABRICKS_HOST", elsewhere.url)
        with pytest.raises(ConfigError) as refused:
            run_job(SUMMARISE, settings=settings)
        assert f"profile 'prod' (host http://{warehouse.host}:{warehouse.port})" in str(
            refused.value
        )
        assert elsewhere.url in str(refused.value)
        assert TOKEN not in str(refused.value)
        assert not any(elsewhere.stats().values())
        # The same profile named by DATABRICKS_CONFIG_PROFILE, the target naming none.
        monkeypatch.setenv("DATABRICKS_CONFIG_PROFILE", "prod")
        with pytest.raises(ConfigError, match="DATABRICKS_CONFIG_PROFILE names profile 'prod'"):
            run_job(SUMMARISE, settings={"warehouse_id": warehouse.warehouse_id})
        monkeypatch.delenv("DATABRICKS_CONFIG_PROFILE")
        assert not any(elsewhere.stats().values())
    monkeypatch.delenv("DATABRICKS_HOST")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-another-workspaces-token")
    with pytest.raises(ConfigError, match="DATABRICKS_TOKEN holds another") as refused:
        run_job(SUMMARISE, settings=settings)
    assert TOKEN not in str(refused.value) and "another-workspaces" not in str(refused.value)
    monkeypatch.delenv("DATABRICKS_TOKEN")
    assert run_job(SUMMARISE, settings=settings).summary["table_rows"] == ALL_TICKETS


MAP_JOB = """\
name: tagged_triage
source:
  table: main.support.tagged_tickets
  key: ticket_id
  columns: [subject, attrs, nested, scored]
request: "concat('Classify this support ticket. Ticket: ', subject, ' ', body)"
agent:
  endpoint: apps/triage-agent
  api: responses
  response_format: "STRUCT<label: STRING, urgency: INT>"
output:
  table: main.support.tagged_triage
  mode: merge
"""


def test_rest_fallback_stages_maps_keyed_by_other_types_than_string(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """Passthrough MAP columns keyed by INT or BIGINT, also nested, staged through the JSON
    parameter: from_json only reads MAPs keyed by STRING (Databricks refuses other key types,
    DATATYPE_MISMATCH.INVALID_JSON_MAP_KEY_TYPE), so they travel keyed by text and are cast
    back. Every value comes back as it was, NULL and empty maps included."""
    import databricks.sql

    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE main.support.tagged_tickets (ticket_id BIGINT, subject STRING, "
            "body STRING, attrs MAP<INT, STRING>, nested ARRAY<MAP<INT, STRING>>, "
            "scored STRUCT<m: MAP<BIGINT, DOUBLE>>)"
        )
        cur.execute(
            "INSERT INTO main.support.tagged_tickets SELECT ticket_id, subject, body, "
            "CASE ticket_id % 3 WHEN 0 THEN map(1, 'one', -20, subject) "
            "WHEN 1 THEN CAST(NULL AS MAP<INT, STRING>) ELSE CAST(map() AS MAP<INT, STRING>) END, "
            "array(map(CAST(ticket_id AS INT), 'id'), CAST(NULL AS MAP<INT, STRING>)), "
            "named_struct('m', map(ticket_id * 10000000000, 1.5)) "
            "FROM main.support.tickets WHERE ticket_id < 1010"
        )
        cur.execute("SELECT ticket_id, attrs, nested, scored FROM main.support.tagged_tickets")
        source = {row["ticket_id"]: row for row in cur.fetchall_arrow().to_pylist()}
    assert len(source) == 9 and sum(row["attrs"] == [] for row in source.values()) == 3
    job = tmp_path / "jobs" / "tagged_triage.yml"
    job.parent.mkdir()
    job.write_text(MAP_JOB)

    result = run_job(job, endpoints={"apps/triage-agent": agent.url})
    assert result.summary["strategy"] == "rest-fallback"
    assert result.summary["errors"] == 0
    staged = [s for s in warehouse.statements if "from_json(:rows" in s]
    assert staged and "CAST(`rows`.`attrs` AS MAP<INT, STRING>)" in staged[0]
    rows = result.engine.read_table("main.support.tagged_triage").to_pylist()
    assert {
        row["ticket_id"]: {k: row[k] for k in ("ticket_id", "attrs", "nested", "scored")}
        for row in rows
    } == source


def test_a_push_down_summary_counts_this_runs_failures(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """The push-down summary said `errors 0` and no `ok` whatever ai_query answered, so
    fail_on_error's message blamed earlier runs for this run's failures."""
    job = tmp_path / "jobs" / "pd_errors.yml"
    job.parent.mkdir(exist_ok=True)
    job.write_text(
        SUMMARISE.read_text().replace(
            "request: \"concat('Summarise",
            'request: "concat(CASE WHEN ticket_id % 10 = 0 '
            "THEN 'PERMANENT_ERROR ' ELSE '' END, 'Summarise",
        )
    )
    summary = run_job(job).summary
    failed = ALL_TICKETS // 10
    assert summary["strategy"] == "push-down"
    assert (summary["rows"], summary["sent"], summary["reused"]) == (ALL_TICKETS, ALL_TICKETS, 0)
    assert (summary["ok"], summary["errors"]) == (ALL_TICKETS - failed, failed)
    assert summary["table_errors"] == failed
    again = run_job(job, retry_errors=True).summary  # only the failures, failing again
    assert (again["rows"], again["errors"], again["ok"]) == (failed, failed, 0)


def test_the_rest_fallback_writes_a_target_whose_name_is_near_the_unity_catalog_limit(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """Unity Catalog names have at most 255 characters (the loopback refuses a longer one, as
    Databricks does). A target named with 250 is valid, so the staging table named after it and
    the run must fit too; a killed run's leftover of that form is still dropped a day later."""
    import databricks.sql

    name = "t" * 250
    job = tmp_path / "long_name.yml"
    job.write_text(
        TRIAGE.read_text().replace(
            "table: \"{{ var('catalog') }}.support.ticket_triage\"",
            f"table: \"{{{{ var('catalog') }}}}.support.{name}\"",
        )
    )
    assert name in job.read_text()
    endpoints = {"apps/triage-agent": agent.url}
    first = run_job(job, endpoints=endpoints, limit=5)
    assert first.summary["rows_written"] == 5
    leftover = DatabricksSQLEngine.staging_relation(
        f"main.support.{name}", "20200101T000000_0badf00d"
    )
    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {leftover} (ticket_id BIGINT)")
    again = run_job(job, endpoints=endpoints, limit=2)
    assert again.summary["table_rows"] == 7
    assert agent.stats().requests_total == 7
    assert [n for n in _tables(warehouse) if "__agentbatch_staged" in n] == []


def create_target(wh: Warehouse, ddl: str) -> list[tuple[Any, ...]]:
    """Run `ddl` (or a query: its rows)."""
    import databricks.sql

    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(ddl)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


# The target a user made before the first run, with other types than agentbatch would give it:
# each is one Databricks writes the answers into (store assignment ANSI: widening, narrowing,
# anything into STRING, TIMESTAMP into TIMESTAMP_NTZ, a struct field INT into BIGINT).
OTHER_TYPES = (
    "CREATE TABLE main.support.{table} (ticket_id BIGINT, {columns}, response {response}, "
    "error VARCHAR(4000), http_status BIGINT, attempts SMALLINT, latency_ms FLOAT, "
    "input_tokens DECIMAL(20, 0), output_tokens INT, trace_id STRING, custom_outputs STRING, "
    "request_fingerprint STRING, answered_at TIMESTAMP_NTZ) USING DELTA"
)


def test_a_target_made_with_other_column_types_takes_the_answers_in_every_strategy(
    warehouse: Warehouse, agent: AgentServer, run_job: Any
) -> None:
    create_target(
        warehouse,
        OTHER_TYPES.format(
            table="ticket_summaries",
            columns="subject VARCHAR(200), created_at STRING",
            response="STRING",
        ),
    )
    create_target(
        warehouse,
        OTHER_TYPES.format(
            table="ticket_triage",
            columns="subject VARCHAR(200), body STRING, label VARCHAR(40)",
            response="STRUCT<label: STRING, urgency: BIGINT>",
        ),
    )
    pushed = run_job(SUMMARISE)
    assert (pushed.summary["strategy"], pushed.summary["errors"]) == ("push-down", 0)
    assert pushed.summary["table_rows"] == ALL_TICKETS
    rest = run_job(TRIAGE, endpoints={"apps/triage-agent": agent.url})
    assert (rest.summary["strategy"], rest.summary["errors"]) == ("rest-fallback", 0)
    rows = rest.to_arrow(whole_table=True).to_pylist()
    assert len(rows) == OPEN_TICKETS
    assert all(r["http_status"] == 200 and r["response"]["urgency"] is not None for r in rows)


@pytest.mark.parametrize("job", [SUMMARISE, TRIAGE], ids=["push-down", "rest-fallback"])
def test_overwrite_replaces_a_varchar_target_that_merge_cannot_write_into(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path, job: Path
) -> None:
    """A VARCHAR(n) column keeps values to n characters (the answer, or a column copied from the
    source): Delta's constraint fails a write of a longer one (DELTA_EXCEED_CHAR_VARCHAR_LIMIT),
    so a merge fails and writes nothing; overwrite replaces the table (CREATE OR REPLACE ... AS),
    whose columns then have the types agentbatch gives them."""
    endpoints = {} if job == SUMMARISE else {"endpoints": {"apps/triage-agent": agent.url}}
    table = "ticket_summaries" if job == SUMMARISE else "ticket_triage"
    columns = (
        "subject VARCHAR(200), created_at STRING"
        if job == SUMMARISE
        else "subject VARCHAR(200), body VARCHAR(10), label CHAR(20)"
    )
    response = "VARCHAR(10)" if job == SUMMARISE else "STRUCT<label: STRING, urgency: INT>"
    create_target(
        warehouse,
        OTHER_TYPES.format(table=table, columns=columns, response=response).replace(
            "error VARCHAR(4000)", "error VARCHAR(10)"
        ),
    )
    with pytest.raises(Exception, match="DELTA_EXCEED_CHAR_VARCHAR_LIMIT"):
        run_job(job, **endpoints)
    assert create_target(warehouse, f"SELECT count(*) FROM main.support.{table}") == [(0,)]
    result = run_job(with_mode(job, "overwrite", tmp_path), **endpoints)
    rows = result.to_arrow(whole_table=True).to_pylist()
    expected = ALL_TICKETS if job == SUMMARISE else OPEN_TICKETS
    assert len({r["ticket_id"] for r in rows}) == len(rows) == expected
    assert result.summary["errors"] == 0
    longest = "response" if job == SUMMARISE else "body"
    assert max(len(r[longest]) for r in rows) > 10


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_value_the_request_does_not_convert_names_the_request_as_on_the_local_engine(
    tmp_path: Path, agent: AgentServer, run_job: Any, dry_run: bool
) -> None:
    """The warehouse fails the statement with CAST_INVALID_INPUT (ANSI mode); the run's error
    names the job file's key whose SQL fails for a source value, as the local engine's does."""
    job = tmp_path / "jobs" / "ticket_numbers.yml"
    job.parent.mkdir()
    job.write_text(
        """name: ticket_numbers
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
request: "concat('n=', CAST(subject AS INT))"
agent:
  endpoint: databricks-meta-llama-3-3-70b-instruct
  api: chat
output:
  table: main.support.ticket_numbers
"""
    )
    with pytest.raises(EngineError) as raised:
        run_job(job, dry_run=dry_run)
    message = str(raised.value)
    assert message.startswith(f"{job}:6: request: a source value does not convert: ")
    assert re.search(
        r"\[CAST_INVALID_INPUT\] The value '[^']+' of the type \"STRING\" cannot be cast to "
        r'"INT" because it is malformed',
        message,
    )
    assert agent.stats().requests_total == 0
