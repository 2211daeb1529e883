"""The one quoting layer. Identifiers, table names and literals are built as sqlglot AST nodes and
printed by the Databricks dialect; nothing is quoted by string concatenation.

Everything that comes out of here is a `Sql` fragment: the Jinja environment emits `Sql` as is and
turns every other value into an inert string literal.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

# What sqlglot raises for text it cannot read. Compiled with mypyc (the `fast` extra), it also
# raises TypeError, where a malformed text builds a node of another type than the grammar expects.
UNREADABLE: tuple[type[Exception], ...] = (ParseError, sqlglot.errors.TokenError, TypeError)

DIALECT = "databricks"

# Names: letters, digits, underscores, and (quoted) hyphens or spaces (a column may have them; a
# Unity Catalog object may not have a space); never control characters, dots, backticks or
# statement separators.
_NAME_PART = re.compile(r"^[\w][\w\- ]*$", re.UNICODE)
_UC_NAME_LIMIT = 255


class Sql(str):
    """A fragment of SQL that the quoting layer vouches for."""

    __slots__ = ()

    def __html__(self) -> str:  # Jinja's Markup protocol: emit as is.
        return str(self)


class SqlValueError(ValueError):
    """A value cannot be used where it was given (not a valid name or expression)."""


def literal(value: Any) -> Sql:
    """A SQL literal for a Python value: str, bool, int, float, Decimal, date, datetime, None,
    list, or dict (named_struct)."""
    return Sql(_literal_node(value).sql(dialect=DIALECT))


def _literal_node(value: Any) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, float) and not math.isfinite(value):
        # `inf` would read as a column name: the text a DOUBLE cast reads.
        text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build("DOUBLE"))
    if isinstance(value, (int, float)):
        return exp.Literal.number(repr(value) if isinstance(value, float) else str(value))
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return exp.Literal.number(str(value))
    if isinstance(value, datetime.datetime):  # before date: a datetime is a date too
        return exp.Cast(this=exp.Literal.string(value.isoformat(sep=" ")), to=_TIMESTAMP)
    if isinstance(value, datetime.date):
        return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("DATE"))
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, Mapping):
        args: list[exp.Expression] = []
        for k, v in value.items():
            args += [exp.Literal.string(str(k)), _literal_node(v)]
        return exp.Anonymous(this="named_struct", expressions=args)
    if isinstance(value, Sequence):
        return exp.Array(expressions=[_literal_node(v) for v in value])
    raise SqlValueError(f"cannot write a {type(value).__name__} as a SQL literal")


_TIMESTAMP = exp.DataType.build("TIMESTAMP")


def json_literal(value: Any) -> Sql:
    """A string literal holding canonical JSON of `value` (sorted keys, no spaces)."""
    return literal(canonical_json(value))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def identifier(name: str) -> Sql:
    """One column or schema name, quoted with backticks."""
    _check_name_part(name, "identifier")
    return Sql(exp.to_identifier(name, quoted=True).sql(dialect=DIALECT))


def name_path(*parts: str) -> Sql:
    """A name of one or more parts (a column, `schema.table`, `catalog.schema.table`), each part
    quoted with backticks, a backtick in it doubled. Unlike `identifier` and `table`, which check
    a name as the job gives it, the parts are taken as they are: names the engine built from
    checked ones, or columns a data frame already has (any text)."""
    return Sql(
        ".".join(exp.to_identifier(part, quoted=True).sql(dialect=DIALECT) for part in parts)
    )


def table_parts(name: str) -> tuple[str, ...]:
    """Split and check a table name of one to three parts (`catalog.schema.table`)."""
    if not isinstance(name, str) or not name.strip():
        raise SqlValueError("a table name must be a non-empty string")
    if name != name.strip() or "--" in name or "/*" in name:
        raise SqlValueError(f"{name!r} is not a valid table name")
    try:
        node = sqlglot.parse_one(name, into=exp.Table, read=DIALECT)
    except UNREADABLE as err:
        raise SqlValueError(f"{name!r} is not a valid table name") from err
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise SqlValueError(f"{name!r} is not a valid table name")
    if node.args.get("alias") or any(
        node.args.get(arg) for arg in ("joins", "laterals", "pivots", "version", "when")
    ):
        raise SqlValueError(f"{name!r} is not a valid table name")
    parts = tuple(part.name for part in node.parts)
    if "`" not in name and len(parts) != name.count(".") + 1:
        raise SqlValueError(f"{name!r} is not a valid table name")
    if not 1 <= len(parts) <= 3:
        raise SqlValueError(f"{name!r} must have one to three parts: catalog.schema.table")
    for part in parts:
        _check_name_part(part, "table name")
        # Unity Catalog's own limits on object names (docs/databricks-behaviour.md).
        if " " in part:
            raise SqlValueError(f"{name!r}: Unity Catalog names cannot contain a space")
        if len(part) > _UC_NAME_LIMIT:
            raise SqlValueError(f"{name!r}: a Unity Catalog name has at most 255 characters")
    return parts


def table(name: str) -> Sql:
    """A table name, each part quoted with backticks."""
    parts = table_parts(name)
    node = exp.Table(
        this=exp.to_identifier(parts[-1], quoted=True),
        db=exp.to_identifier(parts[-2], quoted=True) if len(parts) > 1 else None,
        catalog=exp.to_identifier(parts[-3], quoted=True) if len(parts) > 2 else None,
    )
    return Sql(node.sql(dialect=DIALECT))


def expression(sql: str, *, what: str = "expression") -> Sql:
    """A single SQL expression written by the job author (reviewed code, not data).

    It must parse as exactly one expression in the Databricks dialect: no statement separators, no
    trailing comment that could swallow what the template adds after it.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise SqlValueError(f"the {what} is empty")
    try:
        nodes = sqlglot.parse(f"SELECT {sql}", read=DIALECT)
    except UNREADABLE as err:
        raise SqlValueError(
            f"the {what} is not valid Databricks SQL: {_syntax_problem(err, len('SELECT '))}"
        ) from err
    if len(nodes) != 1 or not isinstance(nodes[0], exp.Select) or len(nodes[0].selects) != 1:
        raise SqlValueError(f"the {what} must be a single SQL expression")
    select = nodes[0]
    clauses = set(select.args) - {"expressions", "kind", "hint", "operation_modifiers"}
    if any(select.args.get(arg) for arg in clauses):
        raise SqlValueError(f"the {what} must be a single SQL expression")
    if isinstance(select.selects[0], exp.Alias):
        raise SqlValueError(f"the {what} must be a single SQL expression, without `AS` a name")
    value = select.selects[0]
    # Computed for each row: an aggregate or a window function (outside a subquery of its own)
    # fails in the statements, after the table was created.
    across_rows = [
        node
        for node in value.walk(prune=lambda node: isinstance(node, exp.Query))
        if isinstance(node, (exp.AggFunc, exp.Window))
        or (node is value and isinstance(node, exp.Star))
    ]
    if across_rows:
        raise SqlValueError(
            f"the {what} is computed for each row, so it cannot be "
            f"`{across_rows[0].sql(dialect=DIALECT)}` (an aggregate, a window function or `*`); "
            "a value over other rows goes in a subquery, `(SELECT max(x) FROM t)`"
        )
    return _as_written(sql)


