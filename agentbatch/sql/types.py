"""Response types: a job's `response_format` as a Databricks SQL type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentbatch.sql import quoting

_JSON_TO_SQL = {"string": "STRING", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}


def response_type(response_format: str | Mapping[str, Any] | None) -> str:
    """`STRING`, or the STRUCT type the answer is parsed into."""
    if response_format is None:
        return "STRING"
    if isinstance(response_format, str):
        return quoting.data_type(response_format)
    return json_schema_to_sql(response_format)


def json_schema_to_sql(schema: Mapping[str, Any]) -> str:
    """A JSON schema object as a Databricks type; unknown or mixed types become STRING."""
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties") or {}
        if not isinstance(properties, Mapping) or not properties:
            return "STRING"
        fields = ", ".join(
            f"{quoting.identifier(str(name))}: {json_schema_to_sql(sub if isinstance(sub, Mapping) else {})}"
            for name, sub in properties.items()
        )
        return f"STRUCT<{fields}>"
    if kind == "array":
        items = schema.get("items")
        return f"ARRAY<{json_schema_to_sql(items if isinstance(items, Mapping) else {})}>"
    if isinstance(kind, str):
        return _JSON_TO_SQL.get(kind, "STRING")
    return "STRING"
