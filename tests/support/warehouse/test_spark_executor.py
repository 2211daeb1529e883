"""The connector against the loopback warehouse running on a local Spark session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import databricks.sql
import pytest
from databricks.sql.exc import ServerOperationError

from .agents import echo_agent
from .server import Warehouse, serve_warehouse
from .spark_executor import SparkExecutor

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def spark_warehouse(spark_session: Any) -> Iterator[Warehouse]:
    executor = SparkExecutor(spark_session, ai_query=echo_agent)
    with serve_warehouse(executor) as wh:
        yield wh


def test_create_insert_select_with_parameters(spark_warehouse: Warehouse) -> None:
    with databricks.sql.connect(**spark_warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS main.sparky")
        cur.execute("CREATE TABLE main.sparky.items (id BIGINT, name STRING) USING DELTA")
        cur.execute("INSERT INTO main.sparky.items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        cur.execute(
            "SELECT id, name FROM main.sparky.items WHERE id >= :low ORDER BY id", {"low": 2}
        )
        assert [tuple(r) for r in cur.fetchall()] == [(2, "two"), (3, "three")]


def test_ai_query_named_arguments_arrive_as_keyword_arguments(spark_warehouse: Warehouse) -> None:
    with databricks.sql.connect(**spark_warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, ai_query('echo-endpoint', concat('Q', id), returnType => 'STRING', "
            "failOnError => false, modelParameters => named_struct('max_tokens', 8), "
            'responseFormat => \'{"type": "json_object"}\') AS answer, '
            "ai_query('echo-endpoint', CASE WHEN id = 1 THEN 'FAIL' ELSE 'ok' END, "
            "failOnError => false) AS checked "
            "FROM VALUES (0), (1) AS v(id) ORDER BY id"
        )
        rows = cur.fetchall_arrow().to_pylist()
    first = json.loads(rows[0]["answer"]["result"])
    assert first == {
        "endpoint": "echo-endpoint",
        "request": "Q0",
        "modelParameters": {"max_tokens": 8},
        "responseFormat": '{"type": "json_object"}',
    }
    assert rows[0]["checked"]["errorMessage"] is None
    assert rows[1]["checked"]["result"] is None
    assert "refused" in rows[1]["checked"]["errorMessage"]


def test_ai_query_failure_fails_the_statement_by_default(spark_warehouse: Warehouse) -> None:
    with (
        databricks.sql.connect(**spark_warehouse.connect_kwargs()) as conn,
        conn.cursor() as cur,
        pytest.raises(ServerOperationError, match="refused"),
    ):
        cur.execute("SELECT ai_query('ep', 'please FAIL') AS a")


def test_cancel_interrupts_spark_jobs(spark_warehouse: Warehouse) -> None:
    sql = "SELECT count(*) FROM range(0, 20000000000, 1, 2) WHERE id % 7 = 3"
    with databricks.sql.connect(**spark_warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute_async(sql)
        spark_warehouse.wait_until_running("range(0, 20000000000")
        cur.cancel()
    assert spark_warehouse.cancelled[-1] == sql
    assert spark_warehouse.wait_until_idle(timeout_s=60)
