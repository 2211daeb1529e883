"""Text columns that stand for another SQL type, named in the Arrow field's metadata.

A Databricks SQL warehouse sends a VARIANT (and GEOMETRY, GEOGRAPHY) as text in a Utf8 field whose
metadata names the type: `Spark:DataType:SqlName` over Thrift, `databricks.type_name` from the
Statement Execution API (databricks-sql-connector `backend/thrift_backend.py`
`_col_to_description`, `backend/kernel/type_mapping.py`). The spark engine marks the JSON text of
a VARIANT the same way, so both engines read the mark with one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

SQL_NAME = b"Spark:DataType:SqlName"
_SQL_NAME_KEYS = (SQL_NAME, b"databricks.type_name")


def marked_type(field: pa.Field) -> str | None:
    """The SQL type a text column's metadata names (VARIANT, GEOMETRY(4326), ...), upper case."""
    import pyarrow as pa

    if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
        return None
    metadata = field.metadata or {}
    for key in _SQL_NAME_KEYS:
        if key in metadata:
            return str(metadata[key].decode("utf-8", "replace")).strip().upper()
    return None


def marked(schema: pa.Schema, names: Sequence[str], sql_type: str) -> pa.Schema:
    """`schema` with the text columns `names` marked as text of `sql_type`."""
    import pyarrow as pa

    mark = {SQL_NAME: sql_type.encode()}
    return pa.schema([f.with_metadata(mark) if f.name in names else f for f in schema])
