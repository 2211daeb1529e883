"""`ai_query(...)` with Databricks named arguments, answered by a Python test agent in DuckDB."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import databricks.sql
import pytest
from databricks.sql.client import Connection
from databricks.sql.exc import ServerOperationError

from .agents import echo_agent, json_agent, responses_agent
from .ai_query import RESPONSES_AGENT_TYPE
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


def test_struct_request_to_a_custom_model_arrives_as_a_dict(make_warehouse: MakeWarehouse) -> None:
    wh = make_warehouse(ai_query=echo_agent, custom_models={"agent": "STRING"})
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ai_query('agent', named_struct('messages', array(named_struct("
            "'role', 'user', 'content', :question)))) AS a",
            {"question": "why?"},
        )
        answer = json.loads(cur.fetchall()[0][0])
    assert answer["request"] == {"messages": [{"role": "user", "content": "why?"}]}


@pytest.mark.parametrize(
    ("sql", "error_class"),
    [
        # A foundation-model endpoint takes a STRING request.
        (
            "SELECT ai_query('ep', named_struct('messages', array('hi')))",
            "DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE",
        ),
        (
            "SELECT ai_query('ep', s) FROM (SELECT named_struct('a', 'hi') AS s)",
            "DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE",
        ),
        # The endpoint is a STRING literal.
        ("SELECT ai_query(e, 'hi') FROM (SELECT 'ep' AS e)", "NOT_A_CONSTANT_STRING.NOT_CONSTANT"),
        (
            "SELECT ai_query(concat('e', 'p'), 'hi', failOnError => false)",
            "NOT_A_CONSTANT_STRING.NOT_CONSTANT",
        ),
        # A DDL responseFormat: exactly one top-level field, wrapping the wanted struct.
        (
            "SELECT ai_query('ep', 'hi', responseFormat => 'STRUCT<label: STRING, urgency: INT>')",
            "AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT.DDL_STRING",
        ),
        (
            "SELECT ai_query('ep', 'hi', responseFormat => 'label STRING')",
            "AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT.DDL_STRING",
        ),
        (
            """SELECT ai_query('ep', 'hi', responseFormat => '{"type": "xml"}')""",
            "AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT.JSON_STRING",
        ),
        # Custom models take no modelParameters.
        (
            "SELECT ai_query('agent', named_struct('input', array('hi')), "
            "modelParameters => named_struct('max_tokens', 5))",
            "AI_FUNCTION_INVALID_MODEL_PARAMETERS.UNSUPPORTED_ENDPOINT_TYPE",
        ),
    ],
)
def test_calls_databricks_refuses_are_refused(
    make_warehouse: MakeWarehouse, sql: str, error_class: str
) -> None:
    wh = make_warehouse(ai_query=echo_agent, custom_models={"agent": "STRING"})
    with (
        databricks.sql.connect(**wh.connect_kwargs()) as conn,
        conn.cursor() as cur,
        pytest.raises(ServerOperationError, match=re.escape(f"[{error_class}]")),
    ):
        cur.execute(sql)


def test_a_ddl_response_format_with_one_wrapping_field_is_accepted(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ai_query('ep', 'hi', responseFormat => "
            "'STRUCT<triage: STRUCT<label: STRING, urgency: INT>>') AS a"
        )
        answer = json.loads(cur.fetchall()[0][0])
    assert answer["responseFormat"] == "STRUCT<triage: STRUCT<label: STRING, urgency: INT>>"


def test_a_custom_model_returns_the_struct_of_its_signature(make_warehouse: MakeWarehouse) -> None:
    """ai_query infers a custom model's return type from its signature: a struct, not text."""
    wh = make_warehouse(
        ai_query=responses_agent, custom_models={"support-agent": RESPONSES_AGENT_TYPE}
    )
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ai_query('support-agent', named_struct('input', array(named_struct("
            "'role', 'user', 'content', 'hello'))), failOnError => false) AS a"
        )
        row = cur.fetchall_arrow().to_pylist()[0]["a"]
    assert row["errorMessage"] is None
    result = row["result"]
    assert result["output"][0]["content"][0]["text"] == "you said: hello"
    assert dict(result["custom_outputs"]) == {"agent": "support-agent"}


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
