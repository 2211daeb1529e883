"""The loopback warehouse refuses the SQL Databricks' parser refuses: every statement is parsed by
Apache Spark's SQL parser first (spark_parser.py), and one it cannot parse fails with error class
PARSE_SYNTAX_ERROR and SQLSTATE 42601, as a warehouse fails it
(docs.databricks.com/aws/en/error-messages/error-classes)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from databricks.sql.client import Connection
from databricks.sql.exc import ServerOperationError

from .server import Warehouse
from .spark_parser import DATABRICKS_ONLY, check_statement, databricks_message

Connect = Callable[..., Connection]
BUNDLE_SQL = sorted((Path(__file__).parents[3] / "resources" / "sql").glob("*.sql"))

# Each is read by sqlglot's Databricks dialect and run by DuckDB, and refused by Databricks.
REFUSED = [
    pytest.param("SELECT id FROM main.default.t ORDER BY id LIMIT 1, 2", id="mysql-limit-offset"),
    pytest.param(
        "SELECT id FROM main.default.t ORDER BY id FETCH FIRST 2 ROWS ONLY", id="fetch-first"
    ),
    pytest.param("SELECT ARRAY[1, 2] AS a", id="postgres-array-literal"),
    pytest.param("SELECT id, FROM main.default.t", id="trailing-comma"),
    pytest.param("INSERT INTO main.default.t SELECT 4 AS id RETURNING id", id="insert-returning"),
    pytest.param(
        "UPDATE main.default.t SET id = s.id + 10 FROM (SELECT 1 AS id) AS s WHERE s.id = t.id",
        id="update-from",
    ),
    # One statement per execute: a second one is `extra input` (the warehouse's answer in
    # databricks/databricks-sql-go#273 and databricks/dbt-databricks#642); a final `;` is fine.
    pytest.param("SELECT id FROM main.default.t; SELECT 2 AS b", id="two-statements"),
]


@pytest.mark.parametrize("sql", REFUSED)
def test_sql_databricks_refuses_fails_with_a_parse_syntax_error(
    connect: Connect, warehouse: Warehouse, sql: str, caplog: pytest.LogCaptureFixture
) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.t (id BIGINT)")
        cur.execute("INSERT INTO main.default.t VALUES (1), (2), (3)")
        # The connector logs each Thrift reply there (a logger that does not propagate).
        replies = logging.getLogger("databricks.sql.unsafe")
        replies.addHandler(caplog.handler)
        try:
            with pytest.raises(ServerOperationError) as refused:
                cur.execute(sql)
        finally:
            replies.removeHandler(caplog.handler)
        message = str(refused.value)
        assert message.startswith("[PARSE_SYNTAX_ERROR] Syntax error at or near ")
        first_line, sql_excerpt = message.split("\n\n== SQL ==\n")
        assert " SQLSTATE: 42601 (line 1, pos " in first_line
        assert sql_excerpt.startswith(sql)
        # The status the connector receives carries the SQLSTATE too.
        assert "sqlState='42601'" in caplog.text
        cur.execute("SELECT id FROM main.default.t ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [1, 2, 3]  # nothing ran
    assert warehouse.statements[-2] == sql


def test_one_statement_may_end_with_a_semicolon(connect: Connect) -> None:
    """Spark's grammar: `singleStatement: statement SEMICOLON* EOF` (SqlBaseParser.g4); only a
    second statement is refused (`two-statements` above)."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one;")
        assert cur.fetchall()[0][0] == 1


def test_parameter_markers_are_parsed_before_they_are_bound(connect: Connect) -> None:
    """Named (`:name`) and positional (`?`) markers are part of Databricks' grammar."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.t (id BIGINT, label STRING)")
        cur.execute("INSERT INTO main.default.t VALUES (:id, :label)", {"id": 1, "label": "one"})
        cur.execute("SELECT label FROM main.default.t WHERE id = ?", [1])
        assert cur.fetchall()[0][0] == "one"


def test_a_refused_statement_is_parsed_once() -> None:
    """Parses are cached by statement text: a job's statements repeat across its runs."""
    from .spark_parser import _refusal

    sql = "SELECT id FROM range(3) ORDER BY id LIMIT 1, 1 -- parsed once"
    before = _refusal.cache_info()
    for _ in range(3):
        with pytest.raises(ValueError, match=r"^\[PARSE_SYNTAX_ERROR\] "):
            check_statement(sql)
    after = _refusal.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)


def test_spark_3_5_words_its_message_without_the_sqlstate() -> None:
    """Spark 3.5 (the floor) leaves `SQLSTATE: ...` out of its message; the warehouse says it."""
    spark_35 = (
        "\n[PARSE_SYNTAX_ERROR] Syntax error at or near ','.(line 1, pos 40)\n\n"
        "== SQL ==\nSELECT id FROM range(5) ORDER BY id LIMIT 1, 2\n"
        "----------------------------------------^^^\n"
    )
    assert databricks_message(spark_35, "42601") == (
        "[PARSE_SYNTAX_ERROR] Syntax error at or near ','. SQLSTATE: 42601 (line 1, pos 40)\n\n"
        "== SQL ==\nSELECT id FROM range(5) ORDER BY id LIMIT 1, 2\n"
        "----------------------------------------^^^"
    )


@pytest.mark.parametrize(
    ("pattern", "source", "example"),
    DATABRICKS_ONLY,
    ids=[source.rsplit("-", 1)[-1] for _, source, _ in DATABRICKS_ONLY],
)
def test_each_databricks_only_statement_is_one_spark_refuses(
    pattern: object, source: str, example: str
) -> None:
    """An allowlisted statement passes the check, and the entry is needed: Spark refuses it."""
    from .spark_parser import _refusal

    assert source.startswith("https://docs.databricks.com/")
    check_statement(example)
    assert _refusal(example) is not None


def test_a_statement_that_only_starts_like_a_volume_command_is_refused(connect: Connect) -> None:
    """`PUT <file> TO <path>` is not the documented `PUT <file> INTO <path>`."""
    with connect() as conn, conn.cursor() as cur:
        with pytest.raises(ServerOperationError) as refused:
            cur.execute("PUT '/tmp/data.csv' TO '/Volumes/main/default/files/data.csv'")
        assert str(refused.value).startswith(
            "[PARSE_SYNTAX_ERROR] Syntax error at or near 'PUT'. SQLSTATE: 42601 (line 1, pos 0)"
        )


@pytest.mark.parametrize("path", BUNDLE_SQL, ids=[p.stem for p in BUNDLE_SQL])
def test_the_bundles_sql_files_parse_as_the_warehouse_receives_them(path: Path) -> None:
    """A SQL file task sends each statement with its parameter markers (`IDENTIFIER('`' ||
    :catalog || ...)`), which the warehouse parses before it binds them; the loopback tests
    run the file with `catalog` bound, so parse it here as written."""
    text = path.read_text(encoding="utf-8")
    # `agentbatch compile` heads each statement with `-- <purpose> [<template>]`.
    statements = re.split(r"^-- .+ \[[\w.]+\]\n", text, flags=re.M)[1:]
    assert len(statements) >= 4
    for statement in statements:
        assert ":catalog" in statement
        check_statement(statement.strip())
