"""JSON as Databricks' `get_json_object` and `json_object_keys` read it, so that the REST fallback
and the push-down SQL take the same answers (docs/databricks-behaviour.md).

Spark parses these with Jackson's single quotes and unescaped control characters allowed, reads
the first value of the text and ignores what follows it, and `get_json_object` takes the first
of repeated keys. Anything else JSON forbids (unquoted keys, trailing commas, comments) is not
JSON here either.
"""

from __future__ import annotations

import json
from typing import Any


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        value.setdefault(key, item)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Jackson refuses NaN and Infinity by default


_DECODER = json.JSONDecoder(
    strict=False, object_pairs_hook=_first_key_wins, parse_constant=_no_constant
)


def loads(text: str) -> Any:
    """The first JSON value of `text` read as Spark reads it; ValueError when there is none."""
    start = len(text) - len(text.lstrip())
    try:
        return _DECODER.raw_decode(text, start)[0]
    except ValueError:
        if "'" not in text:
            raise
    return _DECODER.raw_decode(_double_quoted(text), start)[0]


def _double_quoted(text: str) -> str:
    """`text` with its single-quoted strings written as double-quoted ones (the escapes `\\'`
    and a bare `"` inside them rewritten), double-quoted strings left as they are."""
    out: list[str] = []
    quote = ""  # the quote of the string being read, or "" outside strings
    escaped = False
    for char in text:
        if not quote:
            if char in "'\"":
                quote = char
                out.append('"')
            else:
                out.append(char)
        elif escaped:
            escaped = False
            # `\'` is a quote in either kind of string (Jackson, with single quotes allowed).
            out.append("'" if char == "'" else "\\" + char)
        elif char == "\\":
            escaped = True
        elif char == quote:
            quote = ""
            out.append('"')
        elif char == '"':  # only inside a single-quoted string
            out.append('\\"')
        else:
            out.append(char)
    return "".join(out)
