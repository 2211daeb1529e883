"""Bulk-load result batches into a staging table on a SQL warehouse.

Two ways, both a handful of statements however many rows there are:

- `VolumeLoader` (the target sets `staging_volume`): each chunk becomes a Parquet file uploaded
  with the connector's staging `PUT` into a Unity Catalog volume, then one
  `INSERT ... SELECT ... FROM read_files(...)` loads them all and the files are removed.
- `JsonParameterLoader` (otherwise): each chunk travels as one native `STRING` parameter holding
  a JSON array, unpacked in SQL with `explode(from_json(:rows, '<ARRAY<STRUCT<...>>>'))`.
  from_json reads MAPs keyed by STRING only, so a MAP keyed otherwise (at any depth) is read
  keyed by STRING and its column CAST to its type; a column without one is not cast.
  A VARIANT column arrives from the warehouse as its JSON text in a Utf8 field whose metadata
  names it VARIANT; it travels as that text and `parse_json` makes it a VARIANT again (a staged
  STRING would reach a VARIANT target as a VARIANT *string*: MERGE casts, and a cast to VARIANT
  does not parse).
  A statement takes at most 255 native parameters, of at most 1 MB together (the connector's
  docs/parameters.md), so one parameter per chunk (not one per cell) keeps the insert bulk, and a
  chunk stays under 1 MB. A single row larger than that cannot be staged this way: it is left
  out and named (`too_large`), for the write to report once the other rows are in.

A column no staging can write back as it was (a VARIANT inside a STRUCT, ARRAY or MAP, a GEOMETRY
or GEOGRAPHY, an INTERVAL: text of undocumented form on the wire) is refused before any call, by its
`typeof` on the warehouse (`passthrough_refusal`, `column_types_sql`).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentbatch.engines.typed_text import marked_type
from agentbatch.errors import ConfigError, NotSupportedError
from agentbatch.sql import quoting

if TYPE_CHECKING:
    import pyarrow as pa

RunSql = Callable[[str, Mapping[str, Any] | None], None]
PutFile = Callable[[str, bytes], None]

# Top-level types that travel as JSON strings and are cast back in SQL.
_AS_TEXT = ("TIMESTAMP", "TIMESTAMP_NTZ", "DATE", "DECIMAL", "BINARY", "VARIANT")
_VOLUME = re.compile(r"^/Volumes/[\w-]+/[\w-]+/[\w-]+(/[\w.-]+)*$")


def databricks_type(t: pa.DataType, *, text_map_keys: bool = False) -> str:
    """The Databricks SQL type for an Arrow type. With `text_map_keys`, every MAP at any depth
    is keyed by STRING: the type `from_json` reads a staged value as. Databricks refuses any
    other key type in a from_json schema (DATATYPE_MISMATCH.INVALID_JSON_MAP_KEY_TYPE; Spark's
    ExprUtils.checkJsonSchema), so the keys travel as text and the column is CAST to its type
    (`_select_expression`)."""
    import pyarrow as pa

    def inner(element: pa.DataType) -> str:
        return databricks_type(element, text_map_keys=text_map_keys)

    simple = {
        pa.bool_(): "BOOLEAN",
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INT",
        pa.int64(): "BIGINT",
        pa.uint8(): "SMALLINT",
        pa.uint16(): "INT",
        pa.uint32(): "BIGINT",
        pa.uint64(): "DECIMAL(20,0)",
        pa.float16(): "FLOAT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.date32(): "DATE",
        pa.date64(): "DATE",
        pa.null(): "STRING",
    }
    if t in simple:
        return simple[t]
    if pa.types.is_dictionary(t):
        return inner(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_view(t, "is_string_view"):
        return "STRING"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or _is_view(t, "is_binary_view"):
        return "BINARY"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz else "TIMESTAMP_NTZ"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_map(t):
        key = databricks_type(t.key_type)
        if text_map_keys:
            if key == "BINARY" or key.startswith(("STRUCT", "ARRAY", "MAP")):
                raise NotSupportedError(
                    f"databricks-sql: cannot stage a MAP keyed by {key} through a statement "
                    "parameter; set the target's staging_volume"
                )
            key = "STRING"
        return f"MAP<{key}, {inner(t.item_type)}>"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"ARRAY<{inner(t.value_type)}>"
    if pa.types.is_struct(t):
        fields = ", ".join(f"{quoting.identifier(f.name)}: {inner(f.type)}" for f in t)
        return f"STRUCT<{fields}>"
    raise NotSupportedError(f"databricks-sql: cannot store Arrow type {t} in a table")


def column_type(field: pa.Field) -> str:
    """The Databricks SQL type for a column: VARIANT for the JSON text of a VARIANT. (GEOMETRY
    and GEOGRAPHY arrive as text too, in a format no public source states: a run refuses them
    before any call, `passthrough_refusal`.)"""
    if marked_type(field) == "VARIANT":
        return "VARIANT"
    return databricks_type(field.type)


# -- columns staging cannot write back -----------------------------------------------------------

# Types as `typeof` prints them (`struct<v:variant>`, `interval day`, `geometry(4326)`), found at any
# depth: after the start, a `<`, a field's `:` or a `,`.
_NESTED_VARIANT = re.compile(r"[<:,]variant(?=[>,])")
_SPATIAL = re.compile(r"(?:^|[<:,])(geometry|geography)(?=[(>,]|$)")
_INTERVAL = re.compile(r"(?:^|[<:,])interval(?=[ >,]|$)")


def passthrough_refusal(column: str, sql_type: str) -> str | None:
    """Why a source column of `sql_type` (as `typeof` prints it) cannot be staged and written
    back exactly, with the fix; None when it can. Each such type reaches the connector as text
    in a form no public source states (or in none staging reads back), and a guess would fail
    the write after every call was paid, or store something else."""
    text = sql_type.strip().lower()
    spatial = _SPATIAL.search(text)
    if spatial:
        kind = spatial.group(1).upper()
        why = f"a {kind} reaches the connector as text in a form Databricks does not document"
        example = f"st_asewkt({quoting.identifier(column)})"
    elif _INTERVAL.search(text):
        why = (
            "an INTERVAL reaches the connector as text (it asks for no Arrow intervals) in a "
            "form Databricks does not document"
        )
        example = f"CAST({quoting.identifier(column)} AS STRING)"
    elif _NESTED_VARIANT.search(text):
        why = (
            "a VARIANT inside a STRUCT, ARRAY or MAP has no documented form in the warehouse's "
            "results (only a top-level VARIANT arrives as its JSON text)"
        )
        example = f"to_json({quoting.identifier(column)})"
    else:
        return None
    return (
        f"column {column!r} is {text.upper()}: {why}, so the REST fallback cannot write it back "
        f"as it is. Select it converted in source.query (e.g. `{example} AS "
        f"{quoting.identifier(column)}`) or drop it from source.columns"
    )


def column_types_sql(inputs_sql: str, columns: Iterable[str]) -> str:
    """One row: `typeof` of each of `columns` of the query `inputs_sql`, as `c0`, `c1`, ...
    The query's rows are never read (LIMIT 0): typeof names a column's type, NULL or not."""
    types = ", ".join(
        f"typeof(`rows`.{quoting.identifier(name)}) AS `c{number}`"
        for number, name in enumerate(columns)
    )
    return (
        f"SELECT {types}\n"
        "FROM (SELECT 1 AS `one`) AS `one`\n"
        f"LEFT JOIN (SELECT * FROM ({inputs_sql}) AS `inputs` LIMIT 0) AS `rows` ON true"
    )


def create_table_sql(table: str, schema: pa.Schema) -> str:
    columns = ", ".join(f"{quoting.identifier(f.name)} {column_type(f)}" for f in schema)
    return f"CREATE OR REPLACE TABLE {table} ({columns})"


def column_list(schema: pa.Schema) -> str:
    return ", ".join(quoting.identifier(f.name) for f in schema)


def chunks(batches: Iterable[pa.RecordBatch], max_rows: int) -> Iterator[pa.Table]:
    """Regroup batches into tables of at most `max_rows` rows."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        start = 0
        while start < batch.num_rows:
            take = min(batch.num_rows - start, max_rows - rows)
            pending.append(batch.slice(start, take))
            rows += take
            start += take
            if rows == max_rows:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
    if rows:
        yield pa.Table.from_batches(pending)


