"""Shared helpers for the agent tests: input batches shaped like the inputs SQL produces."""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from agentbatch.agent.calls import CallSpec, call_fingerprint, row_fingerprint
from agentbatch.results import result_arrow_fields


def input_batches(
    spec: CallSpec,
    requests: Sequence[str],
    *,
    keys: Sequence[Any] | None = None,
    batch_rows: int = 500,
    extra: dict[str, Sequence[Any]] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Input rows: `id`, a passthrough `team`, `_request` and `request_fingerprint`."""
    call_fp = call_fingerprint(spec)
    ids = list(keys) if keys is not None else list(range(len(requests)))
    for start in range(0, len(requests), batch_rows):
        chunk = slice(start, start + batch_rows)
        texts = list(requests[chunk])
        columns: dict[str, pa.Array] = {
            "id": pa.array(ids[chunk]),
            "team": pa.array([f"team-{i % 3}" for i in range(start, start + len(texts))]),
        }
        for name, values in (extra or {}).items():
            columns[name] = pa.array(list(values[chunk]))
        columns["_request"] = pa.array(texts, type=pa.string())
        columns["request_fingerprint"] = pa.array([row_fingerprint(call_fp, t) for t in texts])
        yield pa.RecordBatch.from_pydict(columns)


def output_rows(
    keys: Sequence[Any], *, errors: Sequence[str | None] | None = None, fingerprint: str = "fp"
) -> pa.RecordBatch:
    """Output rows as the runner appends them to the ledger."""
    n = len(keys)
    errs = list(errors) if errors is not None else [None] * n
    now = datetime.datetime.now(datetime.timezone.utc)
    values: dict[str, list[Any]] = {
        "response": [None if e else f"answer {k}" for k, e in zip(keys, errs, strict=True)],
        "error": errs,
        "http_status": [200] * n,
        "attempts": [1] * n,
        "latency_ms": [1.0] * n,
        "input_tokens": [None] * n,
        "output_tokens": [None] * n,
        "trace_id": [None] * n,
        "custom_outputs": [None] * n,
        "request_fingerprint": [fingerprint] * n,
        "answered_at": [now] * n,
    }
    arrays = [pa.array(list(keys))] + [
        pa.array(values[f.name], type=f.type) for f in result_arrow_fields()
    ]
    names = ["id"] + [f.name for f in result_arrow_fields()]
    return pa.RecordBatch.from_arrays(arrays, names=names)
