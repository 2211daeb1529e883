"""The REST fallback spread over Spark executors: `mapInArrow`, each task running the async bulk
client over its partition with its share of the run's concurrency cap.

The target decides what is done: `inputs` are the rows the target does not hold. Resume (the
choice, and why): every task appends its completed rows, a group at a time, to a checkpoint folder
of parquet files (`part-<run>-p<partition>-a<attempt>-<n>.parquet`, each written to a hidden
temporary name and renamed, so a killed task leaves whole files only). The folder is per output
table and call fingerprint, so it must be a path every executor and the driver can reach (local
disk for local sessions; a Unity Catalog volume on a cluster). A run first takes, for the input
rows, the latest answer earlier runs left there for each key when it has the same fingerprint
(an answer or a permanent error; never a transient one; on a full refresh only those received
since the refresh began), then sends the rest. The results are exactly the input rows: reused
answers with the source's current columns, and this run's answers. A retried task skips the rows
its earlier attempts finished.

Answers outlive the run, as in the driver's ledger: once the results are written to the target,
`compact` folds the folder into one file of the latest answer per key (the key and result
columns; a later failure hides an earlier answer, as there), so a run after the output was
truncated or dropped is written from it instead of paying again. Files whose key or result
columns have other types than this run's (the source's key changed type) are never read together
with the others, which Spark cannot do: the run pays their rows again, the compaction removes them.
Two runs of one job may share the folder at once (checkpoints.py: no lock; what each may remove).

The driver's ledger (runs with `rest_fallback_on: driver`) is read beside the folder (stores.py):
a key's latest answer in either is the one that counts.

Without a checkpoint folder (a cluster with none configured) the results are the tasks' output,
materialised once with `localCheckpoint`; a killed run then loses the answers of its run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.agent.content import (
    FILE_BATCH_ROWS,
    FILE_COLUMN,
    FILE_COLUMNS,
    concurrency_ceiling,
)
from agentbatch.agent.shared_limits import BudgetAddress
from agentbatch.engines.binary_files import arrow_batch_rows
from agentbatch.engines.spark import session
from agentbatch.engines.spark.arrow import variants_as_json_text, variants_parsed
from agentbatch.engines.spark.calls import RemoteCall, answer_batches
from agentbatch.engines.spark.checkpoints import COMPACTED as COMPACTED
from agentbatch.engines.spark.checkpoints import REFRESH_MARKER as REFRESH_MARKER
from agentbatch.engines.spark.checkpoints import checkpoint_folder as checkpoint_folder
from agentbatch.engines.spark.checkpoints import compact as compact
from agentbatch.engines.spark.checkpoints import end_refresh as end_refresh
from agentbatch.engines.spark.checkpoints import (
    first_per_key,
    latest_per_key,
    read_checkpoint,
    read_materialised,
)
from agentbatch.engines.spark.checkpoints import read_reusable as read_reusable
from agentbatch.errors import AgentbatchError
from agentbatch.results import (
    FINGERPRINT_COLUMN,
    REQUEST_COLUMN,
    RESULT_COLUMN_NAMES,
    TRANSIENT_ERROR,
    result_arrow_fields,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from agentbatch.agent.calls import CallSpec

log = logging.getLogger(__name__)

STATS_COLUMN = "_agentbatch_task_stats"
_SUMMED = (
    "rows_seen",
    "sent",
    "reused",
    "ok",
    "errors",
    "requests",
    "retries",
    "http_429",
    "input_tokens",
    "output_tokens",
    "peak_concurrency",
)
_END = object()
# The other store's answers for the keys of the inputs, in the run's types (stores.py).
OtherStore = Callable[
    ["DataFrame", "StructType"], contextlib.AbstractContextManager["DataFrame | None"]
]
# Completed groups waiting for the task's output; the bulk writer blocks beyond this.
_QUEUED_GROUPS = 4


@dataclass(frozen=True)
class DistributedAnswers:
    """The answers of a distributed run: one row per key, and what the tasks did."""

    results: DataFrame | None
    stats: dict[str, Any] = field(default_factory=dict)
    # Set when the endpoint was unusable (AgentError in a task); answered rows are in `results`.
    fatal: str | None = None
    # Names this run's checkpoint files: `compact(..., run_id)` once they are in the target.
    run_id: str = ""


def answer_distributed(
    spark: SparkSession,
    inputs: DataFrame,
    remote: RemoteCall,
    key: str,
    *,
    tasks: int,
    checkpoint: Path | None,
    retry_errors: bool = False,
    answered_since: int | None = None,
    shared_budget: bool = True,
    ledger: OtherStore | None = None,
) -> DistributedAnswers:
    """Answer every row of `inputs` (key, passthrough, `_request`, `request_fingerprint`).

    With `shared_budget` the tasks share one budget of the agent: a controller on the driver
    (agent/shared_limits.py) that every task reports to over a socket, so a 429 seen by one
    task slows the others and together they never ramp past what the agent admits.

    `ledger(inputs, schema)`: the driver's ledger's answers for the keys of `inputs`, as
    `stores.ledger_answers` gives them, read with the folder's."""
    from pyspark.sql import functions as F

    response_type = _response_type(remote)
    inputs, variant_columns = variants_as_json_text(inputs)  # back to VARIANT when answered
    schema = output_schema(inputs.schema, response_type)
    run_id = uuid.uuid4().hex[:8]
    # Evaluated once: `inputs` reads the target, which the write will change.
    inputs = inputs.localCheckpoint(eager=True)
    usable = None
    stores = checkpoint is not None or ledger is not None
    if stores and not inputs.isEmpty():  # nothing to do: no checkpoint jobs
        wanted = inputs.select(key, FINGERPRINT_COLUMN)

        def answers(earlier: DataFrame) -> DataFrame:
            # A key's latest answer only, as the ledger: a later failure hides an earlier answer.
            found = _reusable(latest_per_key(earlier, key), retry_errors)
            if answered_since is not None:
                since = F.expr(f"timestamp_micros({answered_since})")
                found = found.where(F.col("answered_at") >= since)
            return found.join(wanted, [key, FINGERPRINT_COLUMN], "left_semi")

        # Read once: another run's fold may remove the files, so `reused` and `todo` both come
        # from this copy (two reads could disagree: a key reused and sent, or neither).
        with ledger(inputs, schema) if ledger is not None else contextlib.nullcontext() as also:
            usable = read_materialised(spark, checkpoint, key, schema, answers, also)
    todo = inputs
    reused = None
    if usable is not None:
        results_only = [c for c in RESULT_COLUMN_NAMES if c != FINGERPRINT_COLUMN]
        reused = inputs.drop(REQUEST_COLUMN, *FILE_COLUMNS).join(
            usable.select(key, FINGERPRINT_COLUMN, *results_only), [key, FINGERPRINT_COLUMN]
        )
        todo = inputs.join(
            usable.select(key, FINGERPRINT_COLUMN), on=[key, FINGERPRINT_COLUMN], how="left_anti"
        )
    tasks = max(1, min(tasks, remote.call.max_concurrency or tasks))
    rows = FILE_BATCH_ROWS if FILE_COLUMN in todo.columns else None  # a batch of files: few
    with (
        _budget_service(spark, remote, shared_budget, tasks) as address,
        arrow_batch_rows(spark, rows),
    ):
        run = _TaskRun(remote.per_task(tasks).with_budget(address), key, schema, checkpoint, run_id)
        out = todo.repartition(tasks, F.col(f"`{key}`")).mapInArrow(run, schema)
        if checkpoint is not None:
            checkpoint.mkdir(parents=True, exist_ok=True)
            task_stats = [row[STATS_COLUMN] for row in out.select(STATS_COLUMN).collect()]
            results = read_checkpoint(spark, checkpoint, run_id)
        else:
            out = out.localCheckpoint(eager=True)
            task_stats = [
                r[0]
                for r in out.where(F.col(STATS_COLUMN).isNotNull()).select(STATS_COLUMN).collect()
            ]
            results = out.where(F.col(STATS_COLUMN).isNull()).drop(STATS_COLUMN)
    stats, fatal = _combine([json.loads(s) for s in task_stats if s])
    if results is not None:
        results = one_per_key(results, key)
    if reused is not None:
        columns = [f.name for f in schema.fields if f.name != STATS_COLUMN]
        _count_reused(stats, reused)
        reused = reused.select(*[F.col(f"`{c}`") for c in columns])
        results = reused if results is None else results.select(*columns).unionByName(reused)
    if results is not None:
        results = variants_parsed(results, variant_columns)
    return DistributedAnswers(results, stats, fatal, run_id)


