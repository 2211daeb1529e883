"""Databricks SQL parsed once per text. A run's plan parses each statement it renders (to check
it), and the engine that runs the statement parses the same text again (to transpile it): here
the second parse is a copy of the first's tree. A tree is printed back with `printed`."""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from agentbatch.sql.quoting import DIALECT


@lru_cache(maxsize=256)
def _parsed(sql: str) -> tuple[exp.Expr | None, ...]:
    # A text that does not parse raises here every time: errors are not cached.
    return tuple(sqlglot.parse(sql, read=DIALECT))


def statements(sql: str) -> tuple[exp.Expr, ...]:
    """The statements of `sql`, shared with later callers: read them, never modify them."""
    return tuple(tree for tree in _parsed(sql) if tree is not None)


def parse_one(sql: str) -> exp.Expr:
    """The first statement of `sql` as `sqlglot.parse_one(sql, read="databricks")` gives it:
    a tree of the caller's own, free to modify."""
    trees = _parsed(sql)
    if len(trees) != 1 or trees[0] is None:
        return sqlglot.parse_one(sql, read=DIALECT)  # none or several: as sqlglot has it
    return trees[0].copy()


def printed(tree: exp.Expr, dialect: str = DIALECT) -> str:
    """`tree` as SQL of `dialect`, every WITH where it was written.

    sqlglot prints Databricks and Spark as it prints Hive, whose WITH may only open a statement:
    it moves a WITH nested in a subquery or a CTE to the top. A source query with its own WITH,
    embedded twice in a statement (the preflight), or in a CTE of one of its own CTEs' names,
    would then define a name twice at the top, which Spark and Databricks refuse
    (DUPLICATED_CTE_NAMES). Both take a WITH in a subquery, a subquery expression and a CTE,
    where an inner name hides an outer one (the SQL reference: "CTE names are scoped").
    Also `parse_json(x)`, which sqlglot's Spark printer prints as `x` (Spark 4 has it: without
    it a VARIANT would be written as a string).
    """
    copied = tree.copy()
    for node in list(copied.find_all(exp.ParseJSON)):
        args = [arg for arg in (node.this, node.expression) if arg is not None]
        node.replace(exp.Anonymous(this="PARSE_JSON", expressions=args))
    # sqlglot moves nested WITHs only out of a tree without a parent (the Hive printer's rule,
    # `EXPRESSIONS_WITHOUT_NESTED_CTES`): a parent keeps each where it is written. Not a printer
    # subclass: sqlglot compiled with mypyc (the `fast` extra) refuses those.
    exp.Paren(this=copied)
    return Dialect.get_or_raise(dialect).generator().generate(copied, copy=False)
