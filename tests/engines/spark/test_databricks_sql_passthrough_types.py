"""Passthrough columns of every Databricks type through the REST fallback on the databricks-sql
target (here, not beside the other databricks-sql tests: it needs Spark 4, for the loopback
warehouse's VARIANT, GEOMETRY and GEOGRAPHY).

The fallback reads the source rows through the connector, calls the agent, then stages the
passthrough columns back and writes them into the target. A column either comes back exactly
(TIMESTAMP_NTZ, DECIMAL(38, x), BINARY, MAPs keyed by numbers or dates, deep STRUCTs, ...), or the
run refuses it before any call, naming the column, its type and the fix: a VARIANT inside a
STRUCT, ARRAY or MAP, a GEOMETRY or GEOGRAPHY, an INTERVAL (the connector receives them as text
in a form Databricks does not document). Before, such a column was staged as whatever its text
looked like, and the write failed, or stored something else, after every call was paid.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import pytest

import agentbatch
from agentbatch.engines.databricks_sql.staging import passthrough_refusal
from agentbatch.errors import NotSupportedError
from agentbatch.testing.agent_server import AgentServer
from tests.support.databricks_env import isolate
from tests.support.warehouse.conftest import spark_session  # noqa: F401 (a fixture)
from tests.support.warehouse.server import Warehouse, serve_warehouse
from tests.support.warehouse.spark_executor import SparkExecutor

pytestmark = [pytest.mark.spark, pytest.mark.slow]

TOKEN = "dapi-passthrough-types-token"

COLUMNS = {
    "ntz": "TIMESTAMP_NTZ",
    "ts": "TIMESTAMP",
    "big": "DECIMAL(38,18)",
    "raw": "BINARY",
    "by_number": "MAP<INT, STRING>",
    "by_day": "MAP<DATE, STRUCT<n: DECIMAL(38,10), at: TIMESTAMP_NTZ>>",
    "deep": "STRUCT<a: STRUCT<b: ARRAY<STRUCT<c: BINARY, d: TIMESTAMP, e: DECIMAL(38,2)>>>>",
    "code": "CHAR(3)",
    "label": "VARCHAR(5)",
}
ROWS = [
    "(1, 'parcel late', TIMESTAMP_NTZ'2024-02-29 23:59:59.123456', "
    "TIMESTAMP'2024-03-01 01:02:03.000001', "
    "CAST('12345678901234567890.123456789012345678' AS DECIMAL(38,18)), X'00FF10', "
    "map(1, 'one', -2, 'minus two'), "
    "map(DATE'2024-01-01', named_struct('n', CAST('-0.0000000001' AS DECIMAL(38,10)), "
    "'at', TIMESTAMP_NTZ'1999-12-31 00:00:00')), "
    "named_struct('a', named_struct('b', array(named_struct('c', X'DEADBEEF', "
    "'d', TIMESTAMP'2000-01-01 00:00:00.5', 'e', CAST('-999999999999999999999999999999999999.99' "
    "AS DECIMAL(38,2)))))), 'ab', 'xyz')",
    "(2, 'wrong size', NULL, NULL, NULL, X'', map(), NULL, "
    "named_struct('a', named_struct('b', array())), NULL, '')",
    "(3, 'refund', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
]

JOB = """\
name: typed_triage
source:
  {source}
  key: id
  columns: [{columns}]
request: "concat('Classify this support ticket: ', subject)"
agent:
  endpoint: apps/triage-agent
  api: responses
output:
  table: main.shop.triaged
  mode: overwrite