def _count_reused(stats: dict[str, Any], reused: DataFrame) -> None:
    """Rows answered from earlier runs' answers are rows of this run (as on the driver: rows
    = sent + reused), counted apart from those sent."""
    from pyspark.sql import functions as F

    found = reused.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(F.when(F.col("error").isNull(), 1)).alias("ok"),
    ).first()
    rows, ok = (int(found["rows"]), int(found["ok"])) if found is not None else (0, 0)
    stats["reused"] = rows
    stats["rows_seen"] += rows
    stats["ok"] += ok
    stats["errors"] += rows - ok
    if rows - ok:
        kinds = stats["errors_by_kind"]
        kinds["reused_error"] = kinds.get("reused_error", 0) + rows - ok
        stats["errors_by_kind"] = dict(sorted(kinds.items()))


@contextlib.contextmanager
def _budget_service(
    spark: SparkSession, remote: RemoteCall, enabled: bool, tasks: int
) -> Iterator[BudgetAddress | None]:
    """The driver's shared agent budget while the tasks run (None: tasks adapt alone)."""
    from agentbatch.agent.limiter import DEFAULT_CEILING
    from agentbatch.agent.shared_limits import BudgetService, driver_host

    if not enabled or remote.overrides.get(remote.call.endpoint) == "builtin:instant":
        yield None
        return
    cap = remote.call.max_concurrency or concurrency_ceiling(remote.call.files, DEFAULT_CEILING)
    # A concurrency the user asked for is where the total starts, as on one machine.
    initial = remote.call.max_concurrency or None
    host = driver_host(spark.conf.get("spark.driver.host", None))
    slots = min(tasks, session.default_parallelism(spark))  # no SparkContext on Spark Connect
    try:
        service = BudgetService(
            cap, host=host, tasks=tasks, slots=slots, **({"initial": initial} if initial else {})
        )
    except OSError as e:
        log.warning("no shared agent budget on %s (%s): each task adapts alone", host, e)
        yield None
        return
    with service:
        yield service.address
    log.info(
        "shared agent budget: peak limit %d at once, %d decreases",
        service.controller.peak,
        service.controller.decreases,
    )


