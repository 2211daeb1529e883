"""The spark target's two checkpoints of the REST fallback, read as one.

Runs on the driver (`rest_fallback_on: driver`) keep their answers in the job output's ledger
(agent/ledger.py, a SQLite file in the state folder); runs on the executors in the checkpoint
folder (checkpoints.py). A job whose `rest_fallback_on` changes holds answers in both, so
whichever side runs reads the other's answers for the keys it selects, and for each key the latest
answer by `answered_at` counts, as each store keeps one answer per key, the latest: a run never
writes an answer older than one either store holds for the request, and never pays again for one
either store can reuse. Neither decides what is written: the run's selection (what the target
does not hold) does.

- On the executors (`ledger_answers`): the ledger's answer for each selected key, read as a
  reader (no lock: the run on the driver holding it is not refused; one read transaction, a
  snapshot that run cannot tear), staged in Spark beside the folder's answers.
- On the driver (`share_with_ledger`): the folder's latest answer for each selected key, read by
  Spark (`read_materialised`: another run's fold may remove files meanwhile; nothing is written
  or locked there), streamed to the driver and added to the ledger where it is newer than the
  ledger's answer for the key. Under a run name of its own: the ledger's lookup then reuses it, or
  not, as any earlier answer, and only what this run reuses or receives is this run's rows.

Memory stays flat in rows: keys and answers cross in Arrow batches (`arrow_batches`,
`StagedBatches`), and a ledger's stored batch is read at a time. Answers that cannot be read as
this run's (a key of another type, damaged stored rows) are skipped with a warning: paid again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agentbatch.agent.ledger import (
    answered_at,
    answered_us,
    canonical_keys,
    holds_answers,
    stored_answers,
)
from agentbatch.engines.spark.arrow import StagedBatches, arrow_batches, spark_to_arrow
from agentbatch.engines.spark.checkpoints import latest_per_key, read_materialised
from agentbatch.results import RESULT_COLUMN_NAMES

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from agentbatch.agent.ledger import Ledger
    from agentbatch.engines.spark.spill import Spill

log = logging.getLogger(__name__)

# Appended to the run id of answers the ledger takes from the folder.
SHARED_RUN_SUFFIX = "-from-executors"


# --- on the executors: the ledger's answers beside the folder's ----------------------------------


@contextlib.contextmanager
def ledger_answers(
    spark: SparkSession,
    ledger: Path | None,
    keys: DataFrame,
    schema: StructType,
    *,
    key: str,
    on_local_disk: bool,
    spill: Spill | None,
) -> Iterator[DataFrame | None]:
    """The ledger's answer for each key of `keys` (the key and result columns, in `schema`'s
    types), as a DataFrame while the context is open; None when the ledger holds none."""
    if ledger is None or not holds_answers(ledger):
        yield None
        return
    from pyspark.sql.types import StructType as Struct

    wanted = spark_to_arrow(Struct([schema[key], *(schema[name] for name in RESULT_COLUMN_NAMES)]))
    columns = (batch.column(0) for batch in arrow_batches(keys.select(f"`{key}`")))
    rows = _as_schema(stored_answers(ledger, key, columns), wanted, ledger)
    staged = StagedBatches(spark, rows, wanted, on_local_disk=on_local_disk, spill=spill)
    with staged as df:
        yield df if staged.rows else None


def _as_schema(
    tables: Iterable[pa.Table], schema: pa.Schema, ledger: Path
) -> Iterator[pa.RecordBatch]:
    """`tables` in `schema` (the run's key and result columns); a table whose key has another type
    (the source's key changed type: '01' is not 1) or whose results do not cast is skipped."""
    import pyarrow as pa

    key = schema.field(0)
    warned = False
    for table in tables:
        columns = []
        try:
            if table.column(key.name).type != key.type:
                raise TypeError(f"key {key.name} is {table.column(key.name).type}, not {key.type}")
            for field in schema:
                if field.name in table.column_names:
                    columns.append(table.column(field.name).cast(field.type))
                else:
                    columns.append(pa.nulls(table.num_rows, field.type))
        except (TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            if not warned:
                log.warning(
                    "ledger %s holds answers that cannot be read as this run's rows (%s): not "
                    "reused, their rows are paid again",
                    ledger,
                    err,
                )
                warned = True
            continue
        yield from pa.Table.from_arrays(columns, schema=schema).combine_chunks().to_batches()


# --- on the driver: the folder's answers into the ledger ----------------------------------------


def share_with_ledger(
    spark: SparkSession,
    folder: Path,
    keys: DataFrame,
    key: str,
    schema: StructType,
    ledger: Ledger,
) -> int:
    """Add to `ledger` the latest answer in `folder` (which holds answers: the engine looks
    first, before any Spark job) for each key of `keys` that is newer than the
    ledger's answer for it (or the key has none there); how many were added. `schema`: the run's
    rows as the executors would answer them (the types a folder's file must have)."""
    selected = keys.select(f"`{key}`")

    def latest(earlier: DataFrame) -> DataFrame:
        return latest_per_key(earlier, key).join(selected, [key], "left_semi")

    found = read_materialised(spark, folder, key, schema, latest)
    if found is None:
        return 0
    shared = 0
    for batch in arrow_batches(found):
        newer = _newer_than_ledger(batch, key, ledger)
        if newer.num_rows:
            ledger.append(newer, run=f"{ledger.run_id}{SHARED_RUN_SUFFIX}")
            shared += newer.num_rows
    if shared:
        log.info(
            "%d answer(s) of runs on the executors (checkpoint %s) are newer than the ledger's: "
            "taken into %s",
            shared,
            folder,
            ledger.path,
        )
    return shared


def _newer_than_ledger(batch: pa.RecordBatch, key: str, ledger: Ledger) -> pa.RecordBatch:
    """The rows of `batch` answered after the ledger's answer for their key (or with none)."""
    import pyarrow as pa

    keys = canonical_keys(batch.column(key))
    held = answered_at(ledger.path, keys)
    keep = [
        k not in held or (at is not None and at > held[k])
        for k, at in zip(keys, answered_us(batch), strict=True)
    ]
    return batch.filter(pa.array(keep, type=pa.bool_()))
