"""Spark's ANSI cast to an integral type, on DuckDB: what DuckDB converts otherwise.

Databricks SQL runs ANSI mode, and a write into a column of another type adds an ANSI CAST
(store_assignment.py). Spark's cast to TINYINT / SMALLINT / INT / BIGINT:

- from DOUBLE, FLOAT or DECIMAL truncates toward zero (1.5 -> 1, -1.5 -> -1, 2.7 -> 2); DuckDB
  rounds (2, -2, 3). A value outside the type's range (NaN too) fails the statement with
  `CAST_OVERFLOW` (SQLSTATE 22003), "The value 3.0E9D of the type "DOUBLE" cannot be cast to
  "INT" due to an overflow" (apache/spark `Cast.scala` `castToInt` / `castFractionToIntegralTypeCode`,
  `QueryExecutionErrors.castingCauseOverflowError`, `error-conditions.json`);
- from STRING takes an optional sign and ASCII digits only, between trimmed white space
  (apache/spark `common/unsafe/.../UTF8String.java` `toLong(LongWrapper, allowDecimal=false)` via
  `UTF8StringUtils.toIntExact` / `toLongExact`): '1.5', '1.' and '1e3' fail with
  `CAST_INVALID_INPUT` (SQLSTATE 22018), as does a value outside the type's range ('300' into
  TINYINT); DuckDB takes '1.5' as 2 and '1e3' as 1000.

`try_cast` gives NULL where the cast fails. Seen on local Spark 4.3 (ANSI): `CAST(1.5D AS INT)` 1,
`CAST(-2.7 AS BIGINT)` -2, `CAST('1.5' AS INT)` CAST_INVALID_INPUT, `CAST(3e9D AS INT)` CAST_OVERFLOW.

A write's cast words its overflow after the statement: an INSERT (Delta's
`DeltaInsertCastSupport.getCastFunction`, `TableOutputResolver.checkCastOverflowInTableInsert`)
with `CAST_OVERFLOW_IN_TABLE_INSERT`, a MERGE or UPDATE (Delta's `UpdateExpressionsSupport.cast`,
`CheckOverflowInTableWrite`) with `DELTA_CAST_OVERFLOW_IN_TABLE_WRITE` (delta-io/delta
`delta-error-classes.json`); both name the column.

The converted value is evaluated once (inside a one-element list's lambda), so a cast of an
`ai_query(...)` calls its agent once per row.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

import sqlglot
from sqlglot import exp

# What Spark calls the DuckDB integral types a cast can name.
INTEGRAL = {
    exp.DataType.Type.TINYINT: "TINYINT",
    exp.DataType.Type.SMALLINT: "SMALLINT",
    exp.DataType.Type.INT: "INT",
    exp.DataType.Type.BIGINT: "BIGINT",
}
# DuckDB's names (typeof, DuckDBPyType.id) of the types whose cast to an integral type differs.
FRACTIONAL_IDS = {"float", "double", "decimal"}
STRING_IDS = {"varchar"}

# typeof(...) of the types that convert through DECIMAL(38, 18) (a BOOLEAN is 1 or 0, as Spark's);
# any other is cast by DuckDB (a DATE fails as Spark's analysis does, in DuckDB's words).
_NUMBERS = (
    "(typeof(__v) IN ('BOOLEAN', 'TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'HUGEINT', "
    "'UTINYINT', 'USMALLINT', 'UINTEGER', 'UBIGINT', 'UHUGEINT', 'FLOAT', 'DOUBLE') "
    "OR typeof(__v) LIKE 'DECIMAL%')"
)
# The error the SQL raises (DuckDB's error(...)) for `format_error` to word as Databricks does.
_MARK = "[agentbatch-warehouse-cast]"
_SEPARATOR = "\x1f"
_ERROR = re.compile(
    re.escape(_MARK) + r"(?P<head>[^\x1f]*)\x1f(?P<type>[^\x1f]*)\x1f(?P<value>.*)", re.S
)
_DIGITS = r"^[\s\x00-\x1f]*[+-]?[0-9]+[\s\x00-\x1f]*$"  # RE2

_TEMPLATE = """LIST_TRANSFORM([__value], lambda __v: CASE
  WHEN __v IS NULL THEN NULL
  WHEN typeof(__v) IN ('VARCHAR', 'JSON') THEN CASE
    WHEN regexp_matches(CAST(__v AS VARCHAR), __digits) THEN __string_cast
    ELSE __invalid END
  WHEN NOT __numbers THEN CAST(__v AS __type)
  ELSE coalesce(TRY_CAST(trunc(TRY_CAST(__v AS DECIMAL(38, 18))) AS __type), __overflow) END)[1]"""


def is_integral(to: exp.DataType) -> bool:
    return to.this in INTEGRAL and not to.expressions


def converted(
    value: exp.Expression,
    to: exp.DataType,
    *,
    safe: bool = False,
    column: str | None = None,
    write: str = "cast",
) -> exp.Expression:
    """`value` cast to the integral type `to` as Spark's ANSI cast does (module doc): NULL where
    it does not convert when `safe` (try_cast), else the error Databricks gives; `write` is
    `"cast"`, `"insert"` (an INSERT into `column`) or `"update"` (a MERGE or UPDATE of it)."""
    head = json.dumps([write, INTEGRAL[to.this], column or ""])

    def raising(kind: str) -> exp.Expression:
        if safe:
            return exp.null()
        text = f"{_MARK}{kind}{head}{_SEPARATOR}"
        parts = [
            exp.Literal.string(text),
            exp.Anonymous(this="typeof", expressions=[exp.column("__v")]),
            exp.Literal.string(_SEPARATOR),
            exp.cast(exp.column("__v"), "VARCHAR"),
        ]
        message = parts[0]
        for part in parts[1:]:
            message = exp.DPipe(this=message, expression=part)
        return exp.Anonymous(this="error", expressions=[message])

    cast = exp.TryCast if safe else exp.Cast
    parts: dict[str, exp.Expression] = {
        "__value": value,
        "__digits": exp.Literal.string(_DIGITS),
        "__string_cast": cast(this=exp.column("__v"), to=to.copy()),
        "__invalid": raising("invalid"),
        "__overflow": raising("overflow"),
    }
    template = _TEMPLATE.replace("__numbers", _NUMBERS).replace("__type", to.sql("duckdb"))
    tree = sqlglot.parse_one(template, read="duckdb")
    return tree.transform(
        lambda n: parts[n.name].copy() if isinstance(n, exp.Column) and n.name in parts else n
    )


def rewrite_casts(tree: exp.Expression) -> None:
    """Each `CAST(x AS <integral>)` / `try_cast` of a statement (read as Databricks SQL) as
    Spark's ANSI cast (`converted`), a column of a SELECT named as Databricks names it
    (`CAST(x AS INT)`). A literal NULL is left as it is."""
    nodes = list(tree.find_all(exp.Cast))
    names = {id(node): node.sql("databricks") for node in nodes}  # before any is rewritten
    for node in reversed(nodes):
        to = node.to
        if not is_integral(to) or isinstance(node.this, exp.Null):
            continue
        safe = isinstance(node, exp.TryCast) or bool(node.args.get("safe"))
        new: exp.Expression = converted(node.this.copy(), to, safe=safe)
        if isinstance(node.parent, exp.Select) and node.arg_key == "expressions":
            new = exp.Alias(this=new, alias=exp.to_identifier(names[id(node)], quoted=True))
        node.replace(new)


def format_error(message: str) -> str | None:
    """DuckDB's error for a value `converted` raised, as Databricks words it; None for another."""
    found = _ERROR.search(message)
    if found is None:
        return None
    head = found["head"]
    kind = "invalid" if head.startswith("invalid") else "overflow"
    write, target, column = json.loads(head.removeprefix(kind))
    value, source = found["value"], found["type"]
    if kind == "invalid":
        quoted = value.replace("'", "\\'")
        return (
            f"[CAST_INVALID_INPUT] The value '{quoted}' of the type \"STRING\" cannot be cast to "
            f'"{target}" because it is malformed. Correct the value as per the syntax, or change '
            "its target type. Use `try_cast` to tolerate malformed input and return NULL "
            "instead. SQLSTATE: 22018"
        )
    source_name = _spark_type(source)
    if write == "insert":
        return (
            f'[CAST_OVERFLOW_IN_TABLE_INSERT] Fail to assign a value of "{source_name}" type to '
            f'the "{target}" type column or variable `{column}` due to an overflow. Use '
            "`try_cast` on the input value to tolerate overflow and return NULL instead. "
            "SQLSTATE: 22003"
        )
    if write == "update":
        return (
            f'[DELTA_CAST_OVERFLOW_IN_TABLE_WRITE] Failed to write a value of "{source_name}" '
            f'type into the "{target}" type column `{column}` due to an overflow. Use '
            "`try_cast` on the input value to tolerate overflow and return NULL instead. If "
            'necessary, set spark.sql.storeAssignmentPolicy to "LEGACY" to bypass this error or '
            "set spark.databricks.delta.updateAndMergeCastingFollowsAnsiEnabledFlag to true to "
            "revert to the old behaviour and follow spark.sql.ansi.enabled in UPDATE and MERGE. "
            "SQLSTATE: 22003"
        )
    return (
        f'[CAST_OVERFLOW] The value {_spark_value(value, source)} of the type "{source_name}" '
        f'cannot be cast to "{target}" due to an overflow. Use `try_cast` to tolerate overflow '
        "and return NULL instead. SQLSTATE: 22003"
    )


