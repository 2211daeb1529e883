"""File tables: the atomic link swap and recovery after a crash between its steps."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from agentbatch.engines.spark.files import FileTable


def version(
    folder: Path, name: str, number: int, rows: list[int], *, complete: bool = True
) -> Path:
    path = folder / f".{name}.v{number:06d}"
    path.mkdir(parents=True)
    pq.write_table(pa.table({"id": rows}), path / "part-0.parquet")
    if complete:
        (path / "_SUCCESS").touch()
    return path


def test_an_adoption_cut_before_its_link_is_restored_to_the_newest_complete_version(
    tmp_path: Path,
) -> None:
    version(tmp_path, "t", 0, [1])
    newest_complete = version(tmp_path, "t", 1, [1, 2])
    version(tmp_path, "t", 2, [9], complete=False)  # a write killed before Spark committed it
    (tmp_path / ".t.adopting").touch()  # the plain folder was moved, the link not yet made
    table = FileTable(tmp_path / "t")
    assert table.exists()
    assert (tmp_path / "t").is_symlink()
    assert table.location() == newest_complete
    assert not (tmp_path / ".t.adopting").exists()


def test_a_removed_link_is_a_dropped_table(tmp_path: Path) -> None:
    """`rm` of the table's link drops it: older versions left behind are never brought back."""
    version(tmp_path, "t", 0, [1])
    version(tmp_path, "t", 1, [1, 2])
    table = FileTable(tmp_path / "t")
    assert not table.exists() and table.location() is None
    assert not (tmp_path / "t").exists()


def test_a_link_whose_version_was_removed_is_a_dropped_table(tmp_path: Path) -> None:
    version(tmp_path, "t", 3, [1])
    os.symlink(".t.v000009", tmp_path / "t")
    assert FileTable(tmp_path / "t").location() is None


def test_no_versions_no_table(tmp_path: Path) -> None:
    table = FileTable(tmp_path / "nothing")
    assert not table.exists() and table.location() is None


def test_a_plain_parquet_folder_is_adopted_on_first_write(make_engine: Any, tmp_path: Path) -> None:
    out = tmp_path / "plain"
    out.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int32())}), out / "part-0.parquet")
    engine = make_engine(tables={"main.s.plain": out}, output_tables=["main.s.plain"])
    assert engine.read_table("main.s.plain").num_rows == 2  # read in place before any write
    engine.execute("INSERT INTO main.s.plain SELECT 3 AS id")
    assert out.is_symlink()
    assert sorted(pq.read_table(out).column("id").to_pylist()) == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".plain")) == [
        ".plain.v000001"
    ]


def test_a_table_spark_wrote_is_read_without_a_job_for_its_schema(
    make_engine: Any, spark: Any, tmp_path: Path
) -> None:
    """Spark infers a parquet folder's schema with a job (up to a second on a fresh session);
    the schema it wrote into each file's footer is the one that job finds: read from there, a
    table this engine just wrote (every run reads its target after each write) costs no job,
    with the same columns and types as Spark's own inference."""
    engine = make_engine()
    engine.execute(
        "CREATE TABLE main.s.typed AS SELECT CAST(id AS INT) AS id, "
        "CAST('2026-01-02 03:04:05' AS TIMESTAMP) AS at, CAST(1.25 AS DECIMAL(10, 2)) AS price, "
        "named_struct('label', 'a', 'score', 0.5D) AS response, array(1, 2) AS tags, "
        "map('k', 1L) AS counts, CAST(NULL AS STRING) AS error FROM range(3)"
    )
    spark.sparkContext.setJobGroup("schema", "reading a table just written")
    try:
        df = engine.query("SELECT * FROM main.s.typed")
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    assert spark.sparkContext.statusTracker().getJobIdsForGroup("schema") == []
    inferred = spark.read.parquet(str(FileTable(tmp_path / "warehouse/main/s/typed").location()))
    assert df.schema == inferred.schema
    assert sorted(
        engine.fetch_one("SELECT sum(id) AS n, max(price) AS p FROM main.s.typed").items()
    ) == [
        ("n", 3),
        ("p", Decimal("1.25")),
    ]
    # A file without Spark's schema (written by another tool) is inferred by Spark as before.
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(pa.table({"id": pa.array([1], pa.int64())}), plain / "part-0.parquet")
    other = make_engine(tables={"main.s.plain": plain}, output_tables=["main.s.plain"])
    assert other.fetch_one("SELECT max(id) AS top FROM main.s.plain") == {"top": 1}
