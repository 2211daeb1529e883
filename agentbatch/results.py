"""The standard result columns every execution path writes (see docs/architecture.md).

Kept free of heavy imports: the Arrow schema is built on demand.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# (name, Databricks SQL type). `response` is STRING unless the job declares a response_format.
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("response", "STRING"),
    ("error", "STRING"),
    ("http_status", "INT"),
    ("attempts", "INT"),
    ("latency_ms", "DOUBLE"),
    ("input_tokens", "BIGINT"),
    ("output_tokens", "BIGINT"),
    ("trace_id", "STRING"),
    ("custom_outputs", "STRING"),
    ("request_fingerprint", "STRING"),
    ("answered_at", "TIMESTAMP"),
)
RESULT_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in RESULT_COLUMNS)

# Names the statements give their own columns beside the source's: a source key or passthrough
# column of one of these names would be ambiguous in them (`_raw_<n>`, `_value_<n>` too).
INTERNAL_COLUMN_NAMES = frozenset(
    {
        "_request",
        "_request_value",
        "_file",
        "_file_name",
        "_answer",
        "_failure",
        "_text",
        "_json",
        "_preview",
        "_keys",
        "_key",
        "_rank",
        "_pick",
        "_problem",
    }
)


def reserved_column(name: str) -> str | None:
    """Why a source column may not have this name (a result or internal column's), or None."""
    lowered = name.lower()
    if lowered in RESULT_COLUMN_NAMES:
        return f"{name!r} is a result column name"
    if lowered in INTERNAL_COLUMN_NAMES or re.fullmatch(r"_(raw|value)_\d+", lowered):
        return f"{name!r} is a name agentbatch's statements use for their own columns"
    return None


# The `error` column starts with the kind of failure. A transient one (retries exhausted on
# 408/429/5xx, a timeout, a connection error) is sent again by the next run; a permanent one (a 4xx,
# an agent error, an answer that does not parse or fit the response format) only with
# `--retry-errors`. Push-down reads the kind from `ai_query`'s message by the same rule
# (agentbatch.planning.failures).
TRANSIENT_ERROR = "[transient] "
PERMANENT_ERROR = "[permanent] "


def strip_error_kind(error: str | None) -> str | None:
    """The message of an `error` value without its kind prefix."""
    if error is None:
        return None
    for prefix in (TRANSIENT_ERROR, PERMANENT_ERROR):
        if error.startswith(prefix):
            return error[len(prefix) :]
    return error


# Columns the inputs select adds for the REST fallback, beside the key and passthrough columns.
REQUEST_COLUMN = "_request"
FINGERPRINT_COLUMN = "request_fingerprint"


def result_arrow_fields(response_type: pa.DataType | None = None) -> list[pa.Field]:
    """Arrow fields of the result columns; `response_type` overrides STRING for `response`."""
    import pyarrow as pa

    types: dict[str, pa.DataType] = {
        "response": response_type or pa.string(),
        "error": pa.string(),
        "http_status": pa.int32(),
        "attempts": pa.int32(),
        "latency_ms": pa.float64(),
        "input_tokens": pa.int64(),
        "output_tokens": pa.int64(),
        "trace_id": pa.string(),
        "custom_outputs": pa.string(),
        "request_fingerprint": pa.string(),
        "answered_at": pa.timestamp("us", tz="UTC"),
    }
    return [pa.field(name, types[name]) for name in RESULT_COLUMN_NAMES]
