"""Store assignment: a value written into a column of another type, as a Delta table takes it.

Databricks runs `spark.sql.storeAssignmentPolicy=ANSI` (its default; docs.databricks.com
sql/language-manual/sql-ref-ansi-compliance). A Delta table accepts any schema, so Spark's own
insert resolver (`TableOutputResolver`, which refuses what `Cast.canANSIStoreAssign` refuses,
STRING into INT for one, as `INCOMPATIBLE_DATA_FOR_TABLE.CANNOT_SAFELY_CAST`) leaves a Delta write
alone; Delta adds, for each column whose type differs, an ANSI `CAST` to the column's type
(delta-io/delta `DeltaInsertCastSupport.getCastFunction` for INSERT and INSERT OVERWRITE,
`UpdateExpressionsSupport.cast` for MERGE and UPDATE). So:

- a pair the ANSI CAST cannot convert (`Cast.canAnsiCast` false: INT into DATE, STRING into an
  ARRAY, BOOLEAN into DATE, ...) fails analysis with `DATATYPE_MISMATCH.CAST_*`
  (`Cast.typeCheckFailureMessage`);
- any other pair is converted row by row, and a value that does not convert fails the statement
  (`CAST_INVALID_INPUT`, `CAST_OVERFLOW_IN_TABLE_INSERT`): STRING into INT is taken while every
  value parses. DuckDB's own cast on a write raises there too.

ASSUMPTION: Databricks Runtime's Delta casts as open-source Delta does. The loopback Spark
executor writes Parquet tables, not Delta, so real Spark refuses there by `canANSIStoreAssign`
(stricter than a Delta table). The table below is `Cast.canAnsiCast` over the DuckDB types the
executor stores Databricks types in (`TIMESTAMP` is DuckDB's TIMESTAMP WITH TIME ZONE,
`TIMESTAMP_NTZ` its TIMESTAMP; CHAR(n)/VARCHAR(n) are plain VARCHAR there, their length checked
by the CHECK the executor adds when it creates the table). Intervals, TIME and VARIANT are let
through (not checked).

A DOUBLE, FLOAT, DECIMAL or STRING written into an integral column is cast as Spark's ANSI cast
does (ansi_casts.py: truncated, '1.5' refused with CAST_INVALID_INPUT, an overflow refused with
CAST_OVERFLOW_IN_TABLE_INSERT or DELTA_CAST_OVERFLOW_IN_TABLE_WRITE naming the column), not as
DuckDB's (rounded). Not reproduced: a number into TIMESTAMP or back, which Spark converts (seconds
since the epoch), fails in DuckDB's words; so does an overflow into a DECIMAL or a narrower
integral column from another integral one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from duckdb.sqltypes import DuckDBPyType
from sqlglot import exp

MISMATCH_CLASS = "DATATYPE_MISMATCH"
_SQLSTATE = "42K09"

_NUMERIC = {
    "tinyint",
    "smallint",
    "integer",
    "bigint",
    "hugeint",
    "utinyint",
    "usmallint",
    "uinteger",
    "ubigint",
    "uhugeint",
    "float",
    "double",
    "decimal",
}
_INTEGRAL = _NUMERIC - {"float", "double", "decimal"}
_KINDS = {
    "varchar": "string",
    "boolean": "boolean",
    "blob": "binary",
    "date": "date",
    "timestamp with time zone": "timestamp",
    "timestamp": "timestamp_ntz",
    "timestamp_s": "timestamp_ntz",
    "timestamp_ms": "timestamp_ntz",
    "timestamp_ns": "timestamp_ntz",
    "null": "null",
    "list": "array",
    "array": "array",
    "map": "map",
    "struct": "struct",
}

# (from, to) kinds `Cast.canAnsiCast` converts, besides equal kinds, NULL, anything to STRING,
# and the nested types (element by element).
_ANSI_CASTS = {
    ("string", "binary"),
    ("string", "boolean"),
    ("numeric", "boolean"),
    ("string", "timestamp"),
    ("date", "timestamp"),
    ("timestamp_ntz", "timestamp"),
    ("numeric", "timestamp"),
    ("string", "timestamp_ntz"),
    ("date", "timestamp_ntz"),
    ("timestamp", "timestamp_ntz"),
    ("string", "date"),
    ("timestamp", "date"),
    ("timestamp_ntz", "date"),
    ("string", "numeric"),
    ("boolean", "numeric"),
    ("timestamp", "numeric"),
}
# Pairs the legacy (non-ANSI) CAST converts (`Cast.canCast`) that the ANSI one does not: the
# refusal then suggests the LEGACY store assignment policy (CAST_WITH_CONF_SUGGESTION).
_LEGACY_ONLY = {
    ("integral", "binary"),
    ("date", "boolean"),
    ("timestamp", "boolean"),
    ("boolean", "timestamp"),
}
# `Cast.typeCheckFailureMessage`: pairs with a function to use instead.
_FUNCTIONS = {
    ("numeric", "date"): "`DATE_FROM_UNIX_DATE`",
    ("date", "numeric"): "`UNIX_DATE`",
}


def _kind(t: DuckDBPyType) -> str:
    if t.id in _NUMERIC:
        return "numeric"
    if str(t) == "JSON":
        return "string"
    return _KINDS.get(t.id, "other")


def _children(t: DuckDBPyType) -> list[DuckDBPyType]:
    return [child for _, child in t.children if isinstance(child, DuckDBPyType)]


def can_assign(source: DuckDBPyType, target: DuckDBPyType) -> bool:
    """`Cast.canAnsiCast(source, target)` for DuckDB types (see the module)."""
    if source == target:
        return True
    s, t = _kind(source), _kind(target)
    if "other" in (s, t) or s == "null" or t == "string":
        return True
    if s == t and s not in ("array", "map", "struct"):
        return True
    if (s, t) in _ANSI_CASTS:
        return True
    if s == t and s in ("array", "map"):
        return all(
            can_assign(a, b) for a, b in zip(_children(source), _children(target), strict=True)
        )
    if s == t == "struct":
        fields, targets = _children(source), _children(target)
        return len(fields) == len(targets) and all(
            can_assign(a, b) for a, b in zip(fields, targets, strict=True)
        )
    return False


def spark_type_name(t: DuckDBPyType) -> str:
    """The type as Databricks names it in an error (`"INT"`, `"ARRAY<INT>"`)."""
    if _kind(t) == "null":
        return "VOID"
    if _kind(t) == "timestamp":
        return "TIMESTAMP"
    if _kind(t) == "timestamp_ntz":
        return "TIMESTAMP_NTZ"
    if str(t) == "JSON":
        return "STRING"
    name = exp.DataType.build(str(t), dialect="duckdb").sql("databricks")
    return re.sub(r"DECIMAL\((\d+), (\d+)\)", r"DECIMAL(\1,\2)", name)


def refusal(
    expression: str, source: DuckDBPyType, target: DuckDBPyType, *, insert: bool = True
) -> str:
    """Databricks' analysis error for writing `expression` (of type `source`) into a column of
    type `target` (`Cast.typeCheckFailureMessage` with the store assignment fallback)."""
    src, tgt = spark_type_name(source), spark_type_name(target)
    s, t = _kind(source), _kind(target)
    legacy = ("integral" if source.id in _INTEGRAL else s, t)
    head = f'Cannot resolve "CAST({expression} AS {tgt})" due to data type mismatch:'
    if (s, t) in _FUNCTIONS:
        sub = "CAST_WITH_FUNC_SUGGESTION"
        text = (
            f'cannot cast "{src}" to "{tgt}". To convert values from "{src}" to "{tgt}", you '
            f"can use the functions {_FUNCTIONS[s, t]} instead."
        )
    elif legacy in _LEGACY_ONLY:
        sub = "CAST_WITH_CONF_SUGGESTION"
        config = (
            "\"spark.sql.storeAssignmentPolicy\" as 'LEGACY'"
            if insert
            else "\"spark.sql.ansi.enabled\" as 'false'"
        )
        text = (
            f'cannot cast "{src}" to "{tgt}" with ANSI mode on. If you have to cast "{src}" to '
            f'"{tgt}", you can set {config}.'
        )
    else:
        sub = "CAST_WITHOUT_SUGGESTION"
        text = f'cannot cast "{src}" to "{tgt}".'
    return f"[{MISMATCH_CLASS}.{sub}] {head} {text} SQLSTATE: {_SQLSTATE}"


def check(
    assignments: Iterable[tuple[str, DuckDBPyType, DuckDBPyType]], *, insert: bool = True
) -> None:
    """Refuse the first (expression, its type, the column's type) Databricks would refuse, in an
    INSERT (`insert`) or a MERGE / UPDATE."""
    for expression, source, target in assignments:
        if not can_assign(source, target):
            raise ValueError(refusal(expression, source, target, insert=insert))
