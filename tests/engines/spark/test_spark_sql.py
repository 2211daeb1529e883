"""The pure SQL rewrite: ai_query arguments, table pointing, the MERGE shapes file tables take."""

from __future__ import annotations

from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from agentbatch.engines.spark.sql import (
    Names,
    ai_query_endpoints,
    parse,
    point_tables,
    rewrite_ai_query,
    to_spark,
)
from agentbatch.engines.spark.writes import merge_keys
from agentbatch.errors import EngineError, NotSupportedError
from agentbatch.sql import parsing


def rewritten(sql: str) -> str:
    tree = parse(sql)
    assert rewrite_ai_query(tree)
    return to_spark(tree)


def test_argument_names_get_databricks_case() -> None:
    sql = rewritten(
        "SELECT ai_query('ep', x, failonerror => false, MODELPARAMETERS => named_struct('max_tokens', 5), "
        "responseformat => 'STRUCT<a: INT>') FROM t"
    )
    assert "failOnError => FALSE" in sql
    assert "modelParameters => STRUCT(5 AS max_tokens)" in sql
    assert "responseFormat => 'STRUCT<a: INT>'" in sql


@pytest.mark.parametrize("call", ["ai_query('ep', x)", "ai_query('ep', x, failOnError => true)"])
def test_without_fail_on_error_false_the_strict_function_is_called(call: str) -> None:
    sql = rewritten(f"SELECT {call} FROM t")
    assert sql.lower() == "select agentbatch_ai_query_strict('ep', x) from t"


def test_unknown_argument_and_non_literal_flag_are_refused() -> None:
    with pytest.raises(EngineError, match="no argument 'temperature'"):
        rewrite_ai_query(parse("SELECT ai_query('ep', x, temperature => 1)"))
    with pytest.raises(EngineError, match="true or false"):
        rewrite_ai_query(parse("SELECT ai_query('ep', x, failOnError => flag)"))


def test_statements_without_ai_query_are_left_alone() -> None:
    tree = parse("SELECT upper(x) FROM t")
    assert not rewrite_ai_query(tree)
    assert to_spark(tree) == "SELECT UPPER(x) FROM t"


def test_endpoints_named_by_literals() -> None:
    tree = parse(
        "SELECT ai_query('a', x, failOnError => false), ai_query(endpoint => 'b', request => x) "
        "FROM t"
    )
    rewrite_ai_query(tree)
    assert ai_query_endpoints(tree) == {"a", "b"}


def test_an_endpoint_that_is_no_literal_is_refused() -> None:
    # Databricks: "endpoint: A STRING literal" (ai_query reference).
    with pytest.raises(EngineError, match="NOT_A_CONSTANT_STRING"):
        rewrite_ai_query(parse("SELECT ai_query(ep_column, x) FROM t"))


def test_point_tables_skips_ctes_and_the_written_table() -> None:
    tree = parse(
        "INSERT INTO main.s.out WITH src AS (SELECT * FROM main.s.tickets) "
        "SELECT * FROM src WHERE NOT EXISTS (SELECT 1 FROM main.s.out AS done WHERE done.id = src.id)"
    )
    names = Names("main", "default")
    seen: list[tuple[str, str, str]] = []

    def relation(node: exp.Table) -> str:
        seen.append(names.full(node))
        return f"view_{len(seen)}"

    assert point_tables(tree, relation) == 2
    assert seen == [("main", "s", "tickets"), ("main", "s", "out")]
    sql = to_spark(tree)
    assert "INSERT INTO main.s.out WITH src AS" in sql  # the target is not a read
    assert "FROM view_1 AS `tickets`" in sql and "FROM view_2 AS done" in sql


def test_a_with_nested_in_a_subquery_or_a_cte_is_printed_where_it_was_written() -> None:
    """sqlglot prints Spark and Databricks SQL as Hive's, every WITH moved to the top: a source
    query embedded twice, or in a CTE of one of its own CTEs' names, defined a name twice."""
    source = (
        "(WITH src AS (SELECT * FROM main.s.t), todo AS (SELECT * FROM src) SELECT * FROM todo)"
    )
    sql = (
        f"WITH src AS (SELECT * FROM {source} AS source_query), todo AS (SELECT * FROM src) "
        f"SELECT (SELECT count(*) FROM todo) AS n, (SELECT count(*) FROM {source} AS q) AS m"
    )
    tree = parse(sql)
    point_tables(tree, lambda node: "v" if node.db else None)
    pointed = sql.replace("main.s.t", "v AS `t`").replace("count(*)", "COUNT(*)")
    assert to_spark(tree) == pointed
    assert parsing.printed(tree) == pointed  # Databricks, where a table was pointed elsewhere


def test_parse_json_is_kept_for_spark(spark: Any) -> None:
    """sqlglot's Spark printer prints `parse_json(x)` as `x`: a job's `parse_json` was dropped
    on Spark, and a VARIANT written as a string."""
    tree = parse("SELECT parse_json('{\"a\": 1}') AS v, try_parse_json('[1]') AS w")
    sql = to_spark(tree)
    assert "PARSE_JSON('{\"a\": 1}')" in sql
    found = spark.sql(f"SELECT schema_of_variant(v) AS s FROM ({sql})").first()
    assert found is not None and found["s"] == "OBJECT<a: BIGINT>"


def test_names_are_completed_with_the_default_catalog_and_schema() -> None:
    names = Names("main", "default")
    assert names.full("t") == ("main", "default", "t")
    assert names.full("s.T") == ("main", "s", "t")
    assert names.full("`c`.`s`.`t`") == ("c", "s", "t")


@pytest.mark.parametrize(
    ("sql", "key"),
    [
        (
            "MERGE INTO t AS target USING s AS staged ON target.id = staged.id "
            "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *",
            "id",
        ),
        (
            "MERGE INTO t USING (SELECT 1 AS k) AS a ON t.`k` = a.`k` "
            "WHEN NOT MATCHED THEN INSERT * WHEN MATCHED THEN UPDATE SET *",
            "k",
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id AND t.x = s.x WHEN MATCHED THEN UPDATE SET * "
            "WHEN NOT MATCHED THEN INSERT *",
            "id,x",
        ),
    ],
)
def test_merge_by_key_shapes(sql: str, key: str) -> None:
    tree = sqlglot.parse_one(sql, read="databricks")
    assert isinstance(tree, exp.Merge)
    assert merge_keys(tree) == key.split(",")


@pytest.mark.parametrize(
    "sql",
    [
        "MERGE INTO t USING s ON t.id = s.other WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *",
        "MERGE INTO t USING s ON t.id = s.id AND t.x = s.y WHEN MATCHED THEN UPDATE SET * "
        "WHEN NOT MATCHED THEN INSERT *",
        "MERGE INTO t USING s ON t.id = s.id OR t.x = s.x WHEN MATCHED THEN UPDATE SET * "
        "WHEN NOT MATCHED THEN INSERT *",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT *",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED AND s.x > 1 THEN UPDATE SET * "
        "WHEN NOT MATCHED THEN INSERT *",
        "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT *",
    ],
)
def test_other_merges_are_not_supported_on_file_tables(sql: str) -> None:
    tree = sqlglot.parse_one(sql, read="databricks")
    assert isinstance(tree, exp.Merge)
    with pytest.raises(NotSupportedError):
        merge_keys(tree)
