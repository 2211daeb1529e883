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
        text = response_format.strip()
        if not text.upper().startswith("STRUCT"):
            text = f"STRUCT<{text}>"  # `a STRING, b INT` is the STRUCT's field list
        return quoting.data_type(text)
    return json_schema_to_sql(bare_json_schema(response_format))


def bare_json_schema(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema itself from `{"type": "json_schema", "json_schema": {"schema": ...}}`."""
    if schema.get("type") == "json_schema":
        wrapper = schema.get("json_schema")
        inner = wrapper.get("schema") if isinstance(wrapper, Mapping) else None
        if isinstance(inner, Mapping):
            return inner
    return schema


def json_schema_to_sql(schema: Mapping[str, Any]) -> str:
    """A JSON schema object as a Databricks type; unknown or mixed types become STRING."""
    kind = schema.get("type")
    if isinstance(kind, list):  # ["integer", "null"]: nullable, as every SQL field is
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if len(non_null) == 1 else None
    if kind is None and "enum" in schema:
        kind = "string"
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
