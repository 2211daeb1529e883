"""`ai_query(...)` with Databricks named arguments, answered by a Python test agent in DuckDB."""

from __future__ import annotations

import json
from collections.abc import Callable

import databricks.sql
import pytest
from databricks.sql.client import Connection
from databricks.sql.exc import ServerOperationError

from .agents import json_agent
from .server import Warehouse

Connect = Callable[..., Connection]
MakeWarehouse = Callable[..., Warehouse]

PUSH_DOWN = """
SELECT id,
       ai_query(
         'echo-endpoint',
         concat('Summarise ticket ', id),
         returnType => 'STRING',
         failOnError => false,
         modelParameters => named_struct('max_tokens', 64, 'temperature', 0.0),
         responseFormat => '{"type":"json_object"}'
       ) AS answer
FROM range(3) AS r(id)
ORDER BY id
"""


def test_named_arguments_reach_the_agent(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(PUSH_DOWN)
        table = cur.fetchall_arrow()
    assert table.schema.field("answer").type.names == ["result", "errorMessage"]
    rows = table.to_pylist()
    assert [r["answer"]["errorMessage"] for r in rows] == [None, None, None]
    first = json.loads(rows[0]["answer"]["result"])
    assert first == {
        "endpoint": "echo-endpoint",
        "request": "Summarise ticket 0",
        "modelParameters": {"max_tokens": 64, "temperature": 0.0},
        "responseFormat": '{"type":"json_object"}',
    }


def test_fail_on_error_false_puts_the_failure_in_the_row(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ai_query('ep', req, failOnError => false) AS a "
            "FROM VALUES ('fine'), ('please FAIL'), (NULL) AS v(req)"
        )
        rows = [r.a for r in cur.fetchall()]
    assert json.loads(rows[0]["result"])["request"] == "fine" and rows[0]["errorMessage"] is None
    assert rows[1]["result"] is None and "refused" in rows[1]["errorMessage"]
    assert rows[2] == {"result": None, "errorMessage": None}


def test_a_failing_row_fails_the_statement_by_default(connect: Connect) -> None:
    with (
        connect() as conn,
        conn.cursor() as cur,
        pytest.raises(ServerOperationError, match="refused"),
    ):
        cur.execute("SELECT ai_query('ep', 'please FAIL') AS a")


def test_struct_request_arrives_as_a_dict(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ai_query('agent', named_struct('messages', array(named_struct("
            "'role', 'user', 'content', :question)))) AS a",
            {"question": "why?"},
        )
        answer = json.loads(cur.fetchall()[0][0])
    assert answer["request"] == {"messages": [{"role": "user", "content": "why?"}]}


def test_return_type_struct_is_parsed_from_the_answer(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse(ai_query=json_agent)
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ai_query('ep', 'abc', returnType => 'STRUCT<label: STRING, length: INT>') AS a, "
            "ai_query('ep', 'xy', returnType => 'STRUCT<label: STRING, length: INT>', "
            "failOnError => false) AS b"
        )
        row = cur.fetchall_arrow().to_pylist()[0]
    assert row["a"] == {"label": "ABC", "length": 3}
    assert row["b"] == {"result": {"label": "XY", "length": 2}, "errorMessage": None}


def test_ai_query_without_an_agent_is_a_clear_error(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse()
    with (
        databricks.sql.connect(**wh.connect_kwargs()) as conn,
        conn.cursor() as cur,
        pytest.raises(ServerOperationError, match="no agent configured"),
    ):
        cur.execute("SELECT ai_query('ep', 'x')")
