"""Fixtures: a loopback warehouse on DuckDB (fresh per test) and connector connections to it."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import pytest
from databricks.sql.client import Connection

from .agents import echo_agent
from .duckdb_executor import DuckDBExecutor
from .server import Warehouse, serve_warehouse
from .service import WarehouseSettings


@pytest.fixture
def duckdb_executor(tmp_path: Path) -> Iterator[DuckDBExecutor]:
    executor = DuckDBExecutor(ai_query=echo_agent, volumes_dir=tmp_path / "volumes")
    yield executor
    executor.close()


@pytest.fixture
def warehouse(duckdb_executor: DuckDBExecutor) -> Iterator[Warehouse]:
    assert duckdb_executor.volumes_dir is not None
    with serve_warehouse(duckdb_executor, volumes_dir=duckdb_executor.volumes_dir) as wh:
        yield wh


@pytest.fixture
def make_warehouse(tmp_path: Path) -> Iterator[Callable[..., Warehouse]]:
    """Start further DuckDB warehouses: `make_warehouse(ai_query=..., settings=...)`.

    Keyword arguments go to `DuckDBExecutor`, except `settings` (to `serve_warehouse`).
    """
    with contextlib.ExitStack() as stack:

        def make(settings: WarehouseSettings | None = None, **options: Any) -> Warehouse:
            executor = stack.enter_context(DuckDBExecutor(**options))
            return stack.enter_context(serve_warehouse(executor, settings=settings))

        yield make


@pytest.fixture
def connect(warehouse: Warehouse) -> Iterator[Callable[..., Connection]]:
    """Open connector connections to the warehouse; all are closed after the test."""
    opened: list[Connection] = []

    def open_connection(**options: Any) -> Connection:
        conn = databricks.sql.connect(**warehouse.connect_kwargs(**options))
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


@pytest.fixture(scope="session")
def spark_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session for the whole run (it takes seconds to start)."""
    from pyspark.sql import SparkSession  # here, so tests without Spark do not pay its import

    # Python workers run this interpreter (it has pyarrow), whichever test starts Spark first.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse_dir = tmp_path_factory.mktemp("spark-warehouse")
    with warnings.catch_warnings():
        # PySpark warns that it does not yet support the installed pandas major version.
        warnings.simplefilter("ignore", FutureWarning)
        spark = (
            SparkSession.builder.master("local[2]")
            .appName("loopback-warehouse-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.warehouse.dir", str(warehouse_dir))
            .getOrCreate()
        )
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()
