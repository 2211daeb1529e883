"""`builtin:instant`: an in-process deterministic agent with no HTTP, for engine tests and
benchmarks. Vectorised over whole Arrow arrays (no per-row Python), so a pipeline using it measures
everything but the agent.

Text answers are `"echo: " + request[:64]`. With a response format, string fields get that echo,
integer and floating fields the request's length in characters, booleans whether it is even,
nested structs the same recursively, anything else NULL.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from agentbatch.agent.bodies import NULL_REQUEST
from agentbatch.agent.rows import check_input, count_reused, output_schema, passthrough_of
from agentbatch.results import (
    FINGERPRINT_COLUMN,
    PERMANENT_ERROR,
    REQUEST_COLUMN,
    result_arrow_fields,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.agent.ledger import Ledger
    from agentbatch.agent.progress import ProgressReporter
    from agentbatch.agent.response_format import ResponseFormat
    from agentbatch.agent.stats import BulkStats

ECHO_PREFIX = "echo: "
ECHO_CHARS = 64


def instant_answers(
    requests: pa.Array | pa.ChunkedArray, response_type: pa.DataType | None = None
) -> pa.Array:
    """The answers to `requests` (STRING), typed as `response_type` (STRING when None)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(requests, pa.ChunkedArray):
        requests = requests.combine_chunks()
    text = pc.binary_join_element_wise(
        pa.scalar(ECHO_PREFIX), pc.utf8_slice_codeunits(requests, 0, ECHO_CHARS), ""
    )
    if response_type is None or pa.types.is_string(response_type):
        return text
    return _typed(requests, text, response_type)


def _typed(requests: pa.Array, text: pa.Array, kind: pa.DataType) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_struct(kind):
        children = [_typed(requests, text, kind.field(i).type) for i in range(kind.num_fields)]
        return pa.StructArray.from_arrays(
            children,
            fields=[kind.field(i) for i in range(kind.num_fields)],
            mask=pc.is_null(requests),
        )
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return text.cast(kind)
    length = pc.utf8_length(requests)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return length.cast(kind)
    if pa.types.is_boolean(kind):
        return pc.equal(pc.bit_wise_and(length, 1), 0)
    return pa.nulls(len(requests), kind)


async def run_instant(
    batches: AsyncIterator[pa.RecordBatch],
    key: str,
    ledger: Ledger,
    fmt: ResponseFormat | None,
    retry_errors: bool,
    reuse: bool,
    stats: BulkStats,
    started: float,
    progress: ProgressReporter | None,
) -> None:
    """The bulk run for `builtin:instant`: one vectorised step and one ledger commit per batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    response_type = fmt.arrow_type if fmt is not None else None
    fields = result_arrow_fields(response_type)
    # Nothing answered before: no lookups (source keys are unique, checked before the run).
    lookup = reuse and getattr(ledger, "has_answers", True)  # stand-ins may lack it
    async for batch in batches:
        check_input(batch, key)
        stats.rows_seen += batch.num_rows
        todo = batch
        if lookup:
            reused, todo = ledger.reuse(batch, response_type, retry_errors=retry_errors)
            if reused is not None:
                count_reused(stats, reused, progress)
        n = todo.num_rows
        if n == 0:
            continue
        now = datetime.datetime.now(datetime.timezone.utc)
        requests = todo.column(REQUEST_COLUMN)
        missing = requests.null_count
        # A NULL request is a row error, as on the HTTP path (RequestError), never an answer.
        errors = (
            pc.if_else(
                pc.is_null(requests),
                pa.scalar(PERMANENT_ERROR + NULL_REQUEST),
                pa.scalar(None, pa.string()),
            )
            if missing
            else pa.nulls(n, pa.string())
        )
        values: dict[str, pa.Array] = {
            "response": instant_answers(requests, response_type),
            "error": errors,
            "http_status": pa.nulls(n, pa.int32()),
            "attempts": pa.array([1] * n, type=pa.int32()),
            "latency_ms": pa.array([0.0] * n, type=pa.float64()),
            "input_tokens": pa.nulls(n, pa.int64()),
            "output_tokens": pa.nulls(n, pa.int64()),
            "trace_id": pa.nulls(n, pa.string()),
            "custom_outputs": pa.nulls(n, pa.string()),
            "request_fingerprint": todo.column(FINGERPRINT_COLUMN).cast(pa.string()),
            "answered_at": pa.array([now] * n, type=pa.timestamp("us", tz="UTC")),
        }
        passthrough = passthrough_of(todo)
        arrays = list(passthrough.columns) + [values[f.name] for f in fields]
        schema = output_schema(passthrough.schema, response_type)
        ledger.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
        stats.sent += n - missing
        stats.requests += n - missing
        stats.ok += n - missing
        if missing:
            stats.errors += missing
            stats.errors_by_kind["request"] += missing
        stats.wall_s = time.monotonic() - started
        if progress is not None:
            progress.update(stats)