def _reusable(earlier: DataFrame, retry_errors: bool) -> DataFrame:
    """Answers paid for by earlier runs that a row may take instead of a call."""
    from pyspark.sql import functions as F

    error = F.col("error")
    if retry_errors:
        return earlier.where(error.isNull())
    return earlier.where(error.isNull() | ~error.startswith(TRANSIENT_ERROR))


def output_schema(inputs: StructType, response_type: pa.DataType | None) -> StructType:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StringType, StructField, StructType

    passthrough = [
        StructField(f.name, f.dataType, True)
        for f in inputs.fields
        if f.name not in (REQUEST_COLUMN, FINGERPRINT_COLUMN, *FILE_COLUMNS)
    ]
    results = [
        StructField(f.name, from_arrow_type(f.type), True)
        for f in result_arrow_fields(response_type)
    ]
    return StructType([*passthrough, *results, StructField(STATS_COLUMN, StringType(), True)])


def one_per_key(results: DataFrame, key: str) -> DataFrame:
    """One row per key: an answer over an error, then the newest (a run's own results)."""
    from pyspark.sql import functions as F

    return first_per_key(results, key, F.col("error").isNull().desc(), F.col("answered_at").desc())


def _response_type(remote: RemoteCall) -> pa.DataType | None:
    return response_type(remote.call)


def response_type(call: CallSpec) -> pa.DataType | None:
    """The Arrow type of the `response` column of `call`'s answers (None: STRING)."""
    from agentbatch.agent.response_format import parse_response_format

    fmt = call.response_format
    return parse_response_format(fmt).arrow_type if fmt is not None else None


