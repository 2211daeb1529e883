# mypy: disable-error-code="no-untyped-call"
# (the Thrift classes generated into the connector carry no type hints)
"""Results as a SQL warehouse sends them: Arrow IPC bytes inside Thrift `TRowSet`s.

The connector reads `arrowSchema` (an IPC schema message) followed by the `arrowBatches` (IPC
record-batch messages, LZ4-frame compressed when it said it can decompress them) as one IPC
stream, and builds `cursor.description` from the Hive-style `TTableSchema`. Arrow types the
warehouse never sends (views, large offsets, unsigned ints, dictionaries, ...) are normalised
first.

A VARIANT column travels as its JSON text in a Utf8 field whose metadata names it VARIANT
(`SQL_NAME`), as Databricks sends it: the connector reads that into `cursor.description`
(databricks-sql-connector `backend/thrift_backend.py` `_col_to_description`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import lz4.frame
import pyarrow as pa
from databricks.sql.thrift_api.TCLIService import ttypes

SQL_NAME = b"Spark:DataType:SqlName"

_UNSIGNED = {
    pa.uint8(): pa.int16(),
    pa.uint16(): pa.int32(),
    pa.uint32(): pa.int64(),
    pa.uint64(): pa.decimal128(20, 0),
}


def warehouse_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type a Databricks warehouse would send for a value of type `t`."""
    if pa.types.is_dictionary(t):
        return warehouse_type(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t):
        return pa.string()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or _is_binary_view(t):
        return pa.binary()
    if pa.types.is_fixed_size_binary(t):
        return pa.binary()
    if t in _UNSIGNED:
        return _UNSIGNED[t]
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_date(t):
        return pa.date32()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", t.tz)
    if pa.types.is_decimal(t):
        return pa.decimal128(t.precision, t.scale) if t.precision <= 38 else pa.string()
    if pa.types.is_map(t):
        return pa.map_(warehouse_type(t.key_type), warehouse_type(t.item_type))
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or _is_view(t, "is_list_view")
        or _is_view(t, "is_large_list_view")
        or pa.types.is_fixed_size_list(t)
    ):
        return pa.list_(warehouse_type(t.value_type))
    if pa.types.is_struct(t):
        fields = [t.field(i) for i in range(t.num_fields)]  # StructType.fields: pyarrow 17
        return pa.struct([f.with_type(warehouse_type(f.type)) for f in fields])
    if (
        pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_null(t)
    ):
        return t
    # TIME, INTERVAL, UUID and other extension types travel as strings.
    return pa.string()


def _to_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return column.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.chunked_array(
            [pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())]
        )


def with_sql_names(table: pa.Table, names: Mapping[str, str]) -> pa.Table:
    """`table` with the text columns in `names` marked as the SQL type named there (VARIANT)."""
    fields = [
        f.with_metadata({SQL_NAME: names[f.name].encode()}) if f.name in names else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def normalize_table(table: pa.Table) -> pa.Table:
    """Cast `table` to the types a warehouse sends, dropping schema metadata (a text column's
    `SQL_NAME` stays)."""
    columns = []
    fields = []
    for field, column in zip(table.schema, table.columns, strict=True):
        target = warehouse_type(field.type)
        if target != field.type:
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            column = _to_strings(column) if target == pa.string() else column.cast(target)
        columns.append(column)
        kept = {SQL_NAME: field.metadata[SQL_NAME]} if SQL_NAME in (field.metadata or {}) else None
        fields.append(pa.field(field.name, target, nullable=True, metadata=kept))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields)).combine_chunks()


