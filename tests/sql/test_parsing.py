"""One parse per SQL text: the engine's copy is its own, errors are raised every time."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from agentbatch.sql import parsing


def test_each_parse_one_is_a_tree_of_its_own() -> None:
    sql = "SELECT a FROM main.s.t WHERE b = 1"
    first = parsing.parse_one(sql)
    first.find(exp.Table).replace(exp.to_table("elsewhere"))  # what an engine does
    second = parsing.parse_one(sql)
    assert second.sql(dialect="databricks") == "SELECT a FROM main.s.t WHERE b = 1"
    assert parsing.statements(sql)[0].sql(dialect="databricks") == second.sql(dialect="databricks")
    assert second is not first and second is not parsing.statements(sql)[0]


def test_it_reads_as_sqlglot_does() -> None:
    sql = "SELECT `a b`, ai_query('e', x, failOnError => false) FROM t; SELECT 2"
    assert [s.sql() for s in parsing.statements(sql)] == [
        s.sql() for s in sqlglot.parse(sql, read="databricks") if s is not None
    ]
    assert parsing.parse_one(sql).sql() == sqlglot.parse_one(sql, read="databricks").sql()


@pytest.mark.parametrize("sql", ["SELECT (", ""])
def test_what_does_not_parse_fails_every_time(sql: str) -> None:
    for _ in range(2):
        with pytest.raises(ParseError):
            parsing.parse_one(sql)