# -- JSON in one parameter ---------------------------------------------------------------------


def _json_scalar(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _json_key(value: Any) -> str:
    """A MAP key as the JSON object key it travels as; CAST from STRING gives it back."""
    value = _json_scalar(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_converter(t: pa.DataType) -> Callable[[Any], Any] | None:
    """Turns a value of Arrow type `t` (as `to_pylist` gives it) into JSON's: a MAP (a list of
    key-value pairs, empty or not) becomes an object with string keys. None: as it is (text,
    numbers, booleans)."""
    import pyarrow as pa

    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
    ):
        return None
    if pa.types.is_dictionary(t):
        return _json_converter(t.value_type)
    if pa.types.is_map(t):
        item = _json_converter(t.item_type) or _same
        return lambda v: None if v is None else {_json_key(k): item(x) for k, x in v}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        element = _json_converter(t.value_type) or _same
        return lambda v: None if v is None else [element(x) for x in v]
    if pa.types.is_struct(t):
        fields = [(f.name, _json_converter(f.type) or _same) for f in t]
        return lambda v: None if v is None else {n: c(v.get(n)) for n, c in fields}
    return _json_scalar


def _same(value: Any) -> Any:
    return value


def _as_arrow_text(t: pa.DataType) -> bool:
    """Values Arrow writes as text the warehouse's CAST reads back exactly, faster than Python:
    dates, decimals, and timestamps in UTC or without a zone, to the microsecond (Arrow
    writes UTC with a `Z`)."""
    import pyarrow as pa

    if pa.types.is_timestamp(t):
        return bool(t.unit in ("s", "ms", "us") and t.tz in (None, "UTC", "Etc/UTC", "+00:00"))
    return bool(pa.types.is_date(t) or pa.types.is_decimal(t))


def _json_rows(chunk: pa.Table) -> list[dict[str, Any]]:
    """The rows of `chunk` as JSON-ready dicts, converted a column at a time."""
    import pyarrow as pa

    columns: list[list[Any]] = []
    for f, column in zip(chunk.schema, chunk.columns, strict=True):
        if _as_arrow_text(f.type):
            columns.append(column.cast(pa.string()).to_pylist())
            continue
        values = column.to_pylist()
        convert = _json_converter(f.type)
        columns.append(values if convert is None else [convert(v) for v in values])
    names = chunk.schema.names
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


# One encoder for every row (json.dumps with options builds a new one per call).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _payload_type(f: pa.Field) -> str:
    ddl = column_type(f)
    if ddl.split("(")[0] in _AS_TEXT:
        return "STRING"
    return databricks_type(f.type, text_map_keys=True)


def _select_expression(name: str, ddl: str, payload: str) -> str:
    """The column of type `ddl` from the field `from_json` read as `payload`."""
    field = f"`rows`.{quoting.identifier(name)}"
    if ddl == "BINARY":
        return f"unbase64({field})"
    if ddl == "VARIANT":  # JSON text the warehouse wrote; NULL stays NULL
        return f"parse_json({field})"
    if payload != ddl:  # a type in _AS_TEXT, or one with a MAP not keyed by STRING
        return f"CAST({field} AS {ddl})"
    return field


@dataclass(frozen=True)
class JsonParameterLoader:
    run: RunSql
    max_rows: int = 5_000
    # Under the 1 MB of parameter values a statement may carry (JSON text is ASCII: bytes).
    max_bytes: int = 900_000
    # The column that names a row in `too_large`.
    key: str | None = None
    # Rows over max_bytes on their own, not staged: "key (bytes)".
    too_large: list[str] = field(default_factory=list)

    def load(self, table: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> int:
        payload_types = [_payload_type(f) for f in schema]
        fields = ", ".join(
            f"{quoting.identifier(f.name)}: {payload}"
            for f, payload in zip(schema, payload_types, strict=True)
        )
        row_type = quoting.literal(f"ARRAY<STRUCT<{fields}>>")
        selected = ", ".join(
            _select_expression(f.name, column_type(f), payload)
            for f, payload in zip(schema, payload_types, strict=True)
        )
        sql = (
            f"INSERT INTO {table} ({column_list(schema)})\n"
            f"SELECT {selected}\n"
            f"FROM (SELECT explode(from_json(:rows, {row_type})) AS `rows`)"
        )
        written = 0
        for payload, rows in self._payloads(batches, schema):
            self.run(sql, {"rows": payload})
            written += rows
        return written

    def _payloads(
        self, batches: Iterable[pa.RecordBatch], schema: pa.Schema
    ) -> Iterator[tuple[str, int]]:
        """JSON arrays of at most `max_rows` rows and `max_bytes`; a row over `max_bytes` alone
        goes to `too_large` instead."""
        pending: list[str] = []
        size = 0
        for chunk in chunks(batches, self.max_rows):
            rows = _json_rows(chunk)
            for row, text in zip(rows, map(_encode_json, rows), strict=True):
                if len(text) + 2 > self.max_bytes:
                    name = repr(row.get(self.key)) if self.key else "a row"
                    self.too_large.append(f"{name} ({len(text):,} bytes)")
                    continue
                if pending and (len(pending) >= self.max_rows or size + len(text) > self.max_bytes):
                    yield "[" + ",".join(pending) + "]", len(pending)
                    pending, size = [], 0
                pending.append(text)
                size += len(text) + 1
        if pending:
            yield "[" + ",".join(pending) + "]", len(pending)


# -- Parquet files on a volume -----------------------------------------------------------------


def volume_path(setting: str) -> str:
    """`/Volumes/c/s/v[/dir]` or `c.s.v` -> `/Volumes/c/s/v[/dir]`, checked."""
    text = setting.strip().rstrip("/")
    if not text.startswith("/"):
        parts = text.split(".")
        text = "/Volumes/" + "/".join(parts) if len(parts) == 3 else text
    if not _VOLUME.match(text):
        raise ConfigError(
            f"databricks-sql: staging_volume {setting!r} is not a volume "
            "(use /Volumes/<catalog>/<schema>/<volume> or catalog.schema.volume)"
        )
    return text


def _writable(table: pa.Table) -> pa.Table:
    """Null-typed columns (all values missing) as strings, so Parquet readers agree on them."""
    import pyarrow as pa

    fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _read_back(schema: pa.Schema) -> str:
    """The staged columns from the Parquet files: a VARIANT's JSON text parsed (an INSERT does
    not take STRING into VARIANT: INCOMPATIBLE_DATA_FOR_TABLE.CANNOT_SAFELY_CAST)."""
    return ", ".join(
        f"parse_json({name}) AS {name}" if column_type(f) == "VARIANT" else name
        for f, name in ((f, quoting.identifier(f.name)) for f in schema)
    )


@dataclass(frozen=True)
class VolumeLoader:
    run: RunSql
    put: PutFile
    remove: Callable[[str], None]
    directory: str  # /Volumes/... folder for this write, removed afterwards
    max_rows: int = 100_000

    def load(self, table: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> int:
        import pyarrow.parquet as pq

        files: list[str] = []
        written = 0
        try:
            for number, chunk in enumerate(chunks(batches, self.max_rows)):
                buffer = io.BytesIO()
                pq.write_table(_writable(chunk), buffer)
                path = f"{self.directory}/part-{number:05d}.parquet"
                self.put(path, buffer.getvalue())
                files.append(path)
                written += chunk.num_rows
            if files:
                columns = column_list(schema)
                self.run(
                    f"INSERT INTO {table} ({columns})\n"
                    f"SELECT {_read_back(schema)}\n"
                    f"FROM read_files({quoting.literal(self.directory)}, format => 'parquet')",
                    None,
                )
        finally:
            for path in files:
                self.remove(path)
        return written


def _is_view(t: pa.DataType, check: str) -> bool:
    # String and binary views came in pyarrow 16; the floor is 14 (Databricks Runtime 14.3).
    import pyarrow as pa

    return bool(getattr(pa.types, check, lambda _: False)(t))