def _combine(task_stats: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    total: dict[str, Any] = {name: 0 for name in _SUMMED}
    by_kind: dict[str, int] = {}
    fatal = None
    for stats in task_stats:
        for name in _SUMMED:
            total[name] += int(stats.get(name) or 0)
        for kind, count in (stats.get("errors_by_kind") or {}).items():
            by_kind[kind] = by_kind.get(kind, 0) + int(count)
        fatal = fatal or stats.get("fatal")
    total["errors_by_kind"] = dict(sorted(by_kind.items()))
    total["tasks"] = len(task_stats)
    return total, fatal


class _TaskRun:
    """The function each task runs (pickled to the executors)."""

    def __init__(
        self, remote: RemoteCall, key: str, schema: StructType, checkpoint: Path | None, run_id: str
    ) -> None:
        self.remote = remote
        self.key = key
        self.schema = schema
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.run_id = run_id

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        from agentbatch.engines.spark.arrow import spark_to_arrow

        context = TaskContext.get()
        partition = context.partitionId() if context else 0
        attempt = context.attemptNumber() if context else 0
        arrow_schema = spark_to_arrow(self.schema)
        writer = (
            CheckpointWriter(Path(self.checkpoint), self.run_id, partition, attempt)
            if self.checkpoint
            else None
        )
        results: queue.Queue[Any] = queue.Queue(maxsize=_QUEUED_GROUPS)
        outcome: dict[str, Any] = {}

        def on_rows(table: pa.Table) -> None:
            if writer is not None:
                writer.write(table)
            else:
                results.put(table)

        def work() -> None:
            try:
                skip = writer.earlier_attempts(self.key) if writer is not None else (lambda b: b)
                outcome["stats"] = answer_batches(
                    batches, self.remote, self.key, on_rows, skip=skip
                ).as_dict()
            except AgentbatchError as err:  # the endpoint is unusable: report, keep what is done
                outcome["fatal"] = str(err)
            except BaseException as err:
                outcome["error"] = err
            finally:
                results.put(_END)

        thread = threading.Thread(target=work, name=f"agentbatch-task-{partition}", daemon=True)
        thread.start()
        while (item := results.get()) is not _END:
            yield _conform(item, arrow_schema)
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        stats = dict(outcome.get("stats") or {})
        if "fatal" in outcome:
            stats["fatal"] = outcome["fatal"]
        yield _stats_batch(arrow_schema, json.dumps(stats))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    """The task's output batch: `table`'s columns in the declared order and types."""
    import pyarrow as pa

    arrays = [
        table.column(f.name).cast(f.type).combine_chunks()
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _stats_batch(schema: pa.Schema, stats: str) -> pa.RecordBatch:
    import pyarrow as pa

    arrays = [
        pa.array([stats], f.type) if f.name == STATS_COLUMN else pa.nulls(1, f.type) for f in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class CheckpointWriter:
    """Appends completed rows to the checkpoint folder, one whole parquet file per group."""

    def __init__(self, folder: Path, run_id: str, partition: int, attempt: int) -> None:
        self.folder = folder
        self.prefix = f"part-{run_id}-p{partition:05d}-"
        self.attempt = attempt
        self.count = 0

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.prefix}a{self.attempt}-{self.count:06d}.parquet"
        temp = self.folder / f".tmp-{uuid.uuid4().hex}-{name}"
        pq.write_table(table, temp)
        os.replace(temp, self.folder / name)
        self.count += 1

    def earlier_attempts(self, key: str) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
        """A filter dropping the rows earlier attempts of this task already answered."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from agentbatch.agent.ledger import canonical_keys

        done: set[tuple[str, str | None]] = set()
        if self.attempt > 0 and self.folder.is_dir():
            for path in self.folder.glob(f"{self.prefix}a*.parquet"):
                table = pq.read_table(path, columns=[key, FINGERPRINT_COLUMN])
                done.update(
                    zip(
                        canonical_keys(table.column(key)),
                        table.column(FINGERPRINT_COLUMN).to_pylist(),
                        strict=True,
                    )
                )
        if not done:
            return lambda batch: batch

        def skip(batch: pa.RecordBatch) -> pa.RecordBatch:
            keys = canonical_keys(batch.column(key))
            fingerprints = batch.column(FINGERPRINT_COLUMN).to_pylist()
            keep = [(k, f) not in done for k, f in zip(keys, fingerprints, strict=True)]
            return batch.filter(pa.array(keep, type=pa.bool_()))

        return skip
