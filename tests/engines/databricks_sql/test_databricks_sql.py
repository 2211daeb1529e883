"""The databricks-sql engine through the unmodified connector against the loopback warehouse."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from agentbatch.engines.base import WriteRequest
from agentbatch.engines.databricks_sql.engine import DatabricksSQLEngine
from agentbatch.engines.databricks_sql.staging import create_table_sql
from agentbatch.errors import ConfigError, EngineError
from agentbatch.results import result_arrow_fields
from tests.support.databricks_env import isolate
from tests.support.warehouse.agents import slow_agent
from tests.support.warehouse.duckdb_executor import DuckDBExecutor
from tests.support.warehouse.server import Warehouse, serve_warehouse

TOKEN = "dapi-engine-test-token"


@pytest.fixture(autouse=True)
def isolated_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, token=TOKEN)


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    with (
        DuckDBExecutor(ai_query=slow_agent, volumes_dir=tmp_path / "volumes") as executor,
        serve_warehouse(executor, token=TOKEN, volumes_dir=tmp_path / "volumes") as wh,
    ):
        yield wh


def settings_for(wh: Warehouse, **extra: Any) -> dict[str, Any]:
    return {
        "host": f"http://{wh.host}:{wh.port}",
        "warehouse_id": wh.warehouse_id,
        "job_name": "engine_test",
        "run_id": "run-1",
        **extra,
    }


@pytest.fixture
def engine(warehouse: Warehouse) -> Iterator[DatabricksSQLEngine]:
    engine = DatabricksSQLEngine(settings_for(warehouse))
    yield engine
    engine.close()


def test_statements_results_and_parameters(
    engine: DatabricksSQLEngine, warehouse: Warehouse
) -> None:
    engine.execute("CREATE SCHEMA IF NOT EXISTS main.jobs")
    engine.execute(
        "CREATE TABLE main.jobs.items AS SELECT id, concat('item ', id) AS name "
        "FROM range(2500) AS r(id)"
    )
    batches = list(
        engine.fetch_batches(
            "SELECT id, name FROM main.jobs.items WHERE id >= :low ORDER BY id",
            {"low": 500},
            batch_rows=700,
        )
    )
    assert [b.num_rows for b in batches] == [700, 700, 600]
    assert batches[0].column("id")[0].as_py() == 500
    assert engine.fetch_one("SELECT count(*) AS n FROM main.jobs.items") == {"n": 2500}
    assert engine.fetch_one("SELECT id FROM main.jobs.items WHERE id < 0") == {"id": None}
    assert engine.read_table("main.jobs.items", limit=3).num_rows == 3
    # every statement went asynchronously and tagged with the job and the run
    executions = warehouse.executions
    assert all(r.run_async for r in executions)
    assert (
        executions[0].conf_overlay["query_tags"]
        == "agentbatch_job:engine_test,agentbatch_run:run-1"
    )
    assert warehouse.sessions[0].configuration["QUERY_TAGS"] == (
        "agentbatch_job:engine_test,agentbatch_run:run-1"
    )
    assert warehouse.executions[2].params == {"low": 500}


def test_table_exists_compares_names_exactly(engine: DatabricksSQLEngine) -> None:
    engine.execute("CREATE SCHEMA main.shop")
    engine.execute("CREATE TABLE main.shop.ab_c (x INT)")
    assert engine.table_exists("main.shop.ab_c")
    assert not engine.table_exists("main.shop.abxc")  # `_` is a wildcard in metadata patterns
    assert not engine.table_exists("main.other.ab_c")


def test_a_failing_statement_raises_engine_error(engine: DatabricksSQLEngine) -> None:
    with pytest.raises(EngineError, match="no_such_table"):
        engine.execute("SELECT * FROM main.default.no_such_table")


def test_bearer_token_from_unified_auth_arrives_and_is_never_logged(
    warehouse: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = DatabricksSQLEngine(settings_for(warehouse))
    try:
        engine.execute("SELECT 1")
    finally:
        engine.close()
    assert set(warehouse.authorizations) == {f"Bearer {TOKEN}"}
    assert TOKEN not in caplog.text


def test_connection_settings_from_the_environment(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", f"http://{warehouse.host}:{warehouse.port}")
    monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", warehouse.warehouse_id)
    engine = DatabricksSQLEngine({})
    try:
        assert engine.fetch_one("SELECT 40 + 2 AS answer") == {"answer": 42}
    finally:
        engine.close()


def test_missing_settings_are_config_errors(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="warehouse_id"):
        DatabricksSQLEngine({"host": f"http://{warehouse.host}:{warehouse.port}"}).execute(
            "SELECT 1"
        )
    monkeypatch.delenv("DATABRICKS_TOKEN")
    with pytest.raises(ConfigError, match="credentials"):
        DatabricksSQLEngine(settings_for(warehouse)).execute("SELECT 1")


def test_ctrl_c_cancels_the_running_statement_on_the_warehouse(
    engine: DatabricksSQLEngine, warehouse: Warehouse
) -> None:
    sql = "SELECT count(*) FROM range(100000000000) AS r(i) WHERE i % 7 = 3"
    main = threading.main_thread().ident
    assert main == threading.get_ident(), "signals are delivered to the main thread"

    def press_ctrl_c() -> None:
        warehouse.wait_until_running("range(100000000000)")
        signal.pthread_kill(main, signal.SIGINT)

    helper = threading.Thread(target=press_ctrl_c)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        engine.execute(sql)
    helper.join()
    assert warehouse.cancelled == [sql]
    assert warehouse.wait_until_idle(timeout_s=30)


def test_ctrl_c_inside_the_submission_still_cancels_the_statement(
    engine: DatabricksSQLEngine, warehouse: Warehouse
) -> None:
    """The first submission starts the sending thread, which may have the statement running on
    the warehouse before `submit` returns: a Ctrl-C landing there must cancel it too."""
    sql = "SELECT count(*) FROM range(100000000000) AS r(i) WHERE i % 11 = 3"

    class InterruptedWhileSubmitting(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            super().submit(fn, *args, **kwargs)
            warehouse.wait_until_running("range(100000000000)")
            raise KeyboardInterrupt  # as a signal handler would, before `submit` returns

    engine._submitter = InterruptedWhileSubmitting(1)
    with pytest.raises(KeyboardInterrupt):
        engine.execute(sql)
    assert warehouse.cancelled == [sql]
    assert warehouse.wait_until_idle(timeout_s=30)


def _answers(keys: range, response: str, answered: dt.datetime) -> tuple[pa.Table, pa.Schema]:
    fields = [pa.field("ticket_id", pa.int64()), pa.field("subject", pa.string())]
    fields += result_arrow_fields(pa.struct([("label", pa.string()), ("urgency", pa.int32())]))
    schema = pa.schema(fields)
    rows = [
        {
            "ticket_id": k,
            "subject": f"subject {k}",
            "response": {"label": response, "urgency": k % 5},
            "error": None,
            "http_status": 200,
            "attempts": 1,
            "latency_ms": 12.5,
            "input_tokens": 10,
            "output_tokens": 3,
            "trace_id": f"tr-{k}",
            "custom_outputs": None,
            "request_fingerprint": f"fp-{k}",
            "answered_at": answered,
        }
        for k in keys
    ]
    return pa.Table.from_pylist(rows, schema=schema), schema


def _merge_request(engine: DatabricksSQLEngine, table: str) -> WriteRequest:
    staged = engine.staging_relation(table, engine.run_id)
    merge = (
        f"MERGE INTO {table} AS target USING {staged} AS staged "
        "ON target.`ticket_id` = staged.`ticket_id` "
        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
    )
    return WriteRequest(table, "ticket_id", "merge", staged, (merge,))


@pytest.mark.parametrize("staging", ["json-parameter", "volume"])
def test_write_results_merges_by_key(warehouse: Warehouse, staging: str) -> None:
    extra = {"staging_volume": "main.default.staging"} if staging == "volume" else {}
    warehouse.create_volume("main.default.staging")
    engine = DatabricksSQLEngine(settings_for(warehouse, insert_rows=400, **extra))
    table = "main.support.triage"
    answered = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)
    try:
        engine.execute("CREATE SCHEMA main.support")
        first, schema = _answers(range(1000), "bug", answered)
        engine.execute(create_table_sql(table, schema))  # what ensure_target does in a run
        stats = engine.write_results(_merge_request(engine, table), first.to_batches(300), schema)
        assert stats.rows_written == 1000
        second, _ = _answers(range(900, 1100), "billing", answered)
        engine.write_results(_merge_request(engine, table), second.to_batches(), schema)
        result = engine.read_table(table)
        assert not engine.table_exists(engine.staging_relation(table, engine.run_id))
    finally:
        engine.close()
    rows = {r["ticket_id"]: r for r in result.to_pylist()}
    assert len(rows) == result.num_rows == 1100
    assert rows[5]["response"] == {"label": "bug", "urgency": 0}
    assert rows[950]["response"] == {"label": "billing", "urgency": 0}
    assert rows[7]["answered_at"] == answered
    assert rows[7]["latency_ms"] == 12.5 and rows[7]["trace_id"] == "tr-7"
    sent = warehouse.statements
    if staging == "volume":
        assert any(
            s.startswith("PUT '__input_stream__' INTO '/Volumes/main/default/staging/")
            for s in sent
        )
        assert any("read_files(" in s for s in sent)
        assert not list((warehouse.volumes_dir / "main/default/staging").rglob("*.parquet"))
    else:
        # 1000 rows in chunks of 400: three INSERTs, each with one JSON parameter
        inserts = [r for r in warehouse.executions if r.sql.startswith("INSERT INTO")]
        assert len(inserts) == 3 + 1 and all(list(r.params) == ["rows"] for r in inserts)


def test_an_answer_over_the_parameter_limit_is_named_and_the_rest_written(
    warehouse: Warehouse,
) -> None:
    """The warehouse refuses a statement with over 1 MB of parameter values (the connector's
    documented limit, which the loopback warehouse enforces): the other rows are written, the
    write then fails naming the key and the way out (a staging volume)."""
    engine = DatabricksSQLEngine(settings_for(warehouse))
    table = "main.support.triage_big"
    answered = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    try:
        engine.execute("CREATE SCHEMA IF NOT EXISTS main.support")
        rows, schema = _answers(range(3), "bug", answered)
        big = rows.to_pylist()
        big[1]["trace_id"] = "t" * 1_100_000
        rows = pa.Table.from_pylist(big, schema=schema)
        engine.execute(create_table_sql(table, schema))
        with pytest.raises(
            EngineError, match=r"2 row\(s\) written; 1 row\(s\) over .* ticket_id 1 "
        ):
            engine.write_results(_merge_request(engine, table), rows.to_batches(), schema)
        written = sorted(r["ticket_id"] for r in engine.read_table(table).to_pylist())
        with pytest.raises(EngineError, match="at most 1000000"):
            engine.execute("SELECT length(:x) AS n", {"x": "y" * 1_000_001})
    finally:
        engine.close()
    assert written == [0, 2]


def test_every_column_type_comes_back_as_written_whichever_staging(warehouse: Warehouse) -> None:
    """The JSON parameter writes dates, decimals and timestamps as Arrow text (a UTC timestamp
    with `Z`), the others as Python values; the volume writes Parquet. Both read back equal."""
    import decimal

    utc = dt.timezone.utc
    at = [
        dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=utc),
        dt.datetime(1999, 12, 31, tzinfo=utc),
    ]
    columns = {
        "id": pa.array([1, 2], pa.int64()),
        "text": pa.array(['é "quoted" \\ ', None]),
        "flag": pa.array([True, None]),
        "ratio": pa.array([0.1, -2.5e300]),
        "day": pa.array([dt.date(2026, 1, 2), dt.date(1, 1, 1)]),
        "amount": pa.array(
            [decimal.Decimal("0.00"), decimal.Decimal("-12345678.91")], pa.decimal128(10, 2)
        ),
        "at_utc": pa.array(at, pa.timestamp("us", "UTC")),
        "at_ms": pa.array(at, pa.timestamp("ms", "UTC")),
        "at_local": pa.array([a.replace(tzinfo=None) for a in at], pa.timestamp("us")),
        "raw": pa.array([b"\x00\xff", None], pa.binary()),
        "tags": pa.array([[("a", 1)], None], pa.map_(pa.string(), pa.int32())),
        "nested": pa.array(
            [{"when": at[0], "day": dt.date(2026, 1, 2)}, None],
            pa.struct([("when", pa.timestamp("us", "UTC")), ("day", pa.date32())]),
        ),
    }
    written = pa.table(columns)
    warehouse.create_volume("main.default.staging")
    back = {}
    for staging in ("json-parameter", "volume"):
        extra = {"staging_volume": "main.default.staging"} if staging == "volume" else {}
        engine = DatabricksSQLEngine(settings_for(warehouse, **extra))
        table = f"main.default.types_{staging.replace('-', '_')}"
        try:
            engine.execute(create_table_sql(table, written.schema))
            staged = engine.staging_relation(table, engine.run_id)
            insert = f"INSERT INTO {table} SELECT * FROM {staged}"
            request = WriteRequest(table, "id", "append", staged, (insert,))
            engine.write_results(request, written.to_batches(), written.schema)
            back[staging] = engine.read_table(table).sort_by("id")
        finally:
            engine.close()
    for staging, table in back.items():
        for name in written.column_names:
            assert table.column(name).to_pylist() == written.column(name).to_pylist(), (
                staging,
                name,
            )
