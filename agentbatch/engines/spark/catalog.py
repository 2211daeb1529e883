"""Catalog tables whose format has no MERGE or REPLACE (parquet / ORC / CSV tables of a Hive or
in-memory catalog), rewritten whole like file tables.

The new content is saved as a sibling table `<table>__agentbatch_new`, then swapped in by dropping
the old table and renaming the new one. Between those two catalog operations a crash leaves only the
new table: the next use of the table finishes the rename, so a run sees the old table or the new
one. Delta, Iceberg and Hudi tables (and everything on Databricks) take MERGE natively instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentbatch.engines.spark.session import conf_value

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

NATIVE_MERGE_FORMATS = frozenset({"delta", "iceberg", "hudi"})
_SUFFIX = "__agentbatch_new"
SESSION_CATALOG = "spark_catalog"


def merges_natively(spark: SparkSession, name: str, exists: bool) -> bool:
    """Whether `name` (a quoted multi-part name) takes MERGE and REPLACE TABLE itself."""
    if exists:
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
        provider = next((str(r[1]) for r in rows if str(r[0]).strip().lower() == "provider"), "")
    else:
        provider = conf_value(spark, "spark.sql.sources.default") or "parquet"
    return provider.strip().lower() in NATIVE_MERGE_FORMATS


class CatalogTable:
    """A catalog table replaced by save-aside, drop and rename."""

    def __init__(self, spark: SparkSession, parts: tuple[str, str, str]) -> None:
        self._spark = spark
        # The session catalog (where such tables live) takes two-part names in DDL.
        local = parts[1:] if parts[0] == SESSION_CATALOG else parts
        self.name = _quoted(local)
        self._new = _quoted((*local[:-1], local[-1] + _SUFFIX))

    def exists(self) -> bool:
        self._recover()
        return bool(self._spark.catalog.tableExists(self.name))

    def read(self, spark: SparkSession) -> DataFrame:
        return spark.table(self.name)

    def write(self, df: DataFrame) -> None:
        self._recover()
        self._spark.sql(f"DROP TABLE IF EXISTS {self._new}")
        df.write.saveAsTable(self._new)
        self._spark.sql(f"DROP TABLE IF EXISTS {self.name}")
        self._spark.sql(f"ALTER TABLE {self._new} RENAME TO {self.name}")

    def drop(self) -> None:
        self._spark.sql(f"DROP TABLE IF EXISTS {self.name}")
        self._spark.sql(f"DROP TABLE IF EXISTS {self._new}")

    def _recover(self) -> None:
        """Finish a swap a crash interrupted after the old table was dropped."""
        catalog = self._spark.catalog
        if not catalog.tableExists(self.name) and catalog.tableExists(self._new):
            log.warning("finishing an interrupted rewrite of %s", self.name)
            self._spark.sql(f"ALTER TABLE {self._new} RENAME TO {self.name}")


def _quoted(parts: tuple[str, ...]) -> str:
    return ".".join("`" + p.replace("`", "``") + "`" for p in parts)
