"""The `spark` engine: the job's Databricks SQL on a Spark session, and agent calls spread over the
executors.

- On Databricks (a job, a notebook, Databricks Connect) the SQL runs as rendered, with the built-in
  `ai_query`, against catalog tables.
- Elsewhere the SQL is transpiled to Spark SQL by sqlglot and `ai_query` is a registered Arrow UDF
  backed by the REST client (spark_ai_query.py), so push-down jobs run unchanged.
- Tables: names in `tables` map to files or DataFrames (temp views); a mapped table the job writes
  is a parquet folder. Other tables are catalog tables when the session has a persistent catalog
  (Databricks, Hive), else parquet folders under `warehouse_dir/<catalog>/<schema>/<table>`
  (`storage: files`), written by atomic swap with MERGE as a rewrite (spark_files.py, spark_writes.py).
- The REST fallback runs in `mapInArrow` tasks (spark_distributed.py): `run_rest_fallback`.

Settings: catalog, schema, storage (auto | catalog | files), warehouse_dir, state_dir,
checkpoint_dir, endpoint_overrides, ai_query_endpoints, ai_query_api, max_concurrency, partitions,
master, spark_conf.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlglot import exp

from agentbatch.engines import spark_session as session
from agentbatch.engines.base import WriteRequest, WriteStats
from agentbatch.engines.spark_arrow import StagedBatches, arrow_batches, arrow_schema
from agentbatch.engines.spark_files import FileTable
from agentbatch.engines.spark_sql import (
    FullName,
    Names,
    ai_query_endpoints,
    first_line,
    parse,
    point_tables,
    rewrite_ai_query,
    to_spark,
    written_table,
)
from agentbatch.errors import (
    AgentbatchError,
    AgentError,
    EngineError,
    NotSupportedError,
    UsageError,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from agentbatch.agent.calls import CallSpec
    from agentbatch.engines.spark_distributed import DistributedAnswers
    from agentbatch.engines.spark_writes import SwappableTable
    from agentbatch.planner import RestFallback

log = logging.getLogger(__name__)

T = TypeVar("T")
TableSource = Any  # a path (str / Path), or a pandas / Arrow / Spark DataFrame
STAGED = "agentbatch_staged"
_WRITES = (exp.Create, exp.Insert, exp.Merge, exp.Drop)


class SparkEngine:
    name: ClassVar[str] = "spark"
    dialect: ClassVar[str] = "spark"
    # Built in on Databricks, registered elsewhere.
    native_ai_query: ClassVar[bool] = True

    @classmethod
    def staging_relation(cls, table: str, run_id: str) -> str:
        return STAGED

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        *,
        spark: SparkSession | None = None,
        tables: Mapping[str, TableSource] | None = None,
        output_tables: Iterable[str] = (),
    ) -> None:
        self.settings = dict(settings or {})
        self.endpoint_overrides: dict[str, str] = dict(
            self.settings.get("endpoint_overrides") or {}
        )
        self.warehouse_dir = Path(self.settings.get("warehouse_dir") or ".agentbatch/warehouse")
        self.state_dir = Path(self.settings.get("state_dir") or ".agentbatch/state")
        active = spark or session.active_session()
        self._owns_session = active is None
        self.spark: SparkSession = active or session.local_session(self.settings)
        self.on_databricks = session.on_databricks(self.spark)
        storage = str(self.settings.get("storage", "auto"))
        if storage not in ("auto", "catalog", "files"):
            raise UsageError(
                f"spark engine: storage must be auto, catalog or files, not {storage!r}"
            )
        if storage == "auto":
            catalog = self.on_databricks or session.has_persistent_catalog(self.spark)
            storage = "catalog" if catalog else "files"
        self.files = storage == "files"
        # One- and two-part names: the session's current catalog, unless the settings name one.
        default_catalog = self.settings.get("catalog") or (
            "main" if self.files else self._guard(self.spark.catalog.currentCatalog)
        )
        self.names = Names(str(default_catalog), str(self.settings.get("schema", "default")))
        self._token = uuid.uuid4().hex[:8]
        self._views: list[str] = []
        self._inputs: dict[FullName, str] = {}
        self._outputs: dict[FullName, FileTable] = {}
        outputs = {self.names.full(t) for t in output_tables}
        for number, (name, source) in enumerate((tables or {}).items()):
            full = self.names.full(name)
            if full in outputs:
                if not isinstance(source, (str, os.PathLike)):
                    raise UsageError(f"the output table {name} can only be mapped to a folder path")
                self._outputs[full] = FileTable(source)
            else:
                self._inputs[full] = self._register_input(number, name, source)

    # -- the Engine protocol --------------------------------------------------------------------

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        tree = parse(sql)
        self._bind_ai_query(tree)
        target = written_table(tree)
        if target is not None and isinstance(tree, _WRITES):
            full = self.names.full(target)
            if full in self._inputs:
                raise UsageError(
                    f"table {'.'.join(full)} is mapped to input data; it cannot be written"
                )
            table: SwappableTable | None = self._file_table(full, target)
            if table is None and self._needs_rewrite(tree, full):
                from agentbatch.engines.spark_catalog import CatalogTable

                table = CatalogTable(self.spark, full)
            if table is not None:
                from agentbatch.engines.spark_writes import write_file_table

                self._guard(
                    lambda: write_file_table(
                        self.spark, tree, table, ".".join(full), lambda q: self._frame(q, params)
                    )
                )
                return
        self._guard(lambda: self._frame(tree, params, original=sql))

    def fetch_batches(
        self, sql: str, params: Mapping[str, Any] | None = None, *, batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        df = self.query(sql, params)
        yield from self._guarded_iter(arrow_batches(df, batch_rows))

    def fetch_one(self, sql: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        df = self.query(sql, params).limit(1)
        for batch in self._guarded_iter(arrow_batches(df, 1)):
            if batch.num_rows:
                first: dict[str, Any] = batch.to_pylist()[0]
                return first
        return {name: None for name in df.columns}

    def table_exists(self, table: str) -> bool:
        full = self.names.full(table)
        if full in self._inputs:
            return True
        found = self._file_table(full, exp.to_table(table, dialect="databricks"))
        if found is not None:
            return found.exists()
        if not self.on_databricks:  # finishes a rewrite a crash interrupted (spark_catalog.py)
            from agentbatch.engines.spark_catalog import CatalogTable

            return self._guard(CatalogTable(self.spark, full).exists)
        return self._guard(
            lambda: bool(self.spark.catalog.tableExists(".".join(f"`{p}`" for p in full)))
        )

    def write_results(
        self, request: WriteRequest, batches: Iterable[pa.RecordBatch], schema: pa.Schema
    ) -> WriteStats:
        staged = StagedBatches(
            self.spark, batches, schema, on_local_disk=session.is_local(self.spark)
        )
        with staged as df:
            return self.write_dataframe(request, df, rows=staged.rows)

    def read_table(self, table: str, limit: int | None = None) -> pa.Table:
        import pyarrow as pa

        select = exp.select("*").from_(exp.to_table(table, dialect="databricks"))
        if limit is not None:
            select = select.limit(int(limit))
        df = self._frame(select, None)
        batches = list(self._guarded_iter(arrow_batches(df)))
        return pa.Table.from_batches(
            batches, schema=batches[0].schema if batches else arrow_schema(df)
        )

    def close(self) -> None:
        if self._owns_session:
            self.spark.stop()
            return
        for view in self._views:
            self.spark.catalog.dropTempView(view)

    # -- beyond the protocol: DataFrames and distributed agent calls -----------------------------

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> DataFrame:
        """A query's DataFrame (lazy: nothing runs until it is read)."""
        tree = parse(sql)
        self._bind_ai_query(tree)
        return self._guard(lambda: self._frame(tree, params, original=sql))

    def write_dataframe(
        self, request: WriteRequest, df: DataFrame, *, rows: int | None = None
    ) -> WriteStats:
        """Stage `df` as the request's staging relation and run its write SQL."""
        df.createOrReplaceTempView(request.staging_name)
        try:
            counted = rows if rows is not None else self._guard(df.count)
            for sql in request.write_sql:
                self.execute(sql)
        finally:
            self.spark.catalog.dropTempView(request.staging_name)
        return WriteStats(rows_written=counted)

    def answer_distributed(
        self,
        inputs_sql: str,
        call: CallSpec,
        key: str,
        *,
        table: str,
        endpoint_overrides: Mapping[str, str] | None = None,
        retry_errors: bool = False,
        partitions: int | None = None,
    ) -> DistributedAnswers:
        """Answer the rows of `inputs_sql` on the executors; results have each key once."""
        from agentbatch.engines.spark_calls import remote_call
        from agentbatch.engines.spark_distributed import answer_distributed

        overrides = self.endpoint_overrides if endpoint_overrides is None else endpoint_overrides
        remote = remote_call(call, overrides)
        tasks = int(
            partitions or self.settings.get("partitions") or session.default_parallelism(self.spark)
        )
        inputs = self.query(inputs_sql)
        folder = self.checkpoint_folder(table, call)
        return self._guard(
            lambda: answer_distributed(
                self.spark,
                inputs,
                remote,
                key,
                tasks=tasks,
                checkpoint=folder,
                retry_errors=retry_errors,
            )
        )

    def run_rest_fallback(
        self,
        steps: RestFallback,
        *,
        endpoint_overrides: Mapping[str, str] | None = None,
        retry_errors: bool = False,
    ) -> dict[str, Any]:
        """The plan's REST-fallback steps, distributed: ensure the target, answer, write, clean up."""
        if steps.ensure_target is not None:
            self.execute(steps.ensure_target.sql)
        answers = self.answer_distributed(
            steps.inputs.sql,
            steps.call,
            steps.write.key,
            table=steps.write.table,
            endpoint_overrides=endpoint_overrides,
            retry_errors=retry_errors,
        )
        written = 0
        if answers.results is not None:
            written = self.write_dataframe(steps.write, answers.results).rows_written
        folder = self.checkpoint_folder(steps.write.table, steps.call)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)  # written: the target is the record now
        if answers.fatal:
            raise AgentError(f"{answers.fatal} ({written} answered row(s) were written)")
        return {**answers.stats, "rows_written": written}

    def checkpoint_folder(self, table: str, call: CallSpec) -> Path | None:
        """Where executors checkpoint this table's answers; None when no shared path is known."""
        from agentbatch.agent.calls import call_fingerprint
        from agentbatch.engines.spark_distributed import checkpoint_folder

        root = self.settings.get("checkpoint_dir")
        if root is None and session.is_local(self.spark):
            root = self.state_dir / "spark-checkpoints"
        if root is None:
            log.warning(
                "no checkpoint_dir set: answers of a killed run are lost; set it to a folder every "
                "executor can write (e.g. a Unity Catalog volume)"
            )
            return None
        return checkpoint_folder(root, table, call_fingerprint(call))

    # -- tables --------------------------------------------------------------------------------

    def _register_input(self, number: int, name: str, source: TableSource) -> str:
        view = f"agentbatch_in_{self._token}_{number}"
        self._guard(lambda: self._read_source(name, source).createOrReplaceTempView(view))
        self._views.append(view)
        return view

    def _read_source(self, name: str, source: TableSource) -> DataFrame:
        if not isinstance(source, (str, os.PathLike)):
            from pyspark.sql import DataFrame

            return source if isinstance(source, DataFrame) else self.spark.createDataFrame(source)
        path = Path(source)
        if not path.exists():
            raise UsageError(f"--table {name}={path}: no such file or folder")
        suffix = path.suffix.lower()
        reader = self.spark.read
        if path.is_dir() and (path / "_delta_log").is_dir():
            return reader.format("delta").load(str(path))
        if path.is_dir() or suffix in (".parquet", ".pq"):
            return reader.parquet(str(path))
        if suffix in (".csv", ".tsv"):
            sep = "\t" if suffix == ".tsv" else ","
            return reader.options(header=True, inferSchema=True, sep=sep, multiLine=True).csv(
                str(path)
            )
        if suffix in (".json", ".jsonl", ".ndjson"):
            return reader.options(multiLine=suffix == ".json").json(str(path))
        raise UsageError(
            f"--table {name}={path}: unsupported file type; use .csv, .parquet, .json/.jsonl or a folder"
        )

    def _file_table(self, full: FullName, node: exp.Table) -> FileTable | None:
        if full in self._outputs:
            return self._outputs[full]
        if not self.files or (len(node.parts) == 1 and self.spark.catalog.tableExists(node.name)):
            return None  # a catalog table, or a temp view such as the staging relation
        return FileTable(self.warehouse_dir / full[0] / full[1] / full[2])

    def _needs_rewrite(self, tree: exp.Expression, full: FullName) -> bool:
        """A MERGE or REPLACE on a catalog table whose format cannot run it (not on Databricks)."""
        replacing = isinstance(tree, exp.Merge) or (
            isinstance(tree, exp.Create) and bool(tree.args.get("replace"))
        )
        if self.on_databricks or not replacing:
            return False
        from agentbatch.engines.spark_catalog import merges_natively

        name = ".".join(f"`{p}`" for p in full)
        return not self._guard(
            lambda: merges_natively(self.spark, name, bool(self.spark.catalog.tableExists(name)))
        )

    def _relation(self, node: exp.Table) -> str | None:
        full = self.names.full(node)
        if full in self._inputs:
            return self._inputs[full]
        table = self._file_table(full, node)
        if table is None:
            return None
        location = table.location()
        if location is None:
            raise EngineError(f"spark engine: table {'.'.join(full)} does not exist yet")
        # One view per table, re-pointed at the current version for every statement.
        digest = hashlib.sha256(".".join(full).encode()).hexdigest()[:12]
        view = f"agentbatch_ft_{self._token}_{digest}"
        self.spark.read.parquet(str(location)).createOrReplaceTempView(view)
        if view not in self._views:
            self._views.append(view)
        return view

    def _frame(
        self, tree: exp.Expression, params: Mapping[str, Any] | None, *, original: str | None = None
    ) -> DataFrame:
        """Run `tree` (its text `original` untouched on Databricks when no table was remapped)."""
        tree = tree.copy()
        remapped = point_tables(tree, self._relation)
        if not self.on_databricks:
            sql = to_spark(tree)
        elif original is not None and not remapped:
            sql = original
        else:
            sql = tree.sql(dialect="databricks")
        return self.spark.sql(sql, args=dict(params)) if params else self.spark.sql(sql)

    # -- ai_query --------------------------------------------------------------------------------

    def _bind_ai_query(self, tree: exp.Expression) -> None:
        """Off Databricks: point ai_query calls at the registered UDFs, bound to their endpoints."""
        if self.on_databricks or not rewrite_ai_query(tree):
            return
        from agentbatch.engines.spark_ai_query import ai_query_config, register_ai_query

        config = ai_query_config(
            ai_query_endpoints(tree),
            self.settings,
            self.endpoint_overrides,
            session.default_parallelism(self.spark),
        )
        register_ai_query(self.spark, config)

    # -- errors --------------------------------------------------------------------------------

    def _guard(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except AgentbatchError:
            raise
        except Exception as err:
            raise _translate(err) from None

    def _guarded_iter(self, items: Iterator[T]) -> Iterator[T]:
        try:
            yield from items
        except AgentbatchError:
            raise
        except Exception as err:
            raise _translate(err) from None


_PYTHON_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$")


def _translate(err: Exception) -> AgentbatchError:
    """A Spark failure as EngineError; an agent unusable inside a UDF as AgentError."""
    if not _is_spark_error(err):
        raise err
    text = str(err)
    found = [m for m in map(_PYTHON_ERROR.match, (line.strip() for line in text.splitlines())) if m]
    python_errors = [m for m in found if m.group(1) not in ("PythonException", "Py4JJavaError")]
    if python_errors:
        name, message = python_errors[-1].group(1), python_errors[-1].group(2)
        if name == "AgentError":
            return AgentError(message)
        return EngineError(f"spark engine: {name}: {message}")
    if "UNSUPPORTED_FEATURE" in text:
        return NotSupportedError(
            f"spark engine: {first_line(err)} (write to Delta tables, or keep tables as parquet "
            "folders with the setting storage: files)"
        )
    return EngineError(f"spark engine: {first_line(err)}")


def _is_spark_error(err: Exception) -> bool:
    names = {cls.__module__.split(".")[0] for cls in type(err).__mro__}
    return bool(names & {"pyspark", "py4j"})
