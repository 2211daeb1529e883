"""Output rows: the key and passthrough columns of the input (same Arrow types) followed by the
standard result columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentbatch.agent.content import FILE_COLUMNS
from agentbatch.results import (
    FINGERPRINT_COLUMN,
    PERMANENT_ERROR,
    REQUEST_COLUMN,
    TRANSIENT_ERROR,
    result_arrow_fields,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.agent.progress import ProgressReporter
    from agentbatch.agent.replies import RowFailure
    from agentbatch.agent.stats import BulkStats


def error_text(failure: RowFailure) -> str:
    """The `error` column: the kind (a transient failure is sent again by the next run), then
    the message."""
    return (TRANSIENT_ERROR if failure.retryable else PERMANENT_ERROR) + failure.message


def count_reused(
    stats: BulkStats, reused: pa.RecordBatch, progress: ProgressReporter | None
) -> None:
    """Rows written from answers paid for before: counted apart from the rows sent."""
    answered = reused.column("error").null_count  # no error: an answer
    failed = reused.num_rows - answered
    stats.reused += reused.num_rows
    stats.ok += answered
    stats.errors += failed
    if failed:
        stats.errors_by_kind["reused_error"] += failed
    if progress is not None:
        progress.update(stats)


def passthrough_of(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The input columns that go to the output unchanged (all but the request and fingerprint)."""
    dropped = (REQUEST_COLUMN, FINGERPRINT_COLUMN, *FILE_COLUMNS)
    keep = [n for n in batch.schema.names if n not in dropped]
    return batch.select(keep)


def check_input(batch: pa.RecordBatch, key: str) -> None:
    missing = [c for c in (key, REQUEST_COLUMN, FINGERPRINT_COLUMN) if c not in batch.schema.names]
    if missing:
        from agentbatch.errors import UsageError

        raise UsageError(
            f"input batches need the columns {key!r}, {REQUEST_COLUMN!r} and "
            f"{FINGERPRINT_COLUMN!r}; missing: {', '.join(missing)}"
        )


def output_schema(passthrough: pa.Schema, response_type: pa.DataType | None) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(list(passthrough) + result_arrow_fields(response_type))


@dataclass(slots=True)  # one per row: a frozen dataclass's __init__ costs 3x
class RowResult:
    """The outcome of one row, as it goes into the result columns."""

    response: Any
    error: str | None
    http_status: int | None
    attempts: int
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    trace_id: str | None
    custom_outputs: str | None
    fingerprint: str | None
    # Microseconds since the epoch (UTC): Arrow's timestamp without a datetime per row.
    answered_at_us: int


def result_columns(
    results: Sequence[RowResult], response_type: pa.DataType | None
) -> list[pa.Array]:
    """Arrow arrays of the result columns for `results`, in RESULT_COLUMNS order.

    A response that does not fit `response_type` (should not happen: answers are coerced when
    parsed) becomes a row error instead of failing the batch.
    """
    try:
        return _result_columns(results, response_type)
    except UnicodeEncodeError:
        # Text no UTF-8 can hold: UTF-16 surrogates, from an agent that speaks UTF-16 (an emoji
        # split over two stream deltas, JSON's "\ud83d" alone). Rare, so mended only when met.
        return _result_columns([_mended(r) for r in results], response_type)


def _mended(result: RowResult) -> RowResult:
    return RowResult(
        _mended_text(result.response),
        _mended_text(result.error),
        result.http_status,
        result.attempts,
        result.latency_ms,
        result.input_tokens,
        result.output_tokens,
        _mended_text(result.trace_id),
        _mended_text(result.custom_outputs),
        result.fingerprint,
        result.answered_at_us,
    )


def _mended_text(value: Any) -> Any:
    """`value` with each pair of surrogates made the character it encodes, and a lone one the
    replacement character U+FFFD (at any depth of a typed answer)."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_mended_text(k): _mended_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mended_text(v) for v in value]
    if isinstance(value, tuple):  # a MAP's (key, value) pairs
        return tuple(_mended_text(v) for v in value)
    return value


def _result_columns(
    results: Sequence[RowResult], response_type: pa.DataType | None
) -> list[pa.Array]:
    import pyarrow as pa

    fields = result_arrow_fields(response_type)
    types = {f.name: f.type for f in fields}
    responses = [r.response for r in results]
    errors = [r.error for r in results]
    try:
        response_array = pa.array(responses, type=types["response"])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        fixed = []
        for i, value in enumerate(responses):
            try:
                pa.array([value], type=types["response"])
                fixed.append(value)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                fixed.append(None)
                errors[i] = f"response does not fit {types['response']}: {e}"
        response_array = pa.array(fixed, type=types["response"])
    columns = {
        "response": response_array,
        "error": pa.array(errors, type=pa.string()),
        "http_status": pa.array([r.http_status for r in results], type=pa.int32()),
        "attempts": pa.array([r.attempts for r in results], type=pa.int32()),
        "latency_ms": pa.array([r.latency_ms for r in results], type=pa.float64()),
        "input_tokens": pa.array([r.input_tokens for r in results], type=pa.int64()),
        "output_tokens": pa.array([r.output_tokens for r in results], type=pa.int64()),
        "trace_id": pa.array([r.trace_id for r in results], type=pa.string()),
        "custom_outputs": pa.array([r.custom_outputs for r in results], type=pa.string()),
        "request_fingerprint": pa.array([r.fingerprint for r in results], type=pa.string()),
        "answered_at": pa.array([r.answered_at_us for r in results], type=types["answered_at"]),
    }
    return [columns[f.name] for f in fields]


def assemble(
    passthrough: pa.RecordBatch, results: Sequence[RowResult], response_type: pa.DataType | None
) -> pa.RecordBatch:
    """One output batch: `passthrough` rows (already taken in result order) + result columns."""
    import pyarrow as pa

    schema = output_schema(passthrough.schema, response_type)
    arrays = list(passthrough.columns) + result_columns(results, response_type)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