def query(sql: str, *, what: str = "query") -> Sql:
    """A single SELECT statement written by the job author (used as a subquery)."""
    try:
        parsed = sqlglot.parse(sql, read=DIALECT)
    except UNREADABLE as err:
        raise SqlValueError(
            f"the {what} is not valid Databricks SQL: {_syntax_problem(err, 0)}"
        ) from err
    # A `;` ends it, with a comment after it or not.
    nodes = [n for n in parsed if n is not None and not isinstance(n, exp.Semicolon)]
    if len(nodes) != 1 or not isinstance(nodes[0], exp.Query):
        raise SqlValueError(f"the {what} must be exactly one SELECT statement")
    for before, token in itertools.pairwise(_tokens(sql)):
        if before.token_type in _READS and token.token_type == sqlglot.TokenType.STRING:
            raise SqlValueError(
                f"the {what} reads {before.text.upper()} the text '{token.text}', not a table "
                "(a variable renders as a string literal): name a table held in a variable "
                "with {{ table(var('name')) }}"
            )
    return _as_written(sql)


_READS = (sqlglot.TokenType.FROM, sqlglot.TokenType.JOIN)


def _tokens(sql: str) -> list[sqlglot.Token]:
    return list(sqlglot.Dialect.get_or_raise(DIALECT).tokenize(sql))


def _as_written(sql: str) -> Sql:
    """The author's text up to its last token, without the `;` and comments after it (a trailing
    `-- comment` would swallow what a template adds after it). The text itself is kept: printed
    back by sqlglot it could mean something else (`datediff(end, start)`, whole days between
    dates, comes back as `DATEDIFF(DAY, start, end)`, whole 24-hour periods)."""
    tokens = [t for t in _tokens(sql) if t.token_type != sqlglot.TokenType.SEMICOLON]
    start, end = tokens[0].start, tokens[-1].end + 1
    return Sql(sql[start:end])


def data_type(ddl: str) -> Sql:
    """A Databricks data type such as `STRUCT<label: STRING, urgency: INT>`."""
    try:
        node = exp.DataType.build(ddl, dialect=DIALECT)
    except (ParseError, sqlglot.errors.TokenError, TypeError, ValueError) as err:
        raise SqlValueError(f"{ddl!r} is not a valid Databricks SQL type") from err
    return Sql(node.sql(dialect=DIALECT))


def _check_name_part(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME_PART.match(name) or name != name.strip():
        raise SqlValueError(f"{name!r} is not a valid {what}")


# What sqlglot calls the part of an operator a job left out (`stars >`, `a AND`, `NOT`).
_MISSING_PART = {"expression": "right-hand side", "this": "operand"}
_MISSING_KEYWORD = re.compile(r"^Required keyword: '(\w+)' missing for <class '[\w.]+'>$")


def _syntax_problem(err: Exception, offset: int) -> str:
    """sqlglot's parse error in the job author's terms: the operator whose operand is missing
    rather than sqlglot's class name, and the column in the text as written (the parser read
    it after a prefix of `offset` characters on its first line)."""
    if isinstance(err, sqlglot.errors.TokenError):
        return "a quoted string or name is not closed"
    errors = getattr(err, "errors", None)
    if not isinstance(err, ParseError) or not errors:
        return _first_line(err)
    first = errors[0]
    description = str(first.get("description", ""))
    missing = _MISSING_KEYWORD.match(description)
    if missing and missing.group(1) in ("low", "high"):
        description = "BETWEEN has no bounds: `x BETWEEN low AND high`"
    elif missing and first.get("highlight"):
        part = _MISSING_PART.get(missing.group(1), missing.group(1))
        description = f"`{first['highlight']}` has no {part}"
    line, col = first.get("line"), first.get("col")
    if not isinstance(line, int) or not isinstance(col, int):
        return description
    col = col - offset if line == 1 else col
    return f"{description} (line {line}, column {max(col, 1)})"


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
