"""Catalog tables whose format has no MERGE or REPLACE (parquet / ORC / CSV tables of a Hive or
in-memory catalog), rewritten whole like file tables.

A write saves the new content as a sibling table `<t>__agentbatch_new`, then swaps it in with three
catalog operations: rename `<t>` to `<t>__agentbatch_old`, rename the new table to `<t>`, drop the
old one. A crash between any two leaves one of these sets of tables, each telling its own story:

    <t>, new         the new content was not swapped in: drop it (the old content stays)
    new, old         cut between the renames: rename new to <t> (the new content), drop old
    <t>, old         swapped: drop old

Every other set is the user's doing and means what it says: the new or the old table without `<t>`
is a table the user dropped after a crash, so the leftover goes with it and the table does not exist
(relinking it would bring the dropped answers back). Only between the two renames is `<t>` missing
without a user's drop; the next use of the table ends that state. Delta, Iceberg and Hudi tables (and
everything on Databricks) take MERGE natively instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentbatch.engines.spark.session import conf_value
from agentbatch.sql.quoting import name_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

NATIVE_MERGE_FORMATS = frozenset({"delta", "iceberg", "hudi"})
NEW_SUFFIX = "__agentbatch_new"
OLD_SUFFIX = "__agentbatch_old"
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
    """A catalog table replaced by save-aside and two renames (see the module docstring)."""

    def __init__(self, spark: SparkSession, parts: tuple[str, str, str]) -> None:
        self._spark = spark
        # The session catalog (where such tables live) takes two-part names in DDL.
        local = parts[1:] if parts[0] == SESSION_CATALOG else parts
        self.name = name_path(*local)
        self._new_parts = (*local[:-1], local[-1] + NEW_SUFFIX)
        self._new = name_path(*self._new_parts)
        self._old = name_path(*local[:-1], local[-1] + OLD_SUFFIX)

    def exists(self) -> bool:
        self._recover()
        return self._has(self.name)

    def read(self, spark: SparkSession) -> DataFrame:
        return spark.table(self.name)

    def write(self, df: DataFrame) -> None:
        self._recover()
        self._sql(f"DROP TABLE IF EXISTS {self._new}")
        self._remove_orphan_folder()
        df.write.saveAsTable(self._new)
        if self._has(self.name):
            self._sql(f"ALTER TABLE {self.name} RENAME TO {self._old}")
        self._sql(f"ALTER TABLE {self._new} RENAME TO {self.name}")
        self._sql(f"DROP TABLE IF EXISTS {self._old}")

    def holds_no_rows(self) -> bool:
        return False  # a catalog table's row count costs a Spark job

    def drop(self) -> None:
        # The leftovers first: dropping `<t>` last leaves no set a later run would relink.
        self._sql(f"DROP TABLE IF EXISTS {self._new}")
        self._sql(f"DROP TABLE IF EXISTS {self._old}")
        self._sql(f"DROP TABLE IF EXISTS {self.name}")

    def _recover(self) -> None:
        """Finish or undo a swap a crash interrupted; drop what a user's DROP left behind."""
        table, new, old = self._has(self.name), self._has(self._new), self._has(self._old)
        if new and old and not table:
            log.warning("finishing an interrupted rewrite of %s", self.name)
            self._sql(f"ALTER TABLE {self._new} RENAME TO {self.name}")
            new = False
        if new:
            self._sql(f"DROP TABLE IF EXISTS {self._new}")
        if old:
            self._sql(f"DROP TABLE IF EXISTS {self._old}")

    def _remove_orphan_folder(self) -> None:
        """A run killed inside `saveAsTable` leaves the new table's folder without its catalog
        entry, and Spark refuses a managed table over an existing folder (LOCATION_ALREADY_EXISTS):
        every later write of the table failed. The name is ours and no table has it: remove it."""
        jvm, jsc = getattr(self._spark, "_jvm", None), getattr(self._spark, "_jsc", None)
        if len(self._new_parts) != 2 or jvm is None or jsc is None:
            return  # not the session catalog, or a Spark Connect session (no Hadoop file system)
        schema, table = self._new_parts
        # Where Spark puts a managed table: the schema's folder, the name in lower case.
        base = str(self._spark.catalog.getDatabase(schema).locationUri).rstrip("/")
        folder = jvm.org.apache.hadoop.fs.Path(f"{base}/{table.lower()}")
        fs = folder.getFileSystem(jsc.hadoopConfiguration())
        if fs.exists(folder):
            log.warning("removing %s, left by a write that was cut short", folder.toString())
            fs.delete(folder, True)

    def _has(self, name: str) -> bool:
        return bool(self._spark.catalog.tableExists(name))

    def _sql(self, statement: str) -> None:
        """Every catalog operation of a swap goes through here (one statement at a time)."""
        self._spark.sql(statement)
