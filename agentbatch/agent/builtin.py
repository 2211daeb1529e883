"""`builtin:instant`: an in-process deterministic agent with no HTTP, for engine tests and
benchmarks. Vectorised over whole Arrow arrays (no per-row Python), so a pipeline using it measures
everything but the agent.

Text answers are `"echo: " + request[:64]`. With a response format, string fields get that echo,
integer and floating fields the request's length in characters, booleans whether it is even,
nested structs the same recursively, anything else NULL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

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
