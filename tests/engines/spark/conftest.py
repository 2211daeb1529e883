"""One local Spark session for the whole spark suite (it takes several seconds to start)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from agentbatch.engines.spark.engine import SparkEngine

HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    # PySpark 4.3 warns on import that it does not fully support pandas 3; the engine moves data
    # as Arrow (mapInArrow, Arrow UDFs), not pandas.
    config.addinivalue_line(
        "filterwarnings", "ignore:PySpark does not yet fully support pandas:FutureWarning"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("agentbatch-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def make_engine(spark: SparkSession, tmp_path: Path) -> Iterator[object]:
    """`make_engine(settings=..., tables=..., output_tables=...)`: engines on the shared session."""
    engines: list[SparkEngine] = []

    def make(settings: dict[str, object] | None = None, **kwargs: object) -> SparkEngine:
        merged = {
            "warehouse_dir": str(tmp_path / "warehouse"),
            "state_dir": str(tmp_path / "state"),
            **(settings or {}),
        }
        engine = SparkEngine(merged, spark=spark, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
