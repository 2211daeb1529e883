"""Tables, SQL and writes on the spark engine with parquet file tables."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from agentbatch.engines.base import WriteRequest
from agentbatch.engines.spark.files import FileTable
from agentbatch.errors import EngineError, NotSupportedError, UsageError
from agentbatch.execution.show import describe_location

MERGE_SQL = (
    "MERGE INTO `main`.`s`.`answers` AS target USING agentbatch_staged AS staged "
    "ON target.`id` = staged.`id` WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
)


def test_select_from_a_mapped_csv(make_engine: Any, tmp_path: Path) -> None:
    csv = tmp_path / "tickets.csv"
    csv.write_text("id,subject\n1,hello\n2,world\n")
    engine = make_engine(tables={"main.support.tickets": csv})
    rows = engine.fetch_one("SELECT count(*) AS n, max(subject) AS top FROM main.support.tickets")
    assert rows == {"n": 2, "top": "world"}
    assert engine.table_exists("main.support.tickets")


def test_fetch_batches_are_arrow_in_order_and_bounded(make_engine: Any) -> None:
    engine = make_engine()
    batches = list(
        engine.fetch_batches("SELECT id FROM range(0, 2500) ORDER BY id", batch_rows=1000)
    )
    assert all(b.num_rows <= 1000 for b in batches)
    ids = pa.Table.from_batches(batches).column("id").to_pylist()
    assert ids == list(range(2500))


def test_create_insert_and_read_a_file_table(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine()
    assert not engine.table_exists("main.s.t")
    engine.execute("CREATE TABLE IF NOT EXISTS main.s.t AS SELECT 1 AS id, 'a' AS v WHERE 1 = 0")
    assert engine.table_exists("main.s.t")
    assert engine.read_table("main.s.t").num_rows == 0
    engine.execute("INSERT INTO main.s.t SELECT 1 AS id, 'a' AS v")
    engine.execute("INSERT INTO main.s.t SELECT 2 AS id, 'b' AS v")
    # IF NOT EXISTS leaves the data alone.
    engine.execute("CREATE TABLE IF NOT EXISTS main.s.t AS SELECT 9 AS id, 'z' AS v")
    table = engine.read_table("main.s.t")
    assert sorted(table.column("id").to_pylist()) == [1, 2]
    # The table is a plain parquet folder behind a link, in the warehouse folder.
    link = tmp_path / "warehouse" / "main" / "s" / "t"
    assert link.is_symlink() and link.resolve().is_dir()
    engine.execute("CREATE OR REPLACE TABLE main.s.t AS SELECT 3 AS id, 'c' AS v")
    assert engine.read_table("main.s.t").column("id").to_pylist() == [3]
    # Only the current version is left on disk.
    versions = [p for p in link.parent.iterdir() if p.name.startswith(".t.v")]
    assert versions == [link.resolve()]


def test_a_file_table_is_read_again_only_after_a_write(
    make_engine: Any, spark: Any, tmp_path: Path
) -> None:
    """Reading a parquet folder costs a Spark job (its schema): statements on an unchanged table
    share one read, and every write, even a drop and re-create reusing the version's name, is
    seen by the next statement."""
    engine = make_engine()
    engine.execute("CREATE TABLE main.s.r AS SELECT 1 AS id")
    engine.fetch_one("SELECT count(*) AS n FROM main.s.r")
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("reread", "statements on an unchanged table")
    try:
        engine.query("SELECT * FROM main.s.r")
        engine.query("SELECT id FROM main.s.r WHERE id > 0")
        assert tracker.getJobIdsForGroup("reread") == []  # planning only: no schema read
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    FileTable(tmp_path / "warehouse" / "main" / "s" / "r").drop()  # as another run would
    engine.execute("CREATE TABLE main.s.r AS SELECT 7 AS id UNION ALL SELECT 8 AS id")
    assert engine.fetch_one("SELECT count(*) AS n, max(id) AS top FROM main.s.r") == {
        "n": 2,
        "top": 8,
    }


def test_drop_table_through_the_engine_drops_a_file_table(make_engine: Any) -> None:
    """A user dropping the target to start over: the next run must find no table (a DROP that
    did nothing would leave every answer in place and the rows counted as done)."""
    engine = make_engine()
    engine.execute("CREATE TABLE main.s.gone AS SELECT 1 AS id")
    assert engine.table_exists("main.s.gone")
    engine.execute("DROP TABLE main.s.gone")
    assert not engine.table_exists("main.s.gone")
    engine.execute("DROP TABLE IF EXISTS main.s.gone")  # nothing to drop: no error
    engine.execute("CREATE TABLE main.s.gone AS SELECT 2 AS id")
    assert engine.fetch_one("SELECT count(*) AS n, max(id) AS top FROM main.s.gone") == {
        "n": 1,
        "top": 2,
    }


def test_merge_by_key_rewrites_the_parquet_table(make_engine: Any) -> None:
    engine = make_engine()
    engine.execute(
        "CREATE TABLE main.s.answers AS SELECT * FROM VALUES (1, 'old-1'), (2, 'old-2') AS t(id, response)"
    )
    schema = pa.schema([("id", pa.int32()), ("response", pa.string())])
    batch = pa.record_batch(
        [pa.array([2, 3], pa.int32()), pa.array(["new-2", "new-3"])], schema=schema
    )
    request = WriteRequest("main.s.answers", "id", "merge", "agentbatch_staged", (MERGE_SQL,))
    stats = engine.write_results(request, [batch], schema)
    assert stats.rows_written == 2
    rows = sorted(engine.read_table("main.s.answers").to_pylist(), key=lambda r: r["id"])
    assert rows == [
        {"id": 1, "response": "old-1"},
        {"id": 2, "response": "new-2"},
        {"id": 3, "response": "new-3"},
    ]


def _jobs_of(spark: Any, group: str, action: Any) -> int:
    """How many Spark jobs `action()` runs (its own job group)."""
    spark.sparkContext.setJobGroup(group, "counted")
    try:
        action()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def test_a_merge_into_an_empty_table_only_writes_the_rows(make_engine: Any, spark: Any) -> None:
    """A run's first write goes into the table it just created: no target row can match, so no
    duplicate-match check, anti-join or checkpoint of the rows runs (Delta's MERGE inserts every
    source row alike, two rows of one key too): the table is the rows. Jobs left: the schema
    reads of the staged rows and of the table, and the write."""
    engine = make_engine()
    engine.execute(
        "CREATE TABLE IF NOT EXISTS main.s.answers AS "
        "SELECT CAST(NULL AS INT) AS id, CAST(NULL AS STRING) AS response FROM range(1) WHERE 1 = 0"
    )
    schema = pa.schema([("id", pa.int32()), ("response", pa.string())])
    batch = pa.record_batch(
        [pa.array([2, 3, 3], pa.int32()), pa.array(["a", "b", "c"])], schema=schema
    )
    request = WriteRequest("main.s.answers", "id", "merge", "agentbatch_staged", (MERGE_SQL,))
    jobs = _jobs_of(spark, "first-merge", lambda: engine.write_results(request, [batch], schema))
    assert jobs <= 3
    rows = sorted(engine.read_table("main.s.answers").to_pylist(), key=lambda r: r["response"])
    assert rows == [
        {"id": 2, "response": "a"},
        {"id": 3, "response": "b"},
        {"id": 3, "response": "c"},
    ]
    # Now the table holds rows: a merge matches them (and refuses two source rows for one).
    again = pa.record_batch([pa.array([2, 2], pa.int32()), pa.array(["d", "e"])], schema=schema)
    with pytest.raises(EngineError, match="MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW"):
        engine.write_results(request, [again], schema)


def test_merge_with_other_clauses_is_refused(make_engine: Any) -> None:
    engine = make_engine()
    engine.execute("CREATE TABLE main.s.m AS SELECT 1 AS id, 'x' AS v")
    with pytest.raises(NotSupportedError, match="MERGE INTO t USING s"):
        engine.execute(
            "MERGE INTO main.s.m AS t USING main.s.m AS s ON t.id = s.id "
            "WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT *"
        )


def test_a_crash_before_the_swap_leaves_the_old_table(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine()
    engine.execute("CREATE TABLE main.s.c AS SELECT 1 AS id")
    with pytest.raises(EngineError):
        # Fails while computing the new version: the old one must stay.
        engine.execute("INSERT INTO main.s.c SELECT CAST('x' AS INT) + assert_true(false) AS id")
    assert engine.read_table("main.s.c").column("id").to_pylist() == [1]


def test_mapped_output_folder_is_written_and_read_back(make_engine: Any, tmp_path: Path) -> None:
    out = tmp_path / "out" / "answers.parquet"
    engine = make_engine(tables={"main.s.out": out}, output_tables=["main.s.out"])
    engine.execute("CREATE TABLE IF NOT EXISTS main.s.out AS SELECT 1 AS id")
    engine.execute("INSERT INTO main.s.out SELECT 2 AS id")
    assert pa.parquet.read_table(out).num_rows == 2
    again = make_engine(tables={"main.s.out": out}, output_tables=["main.s.out"])
    assert sorted(again.read_table("main.s.out").column("id").to_pylist()) == [1, 2]


def test_writing_an_input_table_is_refused(make_engine: Any, tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("id\n1\n")
    engine = make_engine(tables={"main.s.input": csv})
    with pytest.raises(UsageError, match="mapped to input data"):
        engine.execute("INSERT INTO main.s.input SELECT 2 AS id")


def test_missing_table_and_bad_sql_are_engine_errors(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.raises(EngineError, match="does not exist"):
        engine.fetch_one("SELECT * FROM main.s.nothing")
    with pytest.raises(EngineError):
        engine.fetch_one("SELECT no_such_function(1)")


def test_catalog_tables_without_merge_are_rewritten(make_engine: Any) -> None:
    engine = make_engine({"storage": "catalog"})
    name = f"default.merge_{uuid.uuid4().hex[:8]}"
    engine.execute(f"CREATE TABLE {name} AS SELECT 1 AS id, 'a' AS v")
    try:
        engine.execute(
            f"MERGE INTO {name} AS target USING (SELECT * FROM VALUES (1, 'b'), (2, 'c') AS x(id, v)) AS s "
            "ON target.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        assert sorted(engine.read_table(name).to_pylist(), key=str) == [
            {"id": 1, "v": "b"},
            {"id": 2, "v": "c"},
        ]
        engine.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT 3 AS id, 'z' AS v")
        assert engine.read_table(name).to_pylist() == [{"id": 3, "v": "z"}]
        # A crash between the swap's catalog operations: test_spark_catalog.py.
    finally:
        engine.execute(f"DROP TABLE IF EXISTS {name}")


def test_a_merge_matching_one_target_row_twice_fails_as_in_delta(make_engine: Any) -> None:
    """Delta: DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE; the old table stays."""
    engine = make_engine()
    engine.execute("CREATE TABLE main.s.dup AS SELECT * FROM VALUES (1, 'old') AS t(id, response)")
    schema = pa.schema([("id", pa.int32()), ("response", pa.string())])
    batch = pa.record_batch(
        [pa.array([1, 1, 2], pa.int32()), pa.array(["a", "b", "c"])], schema=schema
    )
    merge = MERGE_SQL.replace("`answers`", "`dup`")
    request = WriteRequest("main.s.dup", "id", "merge", "agentbatch_staged", (merge,))
    with pytest.raises(
        EngineError, match=r"\[DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE\]"
    ):
        engine.write_results(request, [batch], schema)
    assert engine.read_table("main.s.dup").to_pylist() == [{"id": 1, "response": "old"}]


def test_an_output_folder_without_data_files_is_no_table_yet(
    make_engine: Any, tmp_path: Path
) -> None:
    """An empty folder mapped as the output (or a table whose data files were deleted by hand)
    has no columns to read: it is created by the run, as on the local target."""
    out = tmp_path / "empty"
    out.mkdir()
    engine = make_engine(tables={"main.s.out": out}, output_tables=["main.s.out"])
    assert not engine.table_exists("main.s.out")
    engine.execute("CREATE TABLE IF NOT EXISTS main.s.out AS SELECT 1 AS id")
    assert engine.read_table("main.s.out").column("id").to_pylist() == [1]
    for data in out.resolve().glob("part-*"):
        data.unlink()
    again = make_engine(tables={"main.s.out": out}, output_tables=["main.s.out"])
    assert not again.table_exists("main.s.out")
    again.execute("CREATE TABLE IF NOT EXISTS main.s.out AS SELECT 2 AS id")
    assert again.read_table("main.s.out").column("id").to_pylist() == [2]


def test_a_mapped_output_is_located_at_its_folder(make_engine: Any, tmp_path: Path) -> None:
    """What a run prints as where its output is: the mapped folder (`agentbatch show NAME
    --target spark` would not find a table mapped with --table)."""
    out = tmp_path / "answers"
    engine = make_engine(tables={"main.s.out": out}, output_tables=["main.s.out"])
    assert engine.location("main.s.out") == {"table": "main.s.out", "file": str(out.absolute())}
    assert engine.location("main.s.other") == {"table": "main.s.other", "target": "spark"}
    assert describe_location(engine.location("main.s.out")) == f"main.s.out: file {out.absolute()}"
