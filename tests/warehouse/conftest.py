"""Fixtures: a loopback warehouse on DuckDB (fresh per test) and connector connections to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import pytest
from databricks.sql.client import Connection

from .agents import echo_agent
from .duckdb_executor import DuckDBExecutor
from .server import Warehouse, serve_warehouse


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
