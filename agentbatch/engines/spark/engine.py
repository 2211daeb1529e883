"""The `spark` engine: the job's Databricks SQL on a Spark session, and agent calls spread over the
executors.

- On Databricks (a job, a notebook, Databricks Connect) the SQL runs as rendered, with the built-in
  `ai_query`, against catalog tables.
- Elsewhere the SQL is transpiled to Spark SQL by sqlglot and `ai_query` is a registered Arrow UDF
  backed by the REST client (spark_ai_query.py), so push-down jobs run unchanged.
- Tables (spark_tables.py): names in `tables` map to files or DataFrames (temp views); a mapped
  table the job writes is a parquet folder. Other tables are catalog tables when the session has a
  persistent catalog (Databricks, Hive), else parquet folders under
  `warehouse_dir/<catalog>/<schema>/<table>` (`storage: files`). Formats without MERGE or REPLACE
  are rewritten whole and swapped in (spark_writes.py, spark_files.py, spark_catalog.py).
- The REST fallback runs in `mapInArrow` tasks on the executors (spark_distributed.py:
  `run_distributed`) where executors can reach the network, and on the driver (the runner's
  own path: `agentbatch.agent.bulk.run_bulk` with its limiter and ledger) where they cannot:
  serverless compute, whose UDFs "cannot access the internet" (Databricks docs:
  compute/serverless/limitations), and Databricks Connect sessions. `rest_fallback_on` chooses.

Settings (all optional):
    catalog, schema          completing one- and two-part table names
    storage                  auto | catalog | files (auto: catalog with a persistent catalog)
    warehouse_dir            where `files` storage keeps tables
    state_dir, checkpoint_dir  the fallback's checkpoint folder (default `<state_dir>/spark-checkpoints`
                             on local sessions; on clusters a path every executor can write, such
                             as a volume; `false` keeps answers in Spark's memory, without resume);
                             a run on the driver copies its answers there when it is set
    checkpoint_every_s       seconds between those copies (default 30; copies.py)
    endpoint_overrides       endpoint name -> URL, for the fallback (and for ai_query)
    ai_query_endpoints       endpoint name -> URL, for the registered ai_query only
    ai_query_api             chat | responses: the body shape of a STRING request (default chat)
    max_concurrency          calls in flight across all tasks for ai_query (default 64)
    partitions               fallback tasks (default: the session's default parallelism)
    shared_budget            true/false: fallback tasks on executors share one budget of the agent,
                             kept by the driver (default true; executors must reach the driver)
    rest_fallback_on         auto | driver | executors (auto: driver on serverless and Databricks
                             Connect, executors elsewhere); `agentbatch plan` shows the choice
    serverless               true/false: override the serverless detection (runtime `client.*`)
    apps_secret_scope        secret scope of the service principal that calls Apps (keys
    apps_client_id_key,      `client-id` and `client-secret` unless named)
    apps_client_secret_key
    conflict_attempts,       runs of a statement that meets a Delta write conflict (default 5)
    conflict_backoff_s       and the first wait's upper bound (default 1 s, doubled each time)
    master, app_name, spark_conf  for a session this engine starts itself (with SPARK_REMOTE set,
                             a Spark Connect session of that server: spark_conf only)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlglot import exp

from agentbatch.engines import write_conflicts
from agentbatch.engines.base import AnswerCopies, DistributedCalls, WriteRequest, WriteStats
from agentbatch.engines.binary_files import rewrite_for_spark, volume_mappings
from agentbatch.engines.spark import session
from agentbatch.engines.spark.arrow import StagedBatches, arrow_batches, arrow_schema
from agentbatch.engines.spark.catalog import SESSION_CATALOG
from agentbatch.engines.spark.errors import guard, guarded
from agentbatch.engines.spark.spill import Spill, SpillFolder, SpillTable
from agentbatch.engines.spark.sql import (
    Names,
    ai_query_endpoints,
    parse,
    point_tables,
    rewrite_ai_query,
    to_spark,
    written_table,
)
from agentbatch.engines.spark.tables import TableMap, TableSource
from agentbatch.errors import AgentError, EngineError, UsageError
from agentbatch.results import FINGERPRINT_COLUMN
from agentbatch.sql import parsing

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from agentbatch.agent.calls import CallSpec
    from agentbatch.agent.ledger import Ledger
    from agentbatch.engines.spark.copies import DriverCopies
    from agentbatch.engines.spark.distributed import DistributedAnswers

log = logging.getLogger(__name__)

STAGED = "agentbatch_staged"
FALLBACK_PLACES = ("auto", "driver", "executors")
# On a refresh's answers: the row keeps the earlier answer the target holds (`_marking_kept`).
KEPT_COLUMN = "_agentbatch_kept"
_WRITES = (exp.Create, exp.Insert, exp.Merge, exp.Drop)


class SparkEngine:
    name: ClassVar[str] = "spark"
    dialect: ClassVar[str] = "spark"
    # Built in on Databricks, registered elsewhere.
    native_ai_query: ClassVar[bool] = True
    distributed_calls: ClassVar[bool] = True

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
        place = str(self.settings.get("rest_fallback_on", "auto"))
        if place not in FALLBACK_PLACES:
            raise UsageError(
                f"spark engine: rest_fallback_on must be auto, driver or executors, not {place!r}"
            )
        from agentbatch.agent.endpoints import AppCredentials, use_app_credentials

        use_app_credentials(AppCredentials.from_settings(self.settings))
        active = spark or session.active_session()
        # Only a session this engine started is stopped on close.
        self._owns_session = active is None
        self.spark: SparkSession = active or session.local_session(self.settings)
        self.on_databricks = session.on_databricks(self.spark)
        self.calls_on_workers = fallback_place(place, self.spark, self.settings) == "executors"
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
            "main" if self.files else guard(self.spark.catalog.currentCatalog)
        )
        self.names = Names(str(default_catalog), str(self.settings.get("schema", "default")))
        # `--table /Volumes/...=FOLDER`: a folder read with read_files(..., 'binaryFile').
        self.volumes = volume_mappings(tables or {})
        tables = {k: v for k, v in (tables or {}).items() if k.rstrip("/") not in self.volumes}
        self.tables = TableMap(
            self.spark,
            self.names,
            files=self.files,
            on_databricks=self.on_databricks,
            warehouse_dir=self.warehouse_dir,
            tables=tables or {},
            output_tables=output_tables,
            token=uuid.uuid4().hex[:8],
        )

    # -- the Engine protocol --------------------------------------------------------------------

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        tree = parse(sql)
        self._bind_ai_query(tree)
        target = written_table(tree)
        table = self.tables.writable(tree, target) if isinstance(tree, _WRITES) and target else None
        if table is None:
            # On Databricks the table is Delta, which two runs writing at once may make refuse a
            # commit: the statement changed nothing and is run again, as on a SQL warehouse.
            write_conflicts.retrying(
                lambda: guard(lambda: self._frame(tree, params, original=sql)),
                engine="spark",
                attempts=int(self.settings.get("conflict_attempts", write_conflicts.ATTEMPTS)),
                base_s=float(self.settings.get("conflict_backoff_s", write_conflicts.BACKOFF_S)),
            )
            return
        from agentbatch.engines.spark.writes import write_file_table

        name = ".".join(self.names.full(target)) if target else ""
        guard(
            lambda: write_file_table(
                self.spark, tree, table, name, lambda q: self._frame(q, params)
            )
        )

    def fetch_batches(
        self, sql: str, params: Mapping[str, Any] | None = None, *, batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        df = self.query(sql, params)
        yield from guarded(arrow_batches(df, batch_rows))

    def fetch_one(self, sql: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        df = self.query(sql, params).limit(1)
        rows = guard(lambda: _first_rows(df))
        if rows:
            first: dict[str, Any] = rows[0]
            return first
        return {name: None for name in df.columns}

    def table_exists(self, table: str) -> bool:
        return self.tables.exists(table)

    def location(self, table: str) -> dict[str, str]:
        """Where a table is: the folder it is mapped to (`--table`), else its name on this target."""
        mapped = self.tables.mapped_output(table)
        name = ".".join(self.names.full(table))
        if mapped is not None:
            return {"table": name, "file": str(mapped)}
        return {"table": name, "target": self.name}

    def write_results(
        self, request: WriteRequest, batches: Iterable[pa.RecordBatch], schema: pa.Schema
    ) -> WriteStats:
        staged = StagedBatches(
            self.spark,
            batches,
            schema,
            on_local_disk=session.is_local(self.spark),
            spill=self._spill(request.table),
        )
        with staged as df:
            return self.write_dataframe(request, df, rows=staged.rows)

    def _spill(self, table: str) -> Spill:
        """Where a long run's answers wait for the write on a cluster: a folder beside file
        tables, else a table beside the output (in the session's schema when the output is
        mapped to a folder)."""
        catalog, schema, name = self.names.full(table)
        if self.files:
            return SpillFolder(self.spark, self.warehouse_dir / ".spill", name)
        if self.tables.mapped_output(table) is not None:
            catalog, schema = self.names.catalog, self.names.schema
        # The session catalog takes two-part names in DDL.
        namespace = (schema,) if catalog == SESSION_CATALOG else (catalog, schema)
        return SpillTable(self.spark, namespace, name)

    def ai_query_missing(self) -> str | None:
        """Spark runs ai_query wherever it has it (Databricks Runtime, or the function registered
        for local sessions)."""
        return None

    def check_can_write(self, table: str) -> None:
        """Not checked: a probe would cost a Spark job each run (Unity Catalog's MODIFY on
        Databricks compute is met at the write; the checkpoint keeps the answers)."""

    def read_table(self, table: str, limit: int | None = None) -> pa.Table:
        import pyarrow as pa

        select = exp.select("*").from_(exp.to_table(table, dialect="databricks"))
        if limit is not None:
            select = select.limit(int(limit))
        df = self._frame(select, None)
        batches = list(guarded(arrow_batches(df)))
        return pa.Table.from_batches(
            batches, schema=batches[0].schema if batches else arrow_schema(df)
        )

    def close(self) -> None:
        if self._owns_session:
            self.spark.stop()
            return
        self.tables.drop_views()

    # -- beyond the protocol: DataFrames and distributed agent calls -----------------------------

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> DataFrame:
        """A query's DataFrame (lazy: nothing runs until it is read)."""
        tree = parse(sql)
        self._bind_ai_query(tree)
        return guard(lambda: self._frame(tree, params, original=sql))

    def write_dataframe(
        self, request: WriteRequest, df: DataFrame, *, rows: int | None = None
    ) -> WriteStats:
        """Stage `df` as the request's staging relation and run its write SQL."""
        df.createOrReplaceTempView(request.staging_name)
        try:
            counted = rows if rows is not None else guard(df.count)
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
        answered_since: int | None = None,
        partitions: int | None = None,
        ledger: Path | None = None,
    ) -> DistributedAnswers:
        """Answer the rows of `inputs_sql` on the executors; results have each key once. Answers
        the checkpoint holds are taken instead of calls (only those received at or after
        `answered_since`, microseconds, when it is set); with `ledger`, those of the driver's
        ledger too, a key's latest answer in either counting (stores.py)."""
        import functools

        from agentbatch.engines.spark.calls import remote_call
        from agentbatch.engines.spark.distributed import answer_distributed
        from agentbatch.engines.spark.stores import ledger_answers

        overrides = self.endpoint_overrides if endpoint_overrides is None else endpoint_overrides
        remote = remote_call(call, overrides)
        tasks = int(
            partitions or self.settings.get("partitions") or session.default_parallelism(self.spark)
        )
        inputs = self.query(inputs_sql)
        folder = self.checkpoint_folder(table, call)
        from_ledger = functools.partial(
            ledger_answers,
            self.spark,
            ledger,
            key=key,
            on_local_disk=session.is_local(self.spark),
            spill=self._spill(table),
        )
        return guard(
            lambda: answer_distributed(
                self.spark,
                inputs,
                remote,
                key,
                tasks=tasks,
                checkpoint=folder,
                retry_errors=retry_errors,
                answered_since=answered_since,
                shared_budget=bool(self.settings.get("shared_budget", True)),
                # No ledger file (the job never ran on the driver): no Spark job to look.
                ledger=from_ledger if ledger is not None and ledger.is_file() else None,
            )
        )

    def share_answers(self, work: DistributedCalls, ledger: Ledger) -> int:
        """Before a run on the driver: the answers runs on the executors left in the checkpoint
        folder for the keys `work` selects go into `ledger` where newer than its own (stores.py),
        so that run reuses them and never writes an older answer than theirs."""
        from agentbatch.engines.spark.arrow import variants_as_json_text
        from agentbatch.engines.spark.distributed import output_schema, response_type
        from agentbatch.engines.spark.stores import share_with_ledger

        folder = self.checkpoint_folder(work.write.table, work.call)
        if folder is None or next(folder.glob("part-*.parquet"), None) is None:
            return 0  # nothing to read: no Spark job
        # The rows as the executors would answer them: the types the folder's files must have.
        inputs, _ = variants_as_json_text(self.query(work.inputs_sql))
        schema = output_schema(inputs.schema, response_type(work.call))
        return guard(
            lambda: share_with_ledger(self.spark, folder, inputs, work.write.key, schema, ledger)
        )

    def copy_answers(self, work: DistributedCalls, run_id: str) -> DriverCopies | None:
        """A run on the driver copies its answers to the checkpoint folder `checkpoint_dir`
        names (a volume outlives the task's disk, the ledger's: copies.py); None without one."""
        from agentbatch.engines.spark.copies import EVERY_S, DriverCopies

        folder = self._outliving_folder(work)
        if folder is None:
            return None
        every_s = float(self.settings.get("checkpoint_every_s", EVERY_S))
        return DriverCopies(folder, work.write.key, run_id, every_s)

    def refresh_began(self, work: DistributedCalls) -> int | None:
        """When the unfinished full refresh the checkpoint folder records began (microseconds):
        the one a run on a new disk, whose ledger records none, continues."""
        from agentbatch.engines.spark.checkpoints import refresh_began

        folder = self._outliving_folder(work)
        return None if folder is None else refresh_began(folder)

    def record_refresh(self, work: DistributedCalls, since: int | None) -> None:
        """The checkpoint folder records the unfinished full refresh begun at `since`, or none.
        A folder that refuses it is named, never fails the run: a run on a new disk would then
        start that refresh over."""
        from agentbatch.engines.spark.checkpoints import begin_refresh, end_refresh

        folder = self._outliving_folder(work)
        if folder is None:
            return
        try:
            if since is None:
                end_refresh(folder)
            else:
                begin_refresh(folder, since)
        except OSError as err:
            log.warning(
                "checkpoint %s: the full refresh's start cannot be recorded there (%s); a run "
                "on another machine would start it over",
                folder,
                err,
            )

    def _outliving_folder(self, work: DistributedCalls) -> Path | None:
        """The checkpoint folder `checkpoint_dir` names, which outlives the driver's disk; None
        without one (the default folder of a local session is on that disk: nothing to outlive)."""
        if self.settings.get("checkpoint_dir") in (None, False, ""):
            return None
        return self.checkpoint_folder(work.write.table, work.call)

    def fold_copies(self, work: DistributedCalls, copies: AnswerCopies) -> None:
        """The run wrote its answers: its copies are marked done, and the folder is folded once
        it holds `FOLD_AT_FILES` files. Not after every run: a fold rewrites every key's answer,
        which a small scheduled run on a large table should not pay for each time."""
        from agentbatch.engines.spark.checkpoints import mark_done, part_files
        from agentbatch.engines.spark.copies import FOLD_AT_FILES, DriverCopies

        if not isinstance(copies, DriverCopies) or not copies.copied:
            return
        try:
            mark_done(copies.folder, copies.run)
        except OSError as err:
            log.warning(
                "checkpoint %s: run not marked done (folded in a day): %s", copies.folder, err
            )
            return
        if part_files(copies.folder) >= FOLD_AT_FILES:
            self._compact_checkpoint(copies.folder, work.write.key, copies.run, finished=False)

    def run_distributed(self, work: DistributedCalls) -> dict[str, Any]:
        """The REST fallback on the executors: ensure the target, answer, write, then compact the
        checkpoint, which keeps the latest answer per key for later runs. A refresh reuses only
        its own answers: those received since it began (`work.refresh_since`, which the ledger
        records for every path; none: it begins now)."""
        if work.ensure_sql is not None:
            self.execute(work.ensure_sql)  # the inputs read it: what is done
        folder = self.checkpoint_folder(work.write.table, work.call)
        since = None
        if work.refresh:
            since = work.refresh_since if work.refresh_since is not None else time.time_ns() // 1000
        answers = self.answer_distributed(
            work.inputs_sql,
            work.call,
            work.write.key,
            table=work.write.table,
            endpoint_overrides=work.endpoint_overrides,
            retry_errors=work.retry_errors,
            answered_since=since,
            ledger=work.ledger,
        )
        written = kept = 0
        found = answers.results
        if found is not None:
            if work.keep_answers:
                found = self._marking_kept(found, work)
            results, rows, kept = guard(lambda: _read_once(found))
            if rows or work.keep_only_sql is None:
                written = self.write_dataframe(work.write, results, rows=rows).rows_written
            else:  # every answer kept: the target's rows stay as they are
                self.execute(work.keep_only_sql)
        elif work.keep_only_sql is not None:
            self.execute(work.keep_only_sql)
        if folder is not None:
            self._compact_checkpoint(
                folder, work.write.key, answers.run_id, finished=not answers.fatal
            )
        if answers.fatal:
            raise AgentError(f"{answers.fatal} ({written} answered row(s) were written)")
        return {**answers.stats, "rows_written": written, **_kept_figures(kept)}

    def _marking_kept(self, results: DataFrame, work: DistributedCalls) -> DataFrame:
        """`results` with `KEPT_COLUMN`: true for a transient failure whose key the target holds
        answered to the same request (`request_fingerprint`) without an error. That row keeps
        its answer (a paid, valid answer is not replaced by a failure the next run retries); a
        permanent failure, or one over an error row, replaces it, as on the driver
        (runner.py `_answers_kept`). The target decides: a join in Spark, read before the write
        (`_read_once` materialises it), no key collected on the driver."""
        from pyspark.sql import functions as F

        from agentbatch.results import TRANSIENT_ERROR
        from agentbatch.sql import quoting

        key = work.write.key
        answered = self.query(
            f"SELECT {quoting.identifier(key)}, `{FINGERPRINT_COLUMN}` "
            f"FROM {quoting.table(work.write.table)} WHERE `error` IS NULL"
        )
        held = answered.distinct().withColumn(KEPT_COLUMN, F.lit(True))
        transient = F.coalesce(F.col("error").startswith(TRANSIENT_ERROR), F.lit(False))
        marked = results.join(held, [key, FINGERPRINT_COLUMN], "left")
        return marked.select(
            *[F.col(f"`{c}`") for c in results.columns],
            (transient & F.coalesce(F.col(KEPT_COLUMN), F.lit(False))).alias(KEPT_COLUMN),
        )

    def _compact_checkpoint(self, folder: Path, key: str, run_id: str, *, finished: bool) -> None:
        """After the write: a finished run ends the refresh it was (a stopped one keeps its start
        for its next run), and the folder is folded into the latest answer per key. A failed
        compaction leaves the files it read, as readable as before: the run's outcome stands."""
        from agentbatch.engines.spark.distributed import compact, end_refresh

        try:
            if finished:
                end_refresh(folder)
            guard(lambda: compact(self.spark, folder, key, run_id))
        except (OSError, EngineError) as err:
            log.warning("checkpoint %s not compacted (its answers stay reusable): %s", folder, err)

    def checkpoint_folder(self, table: str, call: CallSpec) -> Path | None:
        """Where executors checkpoint this table's answers; None when no shared path is known."""
        from agentbatch.agent.calls import call_fingerprint
        from agentbatch.engines.spark.distributed import checkpoint_folder

        root = self.settings.get("checkpoint_dir")
        if root is False:
            return None  # explicitly off: results stay in Spark's memory for the run
        if root is None and session.is_local(self.spark):
            root = self.state_dir / "spark-checkpoints"
        if root is None:
            log.warning(
                "no checkpoint_dir set: answers of a killed run are lost; set it to a folder every "
                "executor can write (e.g. a Unity Catalog volume)"
            )
            return None
        return checkpoint_folder(root, table, call_fingerprint(call))

    # -- SQL ------------------------------------------------------------------------------------

    def _frame(
        self, tree: exp.Expression, params: Mapping[str, Any] | None, *, original: str | None = None
    ) -> DataFrame:
        """Run `tree` (its text `original` untouched on Databricks when no table was remapped)."""
        tree = tree.copy()
        remapped = point_tables(tree, self.tables.relation)
        if not self.on_databricks:
            rewrite_for_spark(tree, self.volumes)  # Databricks has read_files itself
            sql = to_spark(tree)
        elif original is not None and not remapped:
            sql = original
        else:
            sql = parsing.printed(tree)
        return self.spark.sql(sql, args=dict(params)) if params else self.spark.sql(sql)

    # -- ai_query --------------------------------------------------------------------------------

    def _bind_ai_query(self, tree: exp.Expression) -> None:
        """Off Databricks: point ai_query calls at the registered UDFs, bound to their endpoints."""
        if self.on_databricks or not rewrite_ai_query(tree):
            return
        from agentbatch.engines.spark.ai_query import ai_query_config, register_ai_query

        config = ai_query_config(
            ai_query_endpoints(tree),
            self.settings,
            self.endpoint_overrides,
            session.default_parallelism(self.spark),
        )
        register_ai_query(self.spark, config)