"""


@pytest.fixture(autouse=True)
def isolated_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, token=TOKEN)


@pytest.fixture
def warehouse(spark_session: Any) -> Iterator[Warehouse]:  # noqa: F811
    with serve_warehouse(SparkExecutor(spark_session), token=TOKEN) as wh:
        with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA IF NOT EXISTS main.shop")
            for table in ("typed", "triaged"):
                cur.execute(f"DROP TABLE IF EXISTS main.shop.{table}")
            columns = ", ".join(f"{name} {sql_type}" for name, sql_type in COLUMNS.items())
            cur.execute(f"CREATE TABLE main.shop.typed (id BIGINT, subject STRING, {columns})")
            cur.execute(f"INSERT INTO main.shop.typed VALUES {', '.join(ROWS)}")
        yield wh


def run_job(job: Path, wh: Warehouse, agent: AgentServer, tmp_path: Path) -> dict[str, Any]:
    result = agentbatch.run(
        job,
        target="databricks-sql",
        settings={"host": f"http://{wh.host}:{wh.port}", "warehouse_id": wh.warehouse_id},
        endpoints={"apps/triage-agent": agent.url},
        project_dir=tmp_path,
        state_dir=tmp_path / "state",
        progress=False,
    )
    try:
        return dict(result.summary)
    finally:
        if result.engine is not None:
            result.engine.close()


def write_job(tmp_path: Path, source: str, columns: list[str]) -> Path:
    job = tmp_path / "jobs" / "typed_triage.yml"
    job.parent.mkdir(exist_ok=True)
    job.write_text(JOB.format(source=source, columns=", ".join(columns)))
    return job


def test_passthrough_columns_of_every_stageable_type_come_back_exactly(
    spark_session: Any,  # noqa: F811
    warehouse: Warehouse,
    agent: AgentServer,
    tmp_path: Path,
) -> None:
    """Values and types, compared in Spark itself (no text form in between)."""
    job = write_job(tmp_path, "table: main.shop.typed", ["subject", *COLUMNS])
    summary = run_job(job, warehouse, agent, tmp_path)
    assert (summary["strategy"], summary["sent"], summary["errors"]) == ("rest-fallback", 3, 0)
    names = ["id", "subject", *COLUMNS]
    source = spark_session.table("main__shop.typed").select(names).orderBy("id")
    target = spark_session.table("main__shop.triaged").select(names).orderBy("id")
    assert [f.dataType for f in target.schema] == [f.dataType for f in source.schema]
    assert target.collect() == source.collect()
    assert agent.stats().requests_total == 3


@pytest.mark.parametrize(
    ("expression", "sql_type"),
    [
        ("""named_struct('v', parse_json('{"a": 1}'))""", "STRUCT<V:VARIANT>"),
        ("array(parse_json('[1, 2]'))", "ARRAY<VARIANT>"),
        ("map('k', parse_json('2'))", "MAP<STRING,VARIANT>"),
        ("st_geomfromwkb(X'0101000000000000000000F03F0000000000000040')", "GEOMETRY(0)"),
        ("INTERVAL '3' DAY", "INTERVAL DAY"),
        (
            "named_struct('wait', INTERVAL '1-2' YEAR TO MONTH)",
            "STRUCT<WAIT:INTERVAL YEAR TO MONTH>",
        ),
    ],
)
def test_a_column_staging_cannot_write_back_is_refused_before_any_call(
    spark_session: Any,  # noqa: F811
    warehouse: Warehouse,
    agent: AgentServer,
    tmp_path: Path,
    expression: str,
    sql_type: str,
) -> None:
    query = f"SELECT id, subject, {expression} AS extra FROM main.shop.typed"
    job = write_job(tmp_path, f"query: |\n    {query}", ["subject", "extra"])
    with pytest.raises(NotSupportedError) as refused:
        run_job(job, warehouse, agent, tmp_path)
    message = str(refused.value)
    assert f"column 'extra' is {sql_type}:" in message
    assert "source.query" in message and "source.columns" in message
    assert "Nothing was sent" in message
    assert agent.stats().requests_total == 0
    assert not spark_session.catalog.tableExists("main__shop.triaged")  # nothing created


@pytest.mark.parametrize(
    ("sql_type", "refused"),
    [
        ("variant", False),  # a top-level VARIANT is staged through parse_json
        ("struct<variant:int,geometry:string>", False),  # fields named so
        ("map<int,struct<n:decimal(38,10),at:timestamp_ntz>>", False),
        ("char(3)", False),
        ("struct<v:variant>", True),
        ("array<array<variant>>", True),
        ("map<string,variant>", True),
        ("geography(4326)", True),
        ("array<struct<g:geometry(4326)>>", True),
        ("interval day to second", True),
        ("interval", True),
        ("map<string,interval year>", True),
    ],
)
def test_which_types_are_refused(sql_type: str, refused: bool) -> None:
    assert (passthrough_refusal("c", sql_type) is not None) is refused


def test_a_dry_run_refuses_it_with_the_same_words(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path
) -> None:
    query = "SELECT id, subject, array(parse_json('1')) AS extra FROM main.shop.typed"
    job = write_job(tmp_path, f"query: |\n    {query}", ["subject", "extra"])
    with pytest.raises(NotSupportedError, match=r"column 'extra' is ARRAY<VARIANT>: "):
        agentbatch.run(
            job,
            target="databricks-sql",
            settings={
                "host": f"http://{warehouse.host}:{warehouse.port}",
                "warehouse_id": warehouse.warehouse_id,
            },
            endpoints={"apps/triage-agent": agent.url},
            project_dir=tmp_path,
            state_dir=tmp_path / "state",
            progress=False,
            dry_run=True,
        )
