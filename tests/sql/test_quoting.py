from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from agentbatch.sql import quoting


@pytest.mark.parametrize(
    "value",
    [
        "x'); DROP TABLE t; --",
        "a\\'b",
        "line\nbreak",
        "emoji 🚀 and rtl שלום",
        "",
        "back\\slash",
        "`tick`",
    ],
)
def test_string_literals_round_trip_as_one_inert_literal(value: str) -> None:
    sql = f"SELECT {quoting.literal(value)} AS v"
    tree = sqlglot.parse_one(sql, read="databricks")
    literal = tree.selects[0].this
    assert isinstance(literal, exp.Literal) and literal.is_string
    assert literal.this == value


@pytest.mark.parametrize(
    "name",
    ["main.x; drop", "a.b.c.d", "x) --", "", " t", "t AS x", "main.`a;b`.c", "a..b", "t/*x*/"],
)
def test_invalid_table_names_are_rejected(name: str) -> None:
    with pytest.raises(quoting.SqlValueError):
        quoting.table(name)


def test_table_names_are_quoted_per_part() -> None:
    assert quoting.table("main.support.tickets") == "`main`.`support`.`tickets`"
    assert quoting.table("tickets") == "`tickets`"
    assert quoting.table("`my-cat`.s.t") == "`my-cat`.`s`.`t`"


@pytest.mark.parametrize(
    "parts", [("main", "s", "t"), ("a`b",), ("s", "x.y"), ("col (1); --",), ("café", "")]
)
def test_a_name_path_reads_back_as_its_parts(parts: tuple[str, ...]) -> None:
    """Parts the engine already holds (a data frame's column may be any text) are quoted, not
    checked: each reads back as itself."""
    tree = sqlglot.parse_one(f"SELECT * FROM {quoting.name_path(*parts)}", read="databricks")
    table = tree.find(exp.Table)
    assert table is not None and tuple(part.name for part in table.parts) == parts


@pytest.mark.parametrize(
    "sql",
    [
        "a FROM b",
        "x; y",
        "1); DROP TABLE t; --",
        "a, b",
        "x WHERE 1 = 1",
        "",
        # Read where the templates name the value themselves: a syntax error in a template.
        "review_text AS x",
        "DISTINCT review_text",
        # One value per row: these failed in the statements, after the table was created.
        "count(*)",
        "*",
        "sum(stars) OVER ()",
        "concat('n', row_number() OVER (ORDER BY id))",
    ],
)
def test_expressions_must_be_single(sql: str) -> None:
    with pytest.raises(quoting.SqlValueError):
        quoting.expression(sql)


def test_trailing_comment_in_expression_cannot_swallow_sql() -> None:
    assert quoting.expression("x --, y") == "x"
    assert quoting.query("SELECT * FROM t -- recent\n;  -- done") == "SELECT * FROM t"


@pytest.mark.parametrize(
    "sql",
    [
        # sqlglot prints these back as `DATEDIFF(DAY, created_at, CURRENT_TIMESTAMP())`: whole
        # 24-hour periods on Databricks, where the two-argument form counts calendar days.
        "SELECT * FROM t WHERE datediff(current_timestamp(), created_at) <= 7",
        "SELECT id, date_diff(closed, opened) AS days /* open */ FROM t",
    ],
)
def test_the_authors_sql_is_sent_as_written(sql: str) -> None:
    """A `source.query`, `where` or `request` reaches the warehouse as its author wrote it, not as
    sqlglot prints it back (which can change what it means)."""
    assert quoting.query(sql + ";") == sql
    where = "datediff(current_timestamp(), created_at) <= 7"
    assert quoting.expression(where + " -- note") == where


def test_structured_literals() -> None:
    assert quoting.literal({"a": 1, "b": [True, None], "c": "x"}) == (
        "NAMED_STRUCT('a', 1, 'b', ARRAY(TRUE, NULL), 'c', 'x')"
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("main.shop.`my table`", "cannot contain a space"),
        ("main.`my schema`.t", "cannot contain a space"),
        ("main.s." + "t" * 256, "at most 255 characters"),
    ],
)
def test_names_unity_catalog_refuses_are_refused(name: str, reason: str) -> None:
    """Unity Catalog object names have no space and at most 255 characters (a column name may
    have a space); DuckDB takes both, so only this check stops them before a real run."""
    with pytest.raises(quoting.SqlValueError, match=reason):
        quoting.table(name)
    assert quoting.identifier("review text") == "`review text`"
    assert quoting.table("main.s." + "t" * 255).endswith("t`")


def test_a_query_reading_from_a_string_says_how_to_name_a_table() -> None:
    """`FROM {{ var('t') }}` renders `FROM 'main.s.t'`: sqlglot reads it as a quoted name, a
    warehouse refuses it; the job is refused naming the way to do it."""
    with pytest.raises(quoting.SqlValueError, match=r"reads FROM the text 'main.s.t'.*table\(var"):
        quoting.query("SELECT * FROM 'main.s.t'")
    with pytest.raises(quoting.SqlValueError, match="reads JOIN the text"):
        quoting.query("SELECT * FROM a JOIN 'b' ON true")
    assert quoting.query("SELECT 'FROM' AS x FROM t WHERE y = 'a'") == (
        "SELECT 'FROM' AS x FROM t WHERE y = 'a'"
    )


def test_values_over_other_rows_go_in_a_subquery() -> None:
    assert quoting.expression("concat(a, (SELECT max(k) FROM t))").startswith("concat")
    assert quoting.expression("to_json(struct(*))") == "to_json(struct(*))"


@pytest.mark.parametrize(
    "value",
    [
        float("inf"),
        float("-inf"),
        __import__("decimal").Decimal("12.50"),
        __import__("datetime").date(2024, 2, 29),
        __import__("datetime").datetime(
            2024, 2, 29, 10, 0, 5, 123456, tzinfo=__import__("datetime").timezone.utc
        ),
    ],
    ids=repr,
)
def test_literals_of_keys_and_variables_read_back_as_the_value(value: object) -> None:
    """`estimate` samples push-down keys with `key IN (<literals>)`: a DATE or DECIMAL key was
    refused, and a YAML `.inf` variable rendered as `inf`, a column name."""
    import duckdb

    sql = sqlglot.transpile(f"SELECT {quoting.literal(value)}", read="databricks", write="duckdb")
    assert duckdb.sql(sql[0]).fetchall() == [(value,)]