def _first_rows(df: DataFrame) -> list[dict[str, Any]]:
    """`df`'s (few) rows as Arrow gives them. Collected by the JVM where Spark can (`toArrow`,
    pyspark 4): one job, no Python worker task to encode a row."""
    if hasattr(df, "toArrow"):
        return df.toArrow().to_pylist()  # type: ignore[no-any-return]
    return [row for batch in arrow_batches(df, 1) for row in batch.to_pylist()]


def _read_once(results: DataFrame) -> tuple[DataFrame, int, int]:
    """`results` materialised, its row count, and how many rows kept their earlier answer: the
    answers are read from the checkpoint's many small files once, not once for the count and
    again for the write. Rows marked `KEPT_COLUMN` (`_marking_kept`) are left out."""
    from pyspark.sql import functions as F

    results = results.localCheckpoint(eager=True)
    if KEPT_COLUMN not in results.columns:
        return results, results.count(), 0
    kept = F.col(KEPT_COLUMN)
    found = results.agg(
        F.count(F.when(~kept, 1)).alias("rows"), F.count(F.when(kept, 1)).alias("kept")
    ).first()
    rows, left_out = (int(found["rows"]), int(found["kept"])) if found is not None else (0, 0)
    return results.where(~kept).drop(KEPT_COLUMN), rows, left_out


def _kept_figures(kept: int) -> dict[str, int]:
    """The summary's count of refresh rows that kept their earlier answer (when there are)."""
    return {"kept_previous_answer": kept} if kept else {}


def fallback_place(setting: str, spark: SparkSession, settings: Mapping[str, Any]) -> str:
    """Where the REST fallback calls the agent: "driver" or "executors"."""
    if setting in ("driver", "executors"):
        return setting
    if session.is_serverless(spark, settings):
        return "driver"  # serverless UDFs cannot reach the network
    if session.is_connect(spark) and not session.on_databricks(spark):
        return "driver"  # Databricks Connect: the executors are remote compute of unknown reach
    return "executors"


def describe_fallback_place(settings: Mapping[str, Any]) -> str:
    """What `agentbatch plan` says about the choice (no session is needed)."""
    setting = str(settings.get("rest_fallback_on", "auto"))
    if setting == "driver":
        return "on the driver (rest_fallback_on: driver), checkpointed to the ledger"
    if setting == "executors":
        return "in mapInArrow tasks on the executors (rest_fallback_on: executors)"
    return (
        "rest_fallback_on: auto — on the driver on serverless compute and Databricks Connect "
        "(executors there cannot reach the network), else in mapInArrow tasks on the executors"
    )
