"""Databricks SQL parsed once per text. A run's plan parses each statement it renders (to check
it), and the engine that runs the statement parses the same text again (to transpile it): here
the second parse is a copy of the first's tree."""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp

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
