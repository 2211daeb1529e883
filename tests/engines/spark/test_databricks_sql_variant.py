"""A VARIANT passthrough column through the REST fallback on the databricks-sql target (here, not
beside the other databricks-sql tests: it needs Spark 4, for the loopback warehouse's VARIANT).

Databricks sends a VARIANT value as its JSON text, marked VARIANT in the Arrow field's metadata
(databricks-sql-connector `backend/thrift_backend.py` `_col_to_description`); the loopback
warehouse on its Spark executor sends it so. Staged as that text, the value reached the target's
VARIANT column as a VARIANT *string* (Delta's MERGE and Spark's UNION cast STRING to VARIANT, as
`CAST(x AS VARIANT)`, which does not parse): the answers were paid for and the column no longer
held the object. It is staged as VARIANT, read back with `parse_json`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import pyarrow as pa
import pytest

import agentbatch
from agentbatch.engines.databricks_sql.staging import VolumeLoader, create_table_sql
from agentbatch.testing.agent_server import AgentServer
from tests.support.databricks_env import isolate
from tests.support.warehouse.conftest import spark_session  # noqa: F401 (a fixture)
from tests.support.warehouse.server import Warehouse, serve_warehouse
from tests.support.warehouse.spark_executor import SparkExecutor

pytestmark = [pytest.mark.spark, pytest.mark.slow]

TOKEN = "dapi-variant-test-token"
SOURCE_ROWS = [
    (1, "parcel late", """parse_json('{"a": 1, "b": [1,2]}')"""),
    (2, "wrong size", """parse_json('[1, "two", {"three": 3.5}]')"""),
    (3, "refund", """parse_json('"just text"')"""),
    (4, "no details", "CAST(NULL AS VARIANT)"),
    (5, "json null", "parse_json('null')"),
]

JOB = """\
name: variant_triage
source:
  table: main.shop.tickets
  key: id
  columns: [subject, details]
request: "concat('Classify this support ticket: ', subject)"
agent:
  endpoint: apps/triage-agent
  api: responses
  response_format: "STRUCT<label: STRING, urgency: INT>"
output:
  table: main.shop.triaged
  mode: {mode}
"""


@pytest.fixture(autouse=True)
def isolated_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, token=TOKEN)


@pytest.fixture
def warehouse(spark_session: Any) -> Iterator[Warehouse]:  # noqa: F811
    with serve_warehouse(SparkExecutor(spark_session), token=TOKEN) as wh:
        with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA IF NOT EXISTS main.shop")
            for table in ("tickets", "triaged"):
                cur.execute(f"DROP TABLE IF EXISTS main.shop.{table}")
            cur.execute(
                "CREATE TABLE main.shop.tickets (id BIGINT, subject STRING, details VARIANT)"
            )
            values = ", ".join(f"({i}, '{s}', {v})" for i, s, v in SOURCE_ROWS)
            cur.execute(f"INSERT INTO main.shop.tickets VALUES {values}")
        yield wh


def variant_values(wh: Warehouse, table: str) -> dict[int, tuple[Any, ...]]:
    """Each key's VARIANT as Databricks shows it: its JSON text and its schema."""
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT id, to_json(details) AS j, schema_of_variant(details) AS s, "
            f"details IS NULL AS n FROM {table}"
        )
        return {r["id"]: (r["j"], r["s"], r["n"]) for r in cur.fetchall_arrow().to_pylist()}


def test_a_variant_column_arrives_as_text_marked_variant(warehouse: Warehouse) -> None:
    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, details FROM main.shop.tickets ORDER BY id")
        assert [d[1] for d in cur.description or ()] == ["bigint", "variant"]
        rows = cur.fetchall_arrow()
    assert rows.schema.field("details").metadata == {b"Spark:DataType:SqlName": b"VARIANT"}
    assert rows.column("details").to_pylist() == [
        '{"a":1,"b":[1,2]}',
        '[1,"two",{"three":3.5}]',
        '"just text"',
        None,
        "null",
    ]


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


def test_a_variant_passthrough_column_keeps_its_values(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path
) -> None:
    """Mode overwrite: the loopback's Spark tables take no MERGE (Delta's MERGE casts the staged
    column to the target's type alike: `UpdateExpressionsSupport.castIfNeeded`)."""
    job = tmp_path / "jobs" / "variant_triage.yml"
    job.parent.mkdir()
    job.write_text(JOB.format(mode="overwrite"))
    first = run_job(job, warehouse, agent, tmp_path)
    assert (first["strategy"], first["sent"], first["errors"]) == ("rest-fallback", 5, 0)
    assert variant_values(warehouse, "main.shop.triaged") == variant_values(
        warehouse, "main.shop.tickets"
    )
    staged = [s for s in warehouse.statements if "from_json(:rows" in s]
    assert "parse_json(`rows`.`details`)" in staged[0]
    # A new row: its answer is staged, the others' rows are kept as the target holds them.
    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO main.shop.tickets VALUES (6, 'late again', parse_json('{\"c\": {}}'))"
        )
    second = run_job(job, warehouse, agent, tmp_path)
    assert (second["sent"], second["errors"]) == (1, 0)
    source = variant_values(warehouse, "main.shop.tickets")
    assert len(source) == 6
    assert variant_values(warehouse, "main.shop.triaged") == source
    assert run_job(job, warehouse, agent, tmp_path)["sent"] == 0
    assert agent.stats().requests_total == 6


def test_volume_staging_parses_the_variant_text_back(
    spark_session: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Through a volume the VARIANT text travels in Parquet as STRING; an INSERT takes no STRING
    into a VARIANT column (INCOMPATIBLE_DATA_FOR_TABLE.CANNOT_SAFELY_CAST), so the staged SELECT
    parses it. Run on real Spark: the `read_files` call becomes Spark's own Parquet reader."""
    marked = {b"Spark:DataType:SqlName": b"VARIANT"}
    schema = pa.schema([("id", pa.int64()), pa.field("details", pa.string(), metadata=marked)])
    texts = ['{"a":1,"b":[1,2]}', '"just text"', None, "null"]
    batch = pa.record_batch([pa.array([1, 2, 3, 4]), pa.array(texts)], schema=schema)
    folder = tmp_path / "staged"
    folder.mkdir()
    sent: list[str] = []

    def put(path: str, data: bytes) -> None:  # the volume's files, where Spark reads them
        (folder / path.rsplit("/", 1)[1]).write_bytes(data)

    loader = VolumeLoader(
        run=lambda sql, _: sent.append(sql),
        put=put,
        remove=lambda path: None,
        directory="/Volumes/main/shop/staging/run",
    )
    assert loader.load("staged", [batch], schema) == 4
    create = create_table_sql("variant_staged", schema)
    assert create.endswith("(`id` BIGINT, `details` VARIANT)")
    spark_session.sql("DROP TABLE IF EXISTS variant_staged")
    spark_session.sql(create.replace("CREATE OR REPLACE", "CREATE") + " USING parquet")
    local = f"parquet.`{folder.as_posix()}`"
    insert = sent[0].replace(
        "read_files('/Volumes/main/shop/staging/run', format => 'parquet')", local
    )
    spark_session.sql(insert.replace("INSERT INTO staged", "INSERT INTO variant_staged"))
    rows = spark_session.sql(
        "SELECT id, to_json(details) AS j, details IS NULL AS n FROM variant_staged ORDER BY id"
    ).collect()
    assert [(r.j, r.n) for r in rows] == [(t, t is None) for t in texts]
