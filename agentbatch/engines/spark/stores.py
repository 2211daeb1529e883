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
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agentbatch.agent.ledger import canonical_keys
from agentbatch.engines.spark.arrow import StagedBatches, arrow_batches, spark_to_arrow
from agentbatch.engines.spark.checkpoints import latest_per_key, read_materialised
from agentbatch.results import FINGERPRINT_COLUMN, RESULT_COLUMN_NAMES

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from agentbatch.agent.ledger import Ledger
    from agentbatch.engines.spark.spill import Spill

log = logging.getLogger(__name__)

# Keys looked up in one statement (SQLite's default limit of host parameters is 999).
_LOOKUP_CHUNK = 900
# Stored batches kept while looking keys up (neighbouring keys tend to share them).
_BLOB_CACHE = 4
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
    if ledger is None or not _answers_in(ledger):
        yield None
        return
    from pyspark.sql.types import StructType as Struct

    wanted = spark_to_arrow(Struct([schema[key], *(schema[name] for name in RESULT_COLUMN_NAMES)]))
    columns = (batch.column(0) for batch in arrow_batches(keys.select(f"`{key}`")))
    rows = _as_schema(_stored_answers(ledger, key, columns), wanted, ledger)
    staged = StagedBatches(spark, rows, wanted, on_local_disk=on_local_disk, spill=spill)
    with staged as df:
        yield df if staged.rows else None


def _answers_in(ledger: Path) -> bool:
    """Whether the ledger at `ledger` holds any answer (False when it cannot be read)."""
    if not ledger.is_file():
        return False
    try:
        with _reading(ledger) as conn:
            return conn.execute("SELECT 1 FROM answers LIMIT 1").fetchone() is not None
    except sqlite3.Error as err:
        log.warning("ledger %s cannot be read (%s): its answers are not reused here", ledger, err)
        return False


@contextlib.contextmanager
def _reading(ledger: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the ledger: no lock, nothing created or changed."""
    conn = sqlite3.connect(f"{ledger.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
    conn.text_factory = lambda data: data.decode("utf-8", "replace")
    try:
        yield conn
    finally:
        conn.close()


def _stored_answers(
    ledger: Path, key: str, keys: Iterable[pa.Array | pa.ChunkedArray]
) -> Iterator[pa.Table]:
    """The ledger's stored row of each key of `keys` that has an answer, a stored batch's rows at
    a time, each checked against its answer entry as the ledger checks it (damage is skipped)."""
    from agentbatch.agent.ledger import _from_ipc

    try:
        with _reading(ledger) as conn:
            conn.execute("BEGIN")  # one snapshot: a run on the driver may commit meanwhile
            blobs: dict[int, pa.Table | None] = {}
            for column in keys:
                wanted = canonical_keys(column)
                for start in range(0, len(wanted), _LOOKUP_CHUNK):
                    chunk = wanted[start : start + _LOOKUP_CHUNK]
                    found = conn.execute(
                        "SELECT batch_id, row, key, fingerprint, ok FROM answers "
                        f"WHERE key IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                    by_batch: dict[int, list[tuple[int, str, str, int]]] = {}
                    for batch_id, row, k, fingerprint, ok in found:
                        by_batch.setdefault(batch_id, []).append((row, k, fingerprint, ok))
                    for batch_id, entries in sorted(by_batch.items()):
                        if batch_id not in blobs:
                            if len(blobs) >= _BLOB_CACHE:
                                blobs.pop(next(iter(blobs)))
                            blob = conn.execute(
                                "SELECT ipc FROM batches WHERE id = ?", (batch_id,)
                            ).fetchone()
                            try:
                                blobs[batch_id] = _from_ipc(blob[0]) if blob else None
                            except Exception as err:  # damaged: its rows are paid again
                                log.warning(
                                    "ledger %s: batch %d unreadable (%s)", ledger, batch_id, err
                                )
                                blobs[batch_id] = None
                        stored = blobs[batch_id]
                        if stored is not None:
                            picked = _checked(stored, entries, key)
                            if picked is not None and picked.num_rows:
                                yield picked
    except sqlite3.Error as err:
        log.warning("ledger %s cannot be read (%s): its answers are not reused here", ledger, err)


def _checked(
    stored: pa.Table, entries: list[tuple[int, str, str, int]], key: str
) -> pa.Table | None:
    """The stored rows the answer entries point to, those that are what their entry says."""
    import pyarrow as pa

    inside = [e for e in entries if 0 <= e[0] < stored.num_rows]
    if not inside or key not in stored.column_names or "error" not in stored.column_names:
        return None
    picked = stored.take(pa.array([e[0] for e in inside], type=pa.int64()))
    fingerprints = (
        picked.column(FINGERPRINT_COLUMN).to_pylist()
        if FINGERPRINT_COLUMN in picked.column_names
        else [None] * picked.num_rows
    )
    same = [
        (k, fp or "", bool(ok)) == (kk, ff or "", good)
        for (_, k, fp, ok), kk, ff, good in zip(
            inside,
            canonical_keys(picked.column(key)),
            fingerprints,
            picked.column("error").is_null().to_pylist(),
            strict=True,
        )
    ]
    if not all(same):
        picked = picked.filter(pa.array(same, type=pa.bool_()))
    return picked


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
    folder: Path | None,
    keys: DataFrame,
    key: str,
    schema: StructType,
    ledger: Ledger,
) -> int:
    """Add to `ledger` the folder's latest answer for each key of `keys` that is newer than the
    ledger's answer for it (or the key has none there); how many were added. `schema`: the run's
    rows as the executors would answer them (the types a folder's file must have)."""
    if folder is None or not folder.is_dir() or next(folder.glob("part-*.parquet"), None) is None:
        return 0
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
            _append_as_shared(ledger, newer)
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

    from agentbatch.agent.ledger import _answered_us

    keys = canonical_keys(batch.column(key))
    held: dict[str, int] = {}
    with _reading(ledger.path) as conn:
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            held.update(
                conn.execute(
                    "SELECT key, answered_us FROM answers "
                    f"WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
            )
    answered = _answered_us(batch)
    keep = [
        k not in held or (at is not None and at > held[k])
        for k, at in zip(keys, answered, strict=True)
    ]
    return batch.filter(pa.array(keep, type=pa.bool_()))


def _append_as_shared(ledger: Ledger, rows: pa.RecordBatch) -> None:
    """Record `rows` in the ledger as answers of an earlier run: not this run's rows to write."""
    run = ledger.run_id
    ledger.run_id = f"{run}{SHARED_RUN_SUFFIX}"
    try:
        ledger.append(rows)
    finally:
        ledger.run_id = run
