"""Every example job's SQL for the databricks-sql target (what the golden files hold) runs on the
loopback warehouse, on DuckDB and on Spark in ANSI mode, with the ai_query rules enforced.

Push-down jobs run whole, answered by an agent that follows the responseFormat it is sent: every
row must come back answered, typed, without an error. REST-fallback jobs run their SQL up to the
call (target creation, the rows to send); the calls themselves are the REST client's tests.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import databricks.sql
import pytest

import agentbatch
from agentbatch.planning.definition import RestFallback
from agentbatch.testing.images import write_sample_folder

from .server import Warehouse, serve_warehouse
from .spark_executor import SparkExecutor, spark_database

ROOT = Path(__file__).resolve().parents[3]
JOBS = sorted((ROOT / "jobs").glob("*.yml"))
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"
_SAMPLES = {"string": "text", "integer": 3, "number": 1.5, "boolean": True}


def schema_following_agent(endpoint: str, request: Any, **named: Any) -> str:
    """A foundation model: a STRING prompt only; with a JSON-schema responseFormat, an object
    of that schema; else a sentence."""
    assert isinstance(request, str), "foundation models take a STRING request"
    fmt = named.get("responseFormat")
    if fmt is None:
        return f"Summary: {request[:40]}"
    schema = json.loads(fmt)["json_schema"]["schema"]
    return json.dumps({name: _SAMPLES[sub["type"]] for name, sub in schema["properties"].items()})


def load_tickets(wh: Warehouse, volumes_dir: Path | None = None) -> None:
    raw = (volumes_dir or wh.volumes_dir) / "main" / "support" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copy(TICKETS, raw / "support_tickets.csv")
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS main.support")
        cur.execute("DROP TABLE IF EXISTS main.support.tickets")
        cur.execute(
            "CREATE TABLE main.support.tickets AS SELECT * FROM "
            "read_files('/Volumes/main/support/raw/support_tickets.csv', format => 'csv')"
        )


def load_photos(volumes_dir: Path) -> Path:
    """The sample images of the image example job, in its volume folder."""
    write_sample_folder(volumes_dir / "main" / "shop" / "photos", 8)
    return volumes_dir


@pytest.fixture(scope="module")
def spark_examples_warehouse(spark_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    volumes = load_photos(tmp_path_factory.mktemp("volumes"))
    executor = SparkExecutor(spark_session, ai_query=schema_following_agent, volumes_dir=volumes)
    database = spark_database("main", "support")  # this executor has no read_files
    spark_session.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    tickets = (
        spark_session.read.option("header", True).option("inferSchema", True).csv(str(TICKETS))
    )
    tickets.write.mode("overwrite").format("parquet").saveAsTable(f"{database}.tickets")
    with serve_warehouse(executor) as wh:
        yield wh


@pytest.fixture(params=["duckdb", pytest.param("spark", marks=[pytest.mark.spark])])
def examples_warehouse(
    request: pytest.FixtureRequest, make_warehouse: Callable[..., Warehouse], tmp_path: Path
) -> Warehouse:
    if request.param == "spark":
        wh: Warehouse = request.getfixturevalue("spark_examples_warehouse")
        return wh
    wh = make_warehouse(ai_query=schema_following_agent, volumes_dir=tmp_path / "volumes")
    load_tickets(wh, tmp_path / "volumes")  # where the DuckDB executor reads /Volumes from
    load_photos(tmp_path / "volumes")
    return wh


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_example_job_sql_runs_on_the_loopback_warehouse(
    examples_warehouse: Warehouse, job: Path, tmp_path: Path
) -> None:
    on_spark = isinstance(examples_warehouse.service._executor, SparkExecutor)
    path = job
    if on_spark:  # the Spark executor keeps Parquet tables: no MERGE, so mode overwrite
        path = tmp_path / job.name
        path.write_text(job.read_text().replace("mode: merge", "mode: overwrite"))
    plan = agentbatch.plan(path, target="databricks-sql")
    output = plan.job.output.table
    with (
        databricks.sql.connect(**examples_warehouse.connect_kwargs()) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {output.rsplit('.', 1)[0]}")
        cur.execute(f"DROP TABLE IF EXISTS {output}")
        if isinstance(plan.steps, RestFallback):
            statements = [s.sql for s in (plan.steps.ensure_target, plan.steps.inputs) if s]
            for sql in statements:
                cur.execute(sql)
            assert cur.fetchall_arrow().num_rows > 0  # rows to send
            return
        for statement in plan.statements:
            cur.execute(statement.sql)
        cur.execute(f"SELECT response, error FROM {output}")
        rows = cur.fetchall_arrow().to_pylist()
    assert rows
    assert [r["error"] for r in rows] == [None] * len(rows)
    assert all(r["response"] is not None for r in rows)
    if plan.job.agent.response_format is not None:
        assert all(isinstance(r["response"], dict) for r in rows)