def _type_id(t: pa.DataType) -> int:
    ids = ttypes.TTypeId
    if pa.types.is_boolean(t):
        return ids.BOOLEAN_TYPE
    if pa.types.is_int8(t):
        return ids.TINYINT_TYPE
    if pa.types.is_int16(t):
        return ids.SMALLINT_TYPE
    if pa.types.is_int32(t):
        return ids.INT_TYPE
    if pa.types.is_int64(t):
        return ids.BIGINT_TYPE
    if pa.types.is_float32(t):
        return ids.FLOAT_TYPE
    if pa.types.is_float64(t):
        return ids.DOUBLE_TYPE
    if pa.types.is_string(t):
        return ids.STRING_TYPE
    if pa.types.is_binary(t):
        return ids.BINARY_TYPE
    if pa.types.is_date32(t):
        return ids.DATE_TYPE
    if pa.types.is_timestamp(t):
        return ids.TIMESTAMP_TYPE
    if pa.types.is_decimal(t):
        return ids.DECIMAL_TYPE
    if pa.types.is_map(t):
        return ids.MAP_TYPE
    if pa.types.is_list(t):
        return ids.ARRAY_TYPE
    if pa.types.is_struct(t):
        return ids.STRUCT_TYPE
    if pa.types.is_null(t):
        return ids.NULL_TYPE
    raise TypeError(f"no warehouse column type for Arrow type {t}")


def _column_desc(field: pa.Field, position: int) -> ttypes.TColumnDesc:
    qualifiers = None
    if pa.types.is_decimal(field.type):
        qualifiers = ttypes.TTypeQualifiers(
            qualifiers={
                "precision": ttypes.TTypeQualifierValue(i32Value=field.type.precision),
                "scale": ttypes.TTypeQualifierValue(i32Value=field.type.scale),
            }
        )
    entry = ttypes.TTypeEntry(
        primitiveEntry=ttypes.TPrimitiveTypeEntry(
            type=_type_id(field.type), typeQualifiers=qualifiers
        )
    )
    return ttypes.TColumnDesc(
        columnName=field.name, typeDesc=ttypes.TTypeDesc(types=[entry]), position=position
    )


def table_schema(schema: pa.Schema) -> ttypes.TTableSchema:
    return ttypes.TTableSchema(
        columns=[_column_desc(field, i + 1) for i, field in enumerate(schema)]
    )


def schema_bytes(schema: pa.Schema) -> bytes:
    return bytes(schema.serialize().to_pybytes())


@dataclass(frozen=True)
class Chunk:
    row_set: ttypes.TRowSet
    next_offset: int


def row_set(
    table: pa.Table,
    offset: int,
    *,
    max_rows: int,
    max_bytes: int,
    batch_rows: int,
    lz4_compressed: bool,
) -> Chunk:
    """The rows from `offset` that fit in one fetch, as Arrow batches inside a `TRowSet`."""
    remaining = max(table.num_rows - offset, 0)
    take = min(remaining, max_rows if max_rows > 0 else remaining)
    if take and max_bytes > 0 and table.num_rows:
        bytes_per_row = max(table.nbytes // table.num_rows, 1)
        take = max(1, min(take, max_bytes // bytes_per_row))
    batches = []
    for start in range(offset, offset + take, max(batch_rows, 1)):
        length = min(batch_rows, offset + take - start)
        for batch in table.slice(start, length).to_batches():
            payload = bytes(batch.serialize().to_pybytes())
            if lz4_compressed:
                payload = lz4.frame.compress(payload)
            batches.append(ttypes.TSparkArrowBatch(batch=payload, rowCount=batch.num_rows))
    return Chunk(
        row_set=ttypes.TRowSet(startRowOffset=offset, rows=[], arrowBatches=batches),
        next_offset=offset + take,
    )


def _is_view(t: pa.DataType, check: str) -> bool:
    # View types came in pyarrow 16; the floor is 14 (Databricks Runtime 14.3).
    return bool(getattr(pa.types, check, lambda _: False)(t))


def _is_string_view(t: pa.DataType) -> bool:
    return _is_view(t, "is_string_view")


def _is_binary_view(t: pa.DataType) -> bool:
    return _is_view(t, "is_binary_view")
