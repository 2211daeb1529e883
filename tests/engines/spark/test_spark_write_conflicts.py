"""On Databricks a spark target's table is Delta: a statement that another run's commit overtook
fails with a write conflict and changed nothing, and the engine runs it again, as the
databricks-sql engine does (docs/databricks-behaviour.md, target rows). Before, the run failed.

A Delta table cannot exist on this Spark session (Delta's jars are not here), so the conflict is
a real statement failing in real Spark: a Python UDF in an INSERT the engine runs as is raises
Delta's exception class, `ConcurrentAppendException` (its name is what Spark's error carries
from the worker), on its first evaluations, before the insert commits anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from agentbatch.errors import EngineError

TABLE = "conflicts_demo.answers"


def register_failing(spark: SparkSession, folder: Path, failures: int, name: str) -> None:
    """`failing(id)`: raises `name` the first `failures` times it is evaluated (one marker
    file per failure, made in the worker process), then returns `id`."""
    folder.mkdir()

    def failing(value: int) -> int:
        for number in range(failures):
            try:
                os.close(os.open(folder / f"failed-{number}", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            error = type(name, (Exception,), {})
            raise error(
                "Files were added to the root of the table by a concurrent update. "
                "Please try the operation again."
            )
        return value

    spark.udf.register("failing", failing, "int")


@pytest.fixture
def engine(make_engine: Any, spark: SparkSession) -> Any:
    """A catalog table (no Delta here: parquet) that the engine inserts into as it is."""
    spark.sql("CREATE DATABASE IF NOT EXISTS conflicts_demo")
    spark.sql(f"DROP TABLE IF EXISTS {TABLE}")
    spark.sql(f"CREATE TABLE {TABLE} (id INT) USING parquet")
    yield make_engine({"storage": "catalog", "conflict_backoff_s": 0.01})
    spark.sql(f"DROP TABLE IF EXISTS {TABLE}")


def stored(spark: SparkSession) -> list[int]:
    return sorted(row.id for row in spark.table(TABLE).collect())


def failures(folder: Path) -> int:
    return len(list(folder.iterdir()))


def test_a_statement_in_a_write_conflict_is_run_again_and_writes_once(
    engine: Any, spark: SparkSession, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    register_failing(spark, markers, failures=2, name="ConcurrentAppendException")
    engine.execute(f"INSERT INTO {TABLE} SELECT failing(id) FROM VALUES (1), (2) AS t(id)")
    assert failures(markers) == 2  # two attempts refused ...
    assert stored(spark) == [1, 2]  # ... and the third wrote each row once


def test_conflicts_that_outlast_the_attempts_fail_the_statement(
    make_engine: Any, engine: Any, spark: SparkSession, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    register_failing(spark, markers, failures=10, name="ConcurrentAppendException")
    limited = make_engine(
        {"storage": "catalog", "conflict_backoff_s": 0.01, "conflict_attempts": 3}
    )
    with pytest.raises(EngineError, match="3 attempts failed"):
        limited.execute(f"INSERT INTO {TABLE} SELECT failing(id) FROM VALUES (1) AS t(id)")
    assert failures(markers) == 3
    assert stored(spark) == []


def test_another_failure_is_not_run_again(engine: Any, spark: SparkSession, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    register_failing(spark, markers, failures=2, name="ArithmeticError")
    with pytest.raises(EngineError, match="ArithmeticError"):
        engine.execute(f"INSERT INTO {TABLE} SELECT failing(id) FROM VALUES (1) AS t(id)")
    assert failures(markers) == 1
    assert stored(spark) == []
