"""Answers handed to Spark from the driver on a cluster (no disk shared with the executors): a
long run's answers go through a table beside the output chunk by chunk, so the driver never holds
them all (before, one Arrow table of every answer of the run went to `createDataFrame`).

A local session shares the driver's disk, so these tests tell the engine it is a cluster's
driver (`session.is_local`); everything else is the real local Spark session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from agentbatch.engines.base import WriteRequest
from agentbatch.engines.spark import arrow, session
from agentbatch.engines.spark.arrow import StagedBatches
from agentbatch.engines.spark.spill import SpillFolder, SpillTable, spill_name

SCHEMA = pa.schema([("id", pa.int64()), ("response", pa.string())])
BATCHES, ROWS_PER_BATCH, ANSWER_BYTES = 12, 400, 2_000
MERGE_SQL = (
    "MERGE INTO main.s.answers AS t USING agentbatch_staged AS s ON t.id = s.id "
    "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
)


def answers(peak: list[int]) -> Iterator[pa.RecordBatch]:
    """The run's answers as the ledger hands them over, recording the most Arrow memory held."""
    for b in range(BATCHES):
        ids = range(b * ROWS_PER_BATCH, (b + 1) * ROWS_PER_BATCH)
        texts = [f"{i}:" + "x" * ANSWER_BYTES for i in ids]
        yield pa.record_batch([pa.array(list(ids), pa.int64()), pa.array(texts)], schema=SCHEMA)
        peak[0] = max(peak[0], pa.total_allocated_bytes())


def staged_rows(spark: SparkSession, in_memory_rows: int, table: str) -> tuple[int, int, bool]:
    peak = [0]
    spill = SpillTable(spark, ("default",), table)
    staged = StagedBatches(
        spark,
        answers(peak),
        SCHEMA,
        on_local_disk=False,
        spill=spill,
        in_memory_rows=in_memory_rows,
    )
    with staged as df:
        rows = df.collect()
        assert sorted(r["id"] for r in rows) == list(range(BATCHES * ROWS_PER_BATCH))
        assert all(r["response"].startswith(f"{r['id']}:") for r in rows)
        spilled = spark.catalog.tableExists(spill.name)
    assert not spark.catalog.tableExists(spill.name)  # dropped with the context
    return staged.rows, peak[0], spilled


def test_a_long_run_s_answers_are_never_all_held_by_the_driver(spark: SparkSession) -> None:
    total_bytes = BATCHES * ROWS_PER_BATCH * ANSWER_BYTES
    base = pa.total_allocated_bytes()
    rows, peak, spilled = staged_rows(spark, 10**9, "all_at_once")
    # The control: under a limit above the run, every answer is held at once.
    assert (rows, spilled) == (BATCHES * ROWS_PER_BATCH, False)
    assert peak - base >= 0.9 * total_bytes
    rows, peak, spilled = staged_rows(spark, 2 * ROWS_PER_BATCH, "chunked")
    assert (rows, spilled) == (BATCHES * ROWS_PER_BATCH, True)
    assert peak - base <= 0.4 * total_bytes


def catalog_tables(spark: SparkSession) -> set[str]:
    return {t.name for t in spark.catalog.listTables("default") if not t.isTemporary}


@pytest.fixture
def cluster_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "is_local", lambda spark: False)
    monkeypatch.setattr(arrow, "IN_MEMORY_ROWS", 2 * ROWS_PER_BATCH)


@pytest.mark.usefixtures("cluster_driver")
@pytest.mark.parametrize(
    ("storage", "table"), [("files", "main.s.answers"), ("catalog", "default.staged_answers")]
)
def test_a_merge_from_a_cluster_driver_writes_every_answer_once(
    make_engine: Any, spark: SparkSession, tmp_path: Path, storage: str, table: str
) -> None:
    engine = make_engine({"storage": storage})
    engine.execute(
        f"CREATE TABLE {table} USING parquet AS "
        "SELECT * FROM VALUES (CAST(1 AS BIGINT), 'old-1'), (CAST(99999 AS BIGINT), 'kept') "
        "AS t(id, response)"
    )
    merge = MERGE_SQL.replace("main.s.answers", table)
    request = WriteRequest(table, "id", "merge", "agentbatch_staged", (merge,))
    tables_before = catalog_tables(spark)
    stats = engine.write_results(request, answers([0]), SCHEMA)
    assert stats.rows_written == BATCHES * ROWS_PER_BATCH
    rows = engine.read_table(table).to_pylist()
    assert sorted(r["id"] for r in rows) == [*range(BATCHES * ROWS_PER_BATCH), 99999]
    assert next(r for r in rows if r["id"] == 1)["response"].startswith("1:")
    # The spill went with the write: no table or folder left behind.
    assert catalog_tables(spark) == tables_before
    assert not any((tmp_path / "warehouse" / ".spill").glob("*"))
    if storage == "catalog":
        engine.execute(f"DROP TABLE {table}")


def test_a_spill_a_killed_run_left_is_removed_a_day_later(
    spark: SparkSession, tmp_path: Path
) -> None:
    now = 1_900_000_000
    old, recent = spill_name("answers", now - 25 * 3600), spill_name("answers", now - 3600)
    other = spill_name("other", now - 25 * 3600)
    for name in (old, recent, other):
        spark.sql(f"CREATE TABLE default.`{name}` (id BIGINT) USING parquet")
    SpillTable(spark, ("default",), "answers").remove_leftovers(now=now)
    assert {old, recent, other} & catalog_tables(spark) == {recent, other}
    for name in (recent, other):
        spark.sql(f"DROP TABLE default.`{name}`")

    for name in (old, recent, other):
        (tmp_path / name).mkdir()
    SpillFolder(spark, tmp_path, "answers").remove_leftovers(now=now)
    assert {p.name for p in tmp_path.iterdir()} == {recent, other}