def _spark_type(duckdb_type: str) -> str:
    name = exp.DataType.build(duckdb_type, dialect="duckdb").sql("databricks")
    return re.sub(r"DECIMAL\((\d+), (\d+)\)", r"DECIMAL(\1,\2)", name)


def _spark_value(text: str, duckdb_type: str) -> str:
    """A value as Spark's `toSQLValue` prints it in an error: `3.0E9D`, `3000000000L`, `2.5BD`."""
    kind = duckdb_type.upper()
    if kind in ("DOUBLE", "FLOAT"):
        number = float(text)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return _java_double(number) + ("D" if kind == "DOUBLE" else "F")
    suffix = {"TINYINT": "Y", "SMALLINT": "S", "BIGINT": "L"}.get(kind, "")
    if kind.startswith("DECIMAL") or kind == "HUGEINT":
        suffix = "BD"
    return f"{text}{suffix}"


def _java_double(number: float) -> str:
    """Java's `Double.toString`: plain between 1e-3 and 1e7, else `d.dddE<n>`."""
    digits = Decimal(repr(number))
    if 1e-3 <= abs(number) < 1e7:
        plain = format(digits, "f")
        return plain if "." in plain else f"{plain}.0"
    sign, numerals, exponent = digits.as_tuple()
    text = "".join(map(str, numerals)).rstrip("0") or "0"
    power = len(numerals) + int(exponent) - 1
    mantissa = text[0] + "." + (text[1:] or "0")
    return f"{'-' if sign else ''}{mantissa}E{power}"
