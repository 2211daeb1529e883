"""Where each table of a job lives for one spark engine, and the relation a statement reads.

- a name mapped to input data (a file, or a pandas / Arrow / Spark DataFrame): a temp view;
- a mapped output: a parquet folder (FileTable);
- any other name: a catalog table (storage `catalog`), or a parquet folder under
  `warehouse_dir/<catalog>/<schema>/<table>` (storage `files`).

File tables are read through one temp view per table, re-pointed at the current version for every
statement. Writes that the table's format cannot run (MERGE, REPLACE) go through a SwappableTable.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from agentbatch.engines.spark.errors import guard
from agentbatch.engines.spark.files import FileTable, read_parquet
from agentbatch.engines.spark.sql import FullName, Names
from agentbatch.errors import EngineError, UsageError
from agentbatch.sql.quoting import name_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from agentbatch.engines.spark.writes import SwappableTable

TableSource = Any  # a path (str / Path), or a pandas / Arrow / Spark DataFrame


class TableMap:
    def __init__(
        self,
        spark: SparkSession,
        names: Names,
        *,
        files: bool,
        on_databricks: bool,
        warehouse_dir: Path,
        tables: Mapping[str, TableSource],
        output_tables: Iterable[str],
        token: str,
    ) -> None:
        self.spark = spark
        self.names = names
        self.files = files
        self.on_databricks = on_databricks
        self.warehouse_dir = warehouse_dir
        self._token = token
        self.views: list[str] = []
        self._pointed: dict[str, tuple[str, int, int] | None] = {}  # view -> its folder
        self._inputs: dict[FullName, str] = {}
        self._outputs: dict[FullName, FileTable] = {}
        outputs = {names.full(t) for t in output_tables}
        for number, (name, source) in enumerate(tables.items()):
            full = names.full(name)
            if full in outputs:
                if not isinstance(source, (str, os.PathLike)):
                    raise UsageError(f"the output table {name} can only be mapped to a folder path")
                self._outputs[full] = FileTable(source)
            else:
                view = f"agentbatch_in_{token}_{number}"
                frame = read_source(spark, name, source)
                guard(functools.partial(frame.createOrReplaceTempView, view))
                self.views.append(view)
                self._inputs[full] = view

    def exists(self, table: str) -> bool:
        full = self.names.full(table)
        if full in self._inputs:
            return True
        found = self.file_table(full, exp.to_table(table, dialect="databricks"))
        if found is not None:
            return found.exists()
        if not self.on_databricks:  # finishes a rewrite a crash interrupted (spark_catalog.py)
            from agentbatch.engines.spark.catalog import CatalogTable

            return guard(CatalogTable(self.spark, full).exists)
        return guard(lambda: bool(self.spark.catalog.tableExists(name_path(*full))))

    def mapped_output(self, table: str) -> Path | None:
        """The folder an output table is mapped to with `--table`, if it is."""
        found = self._outputs.get(self.names.full(table))
        return found.path if found is not None else None

    def writable(self, tree: exp.Expression, target: exp.Table) -> SwappableTable | None:
        """The table a write statement replaces whole, or None when the engine runs it as is."""
        full = self.names.full(target)
        if full in self._inputs:
            raise UsageError(
                f"table {'.'.join(full)} is mapped to input data; it cannot be written"
            )
        table = self.file_table(full, target)
        self._pointed.pop(self._view_name(full), None)  # its next read is of what this writes
        if table is not None or not self._needs_rewrite(tree, full):
            return table
        from agentbatch.engines.spark.catalog import CatalogTable

        return CatalogTable(self.spark, full)

    def file_table(self, full: FullName, node: exp.Table) -> FileTable | None:
        if full in self._outputs:
            return self._outputs[full]
        if not self.files or (len(node.parts) == 1 and self.spark.catalog.tableExists(node.name)):
            return None  # a catalog table, or a temp view such as the staging relation
        return FileTable(self.warehouse_dir / full[0] / full[1] / full[2])

    def relation(self, node: exp.Table) -> str | None:
        """The temp view a statement reads for `node`, or None to read the name as it is."""
        full = self.names.full(node)
        if full in self._inputs:
            return self._inputs[full]
        table = self.file_table(full, node)
        if table is None:
            return None
        location = table.location()
        if location is None:
            raise EngineError(f"spark engine: table {'.'.join(full)} does not exist yet")
        view = self._view_name(full)
        # A linked version folder never changes: its view is made again only when a write links
        # another one (each read of a parquet folder costs a Spark job for its schema). The
        # folder's identity, not its name: a dropped and re-created table reuses version names.
        stamp = _identity(location) if table.path.is_symlink() else None
        if stamp is None or self._pointed.get(view) != stamp:
            read_parquet(self.spark, location).createOrReplaceTempView(view)
            self._pointed[view] = stamp
        if view not in self.views:
            self.views.append(view)
        return view

    def _view_name(self, full: FullName) -> str:
        digest = hashlib.sha256(".".join(full).encode()).hexdigest()[:12]
        return f"agentbatch_ft_{self._token}_{digest}"

    def drop_views(self) -> None:
        for view in self.views:
            self.spark.catalog.dropTempView(view)
        self._pointed.clear()

    def _needs_rewrite(self, tree: exp.Expression, full: FullName) -> bool:
        """A MERGE or REPLACE on a catalog table whose format cannot run it (not on Databricks)."""
        replacing = isinstance(tree, exp.Merge) or (
            isinstance(tree, exp.Create) and bool(tree.args.get("replace"))
        )
        if self.on_databricks or not replacing:
            return False
        from agentbatch.engines.spark.catalog import merges_natively

        name = name_path(*full)
        return not guard(
            lambda: merges_natively(self.spark, name, bool(self.spark.catalog.tableExists(name)))
        )


def is_spark_data_frame(value: Any) -> bool:
    """A classic or a Spark Connect DataFrame: pyspark 3.5's Connect DataFrame (an older Databricks
    Connect or serverless environment) is no subclass of `pyspark.sql.DataFrame`; from 4.0 it is."""
    from pyspark.sql import DataFrame

    if isinstance(value, DataFrame):
        return True
    # Only when loaded: a Connect DataFrame's session imported it already (importing it without
    # the connect extra can exit the process; see session.py).
    connect = sys.modules.get("pyspark.sql.connect.dataframe")
    return connect is not None and isinstance(value, connect.DataFrame)


def read_source(spark: SparkSession, name: str, source: TableSource) -> DataFrame:
    """A DataFrame over a mapped input: a CSV / Parquet / JSON file or folder, or a data frame."""
    if not isinstance(source, (str, os.PathLike)):
        return (
            source if is_spark_data_frame(source) else guard(lambda: spark.createDataFrame(source))
        )
    path = Path(source)
    if not path.exists():
        raise UsageError(f"--table {name}={path}: no such file or folder")
    suffix = path.suffix.lower()
    reader = spark.read
    if path.is_dir() and (path / "_delta_log").is_dir():
        return guard(lambda: reader.format("delta").load(str(path)))
    if path.is_dir() or suffix in (".parquet", ".pq"):
        return guard(lambda: reader.parquet(str(path)))
    if suffix in (".csv", ".tsv"):
        options = {"header": True, "inferSchema": True, "multiLine": True}
        sep = "\t" if suffix == ".tsv" else ","
        return guard(lambda: reader.options(sep=sep, **options).csv(str(path)))
    if suffix in (".json", ".jsonl", ".ndjson"):
        return guard(lambda: reader.options(multiLine=suffix == ".json").json(str(path)))
    raise UsageError(
        f"--table {name}={path}: unsupported file type; use .csv, .parquet, .json/.jsonl or a folder"
    )


def _identity(folder: Path) -> tuple[str, int, int]:
    info = folder.stat()
    return str(folder), info.st_ino, info.st_mtime_ns
