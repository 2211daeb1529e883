"""Arrow in and out of Spark with flat driver memory.

Out: each partition encodes its rows as Arrow IPC streams of at most `batch_rows` rows (one binary
value per chunk), and the driver pulls them one partition at a time with `toLocalIterator`. Types
stay Arrow's own end to end (no Python objects per row, no time-zone guessing on timestamps).

In: result batches are staged as a parquet file written as they arrive (local sessions, where the
executors share the driver's disk), else handed to `createDataFrame`: in one piece while they fit
in `IN_MEMORY_ROWS` / `IN_MEMORY_BYTES`, beyond that appended chunk by chunk to a `spill.Spill` (a
table beside the output, or a folder beside file tables; removed when done), so the driver (and a Spark
Connect server, which keeps a created DataFrame's rows in its own memory) never holds every answer
of a long run at once.

VARIANT columns cross as their JSON text. Spark hands a VARIANT to Arrow as `struct<value: binary,
metadata: binary>` whose fields are declared non-nullable, so a NULL VARIANT failed a Parquet
checkpoint ("declared non-nullable but contains nulls"), and the struct was not cast back to
VARIANT when written ("cannot cast STRUCT<value: BINARY, metadata: BINARY> to VARIANT"). Out of
Spark a VARIANT column is its `to_json` text, marked VARIANT in the Arrow field's metadata as a
Databricks SQL warehouse marks it (`engines/typed_text.py`); back in, `parse_json` makes it a VARIANT again (a
NULL stays NULL, a JSON null stays a VARIANT null).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agentbatch.engines.typed_text import marked, marked_type
from agentbatch.sql.quoting import name_path

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from agentbatch.engines.spark.spill import Spill

_PAYLOAD = "agentbatch_arrow_ipc"
# Answers handed to Spark in one piece, at most; beyond either, they go through a spill.
IN_MEMORY_ROWS = 100_000
IN_MEMORY_BYTES = 128 * 1024 * 1024


def arrow_schema(df: DataFrame) -> pa.Schema:
    """The Arrow schema Spark gives `df`'s rows (timestamps in UTC)."""
    return spark_to_arrow(df.schema)


def spark_to_arrow(schema: StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    try:
        return to_arrow_schema(schema, timezone="UTC")
    except TypeError:  # pyspark < 4 takes no time zone
        return to_arrow_schema(schema)


def arrow_batches(df: DataFrame, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """The rows of `df` as Arrow record batches of at most `batch_rows` rows, in order."""
    import pyarrow as pa

    rows = max(1, int(batch_rows))
    df, names = variants_as_json_text(df)
    encoded = df.mapInArrow(_encoder(rows), f"{_PAYLOAD} binary")
    for row in encoded.toLocalIterator(prefetchPartitions=True):
        with pa.ipc.open_stream(pa.py_buffer(row[0])) as reader:
            for batch in reader:
                if names:
                    batch = batch.cast(marked(batch.schema, names, "VARIANT"))
                yield batch


def _encoder(rows: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        out_schema = pa.schema([pa.field(_PAYLOAD, pa.binary())])
        for batch in batches:
            for start in range(0, batch.num_rows, rows):
                chunk = batch.slice(start, rows)
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, chunk.schema) as writer:
                    writer.write_batch(chunk)
                payload = pa.array([sink.getvalue().to_pybytes()], type=pa.binary())
                yield pa.RecordBatch.from_arrays([payload], schema=out_schema)

    return encode


class StagedBatches:
    """Arrow batches as a Spark DataFrame, for as long as the context is open."""

    def __init__(
        self,
        spark: SparkSession,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        *,
        on_local_disk: bool,
        spill: Spill | None = None,
        in_memory_rows: int | None = None,
        in_memory_bytes: int | None = None,
    ) -> None:
        self._spark = spark
        self._batches = batches
        self._schema = schema
        self._on_local_disk = on_local_disk
        self._spill_to = spill
        self._in_memory_rows = IN_MEMORY_ROWS if in_memory_rows is None else in_memory_rows
        self._in_memory_bytes = IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
        self._folder: Path | None = None
        self._spilled = False
        self.rows = 0

    def __enter__(self) -> DataFrame:
        df = self._via_parquet() if self._on_local_disk else self._via_driver()
        return variants_parsed(df, _marked_names(self._schema))

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        if self._spilled and self._spill_to is not None:
            self._spill_to.remove()

    def _via_parquet(self) -> DataFrame:
        import pyarrow.parquet as pq

        self._folder = Path(tempfile.mkdtemp(prefix="agentbatch-staged-"))
        path = self._folder / "part-0.parquet"
        with pq.ParquetWriter(path, self._schema) as writer:
            for batch in self._batches:
                self.rows += batch.num_rows
                writer.write_batch(self._conformed(batch))
        return self._spark.read.parquet(str(path))

    def _via_driver(self) -> DataFrame:
        held: list[pa.RecordBatch] = []
        held_rows = held_bytes = 0
        for batch in self._batches:
            batch = self._conformed(batch)
            self.rows += batch.num_rows
            held.append(batch)
            held_rows += batch.num_rows
            held_bytes += batch.nbytes
            if held_rows >= self._in_memory_rows or held_bytes >= self._in_memory_bytes:
                self._spill(held)
                held, held_rows, held_bytes = [], 0, 0
        if not self._spilled:
            return self._data_frame(held)
        if held:
            self._spill(held)
        assert self._spill_to is not None
        return self._spill_to.read()

    def _spill(self, held: list[pa.RecordBatch]) -> None:
        if self._spill_to is None:
            raise ValueError("answers beyond the in-memory limit need somewhere to spill")
        if not self._spilled:
            self._spill_to.remove()  # this run's own: its name carries a random part
            self._spill_to.remove_leftovers()
            self._spilled = True
        self._spill_to.append(self._data_frame(held))

    def _data_frame(self, held: list[pa.RecordBatch]) -> DataFrame:
        import pyarrow as pa

        table = pa.Table.from_batches(held, schema=self._schema)
        try:
            return self._spark.createDataFrame(table)
        except TypeError:  # Spark < 4 takes pandas, not Arrow
            return self._spark.createDataFrame(table.to_pandas())

    def _conformed(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.cast(self._schema) if batch.schema != self._schema else batch


# -- VARIANT columns as JSON text ----------------------------------------------------------------


def variants_as_json_text(df: DataFrame) -> tuple[DataFrame, list[str]]:
    """`df` with each top-level VARIANT column as its JSON text, and those columns' names."""
    from pyspark.sql import functions as F

    try:
        from pyspark.sql.types import VariantType
    except ImportError:  # Spark before 4 has no VARIANT
        return df, []
    names = [f.name for f in df.schema.fields if isinstance(f.dataType, VariantType)]
    if not names:
        return df, names
    columns = [
        F.to_json(F.col(name_path(c))).alias(c) if c in names else F.col(name_path(c))
        for c in df.columns
    ]
    return df.select(*columns), names


def variants_parsed(df: DataFrame, names: Sequence[str]) -> DataFrame:
    """`df` with the JSON text columns `names` as VARIANT again."""
    from pyspark.sql import functions as F

    if not names:
        return df
    columns = [
        F.parse_json(F.col(name_path(c))).alias(c) if c in names else F.col(name_path(c))
        for c in df.columns
    ]
    return df.select(*columns)


def _marked_names(schema: pa.Schema) -> list[str]:
    """The columns of `schema` marked as a VARIANT's text."""
    return [f.name for f in schema if marked_type(f) == "VARIANT"]
