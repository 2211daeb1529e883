"""Databricks SQL -> what a Spark session runs (pure: sqlglot only, no Spark).

Tables are pointed at their local relations by a callback, `ai_query` calls get Databricks' argument
names in their exact case (Spark passes named arguments to Python functions case-sensitively), and
the statement is printed in the Spark dialect, each WITH where it was written (`parsing.printed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from agentbatch.engines.base import error_line
from agentbatch.errors import EngineError
from agentbatch.sql import parsing
from agentbatch.sql.quoting import DIALECT, UNREADABLE

AI_QUERY = "ai_query"
# Registered beside `ai_query`: the same call without `failOnError => false`, which returns the
# answer as a STRING and fails the query on the first row error, as Databricks does.
STRICT_AI_QUERY = "agentbatch_ai_query_strict"
AI_QUERY_ARGUMENTS = (
    "endpoint",
    "request",
    "failOnError",
    "modelParameters",
    "responseFormat",
    "returnType",
    "files",
)
_CANONICAL = {name.lower(): name for name in AI_QUERY_ARGUMENTS}

FullName = tuple[str, str, str]


@dataclass(frozen=True)
class Names:
    """How one- and two-part names are completed (the session's catalog and schema)."""

    catalog: str
    schema: str

    def full(self, node_or_name: exp.Table | str) -> FullName:
        if isinstance(node_or_name, str):
            node = sqlglot.parse_one(node_or_name, into=exp.Table, read=DIALECT)
        else:
            node = node_or_name
        parts = tuple(p.name for p in node.parts)
        padded = (self.catalog, self.schema)[: 3 - len(parts)] + parts
        return (padded[0].lower(), padded[1].lower(), padded[2].lower())


def parse(sql: str) -> exp.Expression:
    try:
        tree = parsing.parse_one(sql)
    except UNREADABLE as err:
        raise EngineError(f"spark engine: cannot parse SQL: {error_line(err)}") from None
    if not isinstance(tree, exp.Expression):
        raise EngineError("spark engine: empty SQL statement")
    return tree


def written_table(tree: exp.Expression) -> exp.Table | None:
    """The table a CREATE / INSERT / MERGE / DROP writes, if any."""
    target: exp.Expression | None = None
    if isinstance(tree, (exp.Create, exp.Insert, exp.Merge)):
        target = tree.this
        if isinstance(target, exp.Schema):
            target = target.this
    elif isinstance(tree, exp.Drop):
        # sqlglot 30 keeps a DROP's tables under `tables`; older releases under `expressions`.
        tables = tree.args.get("tables") or tree.expressions
        target = tables[0] if len(tables) == 1 else None
    return target if isinstance(target, exp.Table) else None


def point_tables(tree: exp.Expression, relation: Callable[[exp.Table], str | None]) -> int:
    """Replace every table read by `tree` with `relation(table)` when that returns a name; returns
    how many were replaced.

    The written table itself (a CREATE / INSERT / MERGE target) is left alone: the caller decides how
    to write it. CTE names are never tables.
    """
    replaced = 0
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    target = written_table(tree)
    for node in list(tree.find_all(exp.Table)):
        if node is target or not node.name or isinstance(node.this, exp.Func):
            continue
        if not node.db and node.name.lower() in ctes:
            continue
        name = relation(node)
        if name is None:
            continue
        replacement = exp.to_table(name)
        alias = node.args.get("alias")
        if alias is None and isinstance(node.parent, (exp.From, exp.Join)):
            # Keep `schema.table.column` style references working: alias the view as the table.
            alias = exp.TableAlias(this=exp.to_identifier(node.name, quoted=True))
        if alias is not None:
            replacement.set("alias", alias)
        node.replace(replacement)
        replaced += 1
    return replaced


def rewrite_ai_query(tree: exp.Expression) -> bool:
    """Point `ai_query` calls at the registered functions; True if the statement calls one."""
    found = False
    for call in list(tree.find_all(exp.Anonymous)):
        if str(call.this).lower() != AI_QUERY:
            continue
        found = True
        endpoint = call.expressions[0] if call.expressions else None
        if (
            isinstance(endpoint, (exp.Kwarg, exp.PropertyEQ))
            and endpoint.name.lower() == "endpoint"
        ):
            endpoint = endpoint.expression  # named: `endpoint => 'name'`
        if not (isinstance(endpoint, exp.Literal) and endpoint.is_string):
            # Databricks: "endpoint: A STRING literal" (ai_query reference).
            shown = endpoint.sql(dialect="databricks") if endpoint is not None else "nothing"
            raise EngineError(
                f"[NOT_A_CONSTANT_STRING.NOT_CONSTANT] spark engine: ai_query's endpoint must be a "
                f"STRING literal, not {shown}"
            )
        strict = True
        kept: list[exp.Expression] = []
        for arg in call.expressions:
            if isinstance(arg, exp.Kwarg):
                key = arg.this.name
                canonical = _CANONICAL.get(key.lower())
                if canonical is None:
                    raise EngineError(
                        f"spark engine: ai_query has no argument {key!r}; "
                        f"it takes {', '.join(AI_QUERY_ARGUMENTS)}"
                    )
                if canonical == "failOnError":
                    value = arg.expression
                    if not isinstance(value, exp.Boolean):
                        raise EngineError(
                            "spark engine: ai_query's failOnError must be true or false"
                        )
                    strict = bool(value.this)
                    if strict:
                        continue
                arg = exp.Kwarg(this=exp.var(canonical), expression=arg.expression)
            kept.append(arg)
        call.set("expressions", kept)
        call.set("this", STRICT_AI_QUERY if strict else AI_QUERY)
        _guard_request(call)
    return found


def _guard_request(call: exp.Anonymous) -> None:
    """`CASE WHEN c THEN ai_query(endpoint, request, ...) END`: Spark evaluates a Python UDF for
    every row, whatever the CASE, so the request becomes `CASE WHEN c THEN request END`, and the
    registered function sends no NULL request. A row the CASE leaves out is never sent."""
    branch = call.parent
    if not isinstance(branch, exp.If):
        return
    case = branch.parent
    if not (
        isinstance(case, exp.Case)
        and len(case.args.get("ifs") or []) == 1
        and case.args.get("default") is None
        and branch.args.get("true") is call
    ):
        return
    request = call.expressions[1] if len(call.expressions) > 1 else None
    if request is None or isinstance(request, exp.Kwarg):
        return  # the templates pass the request second, by position
    guarded = exp.Case(ifs=[exp.If(this=branch.this.copy(), true=request.copy())])
    request.replace(guarded)


def to_spark(tree: exp.Expression) -> str:
    return parsing.printed(tree, "spark")


def ai_query_endpoints(tree: exp.Expression) -> set[str]:
    """The endpoint names given as literals to the (rewritten) ai_query calls of `tree`."""
    names: set[str] = set()
    for call in tree.find_all(exp.Anonymous):
        if str(call.this).lower() not in (AI_QUERY, STRICT_AI_QUERY):
            continue
        args = call.expressions
        named = [
            a.expression for a in args if isinstance(a, exp.Kwarg) and a.this.name == "endpoint"
        ]
        endpoint = (
            named[0]
            if named
            else (args[0] if args and not isinstance(args[0], exp.Kwarg) else None)
        )
        if isinstance(endpoint, exp.Literal) and endpoint.is_string:
            names.add(endpoint.this)
    return names
