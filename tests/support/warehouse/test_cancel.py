"""Cancelling a running statement stops its work in the executor."""

from __future__ import annotations

import threading
from collections.abc import Callable

import databricks.sql
import pytest
from databricks.sql.backend.types import CommandState
from databricks.sql.client import Connection
from databricks.sql.exc import Error

from .agents import slow_agent
from .server import Warehouse

Connect = Callable[..., Connection]

LONG = "SELECT count(*) FROM range(100000000000) AS r(i) WHERE i % 7 = 3"


def test_cursor_cancel_from_another_thread_stops_a_running_execute(
    connect: Connect, warehouse: Warehouse
) -> None:
    outcome: list[BaseException | None] = []
    with connect() as conn, conn.cursor() as cur:

        def run() -> None:
            try:
                cur.execute(LONG)
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        worker = threading.Thread(target=run)
        worker.start()
        warehouse.wait_until_polled("range(100000000000)")
        cur.cancel()
        worker.join(timeout=30)
        assert not worker.is_alive()
    assert isinstance(outcome[0], Error)
    assert "cancelled" in str(outcome[0])
    assert warehouse.cancelled == [LONG]
    assert warehouse.wait_until_idle(timeout_s=30), "DuckDB kept running after the cancel"


def test_cancel_of_an_async_statement(connect: Connect, warehouse: Warehouse) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute_async(LONG)
        warehouse.wait_until_running("range(100000000000)")
        cur.cancel()
        assert cur.get_query_state() == CommandState.CANCELLED
    assert warehouse.cancelled == [LONG]
    assert warehouse.wait_until_idle(timeout_s=30)


def test_cancel_stops_a_long_ai_query_statement(make_warehouse: Callable[..., Warehouse]) -> None:
    wh = make_warehouse(ai_query=slow_agent, ai_query_concurrency=2)
    sql = "SELECT ai_query('slow', concat('q', id)) AS answer FROM range(100000) AS r(id)"
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute_async(sql)
        wh.wait_until_running("ai_query('slow'")
        cur.cancel()
        assert cur.get_query_state() == CommandState.CANCELLED
    # 100k rows at 50 ms / 2 workers would take over 40 minutes
    assert wh.wait_until_idle(timeout_s=30)
    assert wh.cancelled == [sql]


def test_fetching_a_cancelled_statement_raises(connect: Connect, warehouse: Warehouse) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute_async(LONG)
        warehouse.wait_until_running("range(100000000000)")
        cur.cancel()
        with pytest.raises(Error):
            cur.get_async_execution_result()  # type: ignore[no-untyped-call]
