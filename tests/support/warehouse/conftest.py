"""Fixtures: a loopback warehouse on DuckDB (fresh per test) and connector connections to it."""

from __future__ import annotations

import contextlib
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
from .spark_parser import shared_session


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
def spark_session() -> Iterator[Any]:
    """The one local Spark session of the run (it takes seconds to start); the DuckDB executor
    parses every statement with its SQL parser (spark_parser.py), so the two share it."""
    spark = shared_session()
    yield spark
    spark.stop()
