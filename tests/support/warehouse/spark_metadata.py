"""The connector's `cursor.tables()` answered from a local Spark session's catalog (the Spark
executor's databases are `catalog__schema`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _like(pattern: str | None) -> re.Pattern[str]:
    """A metadata call's name pattern (SQL LIKE: `%` any text, `_` one character), no case."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern or "%")
    return re.compile("".join(parts), re.IGNORECASE)


def spark_tables(spark: SparkSession, filters: Mapping[str, str | None]) -> pa.Table:
    catalog, schema, table = (_like(filters.get(k)) for k in ("catalog", "schema", "table"))
    rows = []
    for database in spark.catalog.listDatabases():
        cat, _, sch = database.name.partition("__")
        if not (sch and catalog.fullmatch(cat) and schema.fullmatch(sch)):
            continue
        for found in spark.catalog.listTables(database.name):
            if table.fullmatch(found.name):
                kind = "VIEW" if found.tableType == "VIEW" else "TABLE"
                rows.append(
                    {
                        "TABLE_CAT": cat,
                        "TABLE_SCHEM": sch,
                        "TABLE_NAME": found.name,
                        "TABLE_TYPE": kind,
                        "REMARKS": None,
                    }
                )
    names = ["TABLE_CAT", "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE", "REMARKS"]
    return pa.Table.from_pylist(rows, schema=pa.schema([(n, pa.string()) for n in names]))
