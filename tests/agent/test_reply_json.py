"""A reply's JSON is read by msgspec when it can and by the standard library when it cannot, and
the two ways give the same answer: the value the standard library's `json.loads` gives (of the
same types: an integer beyond 64 bits stays an integer), or its ValueError.

Each case compares `responses.loads` with `standard_reading` below: what agentbatch used alone
before (`json.loads`, the UTF-8 read without its encoding detection, and a reply nested deeper
than the stack a ValueError)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentbatch.agent.responses import loads, parse_json_reply
from tests.support.profiled import functions_called

_PLAIN_UTF8_STARTS = frozenset(bytes([b]) for b in b'{["-0123456789tfn \t\r\n')


def standard_reading(data: bytes | str) -> Any:
    """How agentbatch read a reply before msgspec: the reference."""
    try:
        if isinstance(data, bytes) and data[:1] in _PLAIN_UTF8_STARTS and data[1:2] != b"\0":
            data = data.decode("utf-8")
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


REPLY = (
    b'{"id": "resp_1", "object": "response", "status": "completed", "output": [{"type": '
    b'"message", "role": "assistant", "content": [{"type": "output_text", "text": "an answer", '
    b'"annotations": []}]}], "usage": {"input_tokens": 4, "output_tokens": 5}}'
)


def _shape(value: Any) -> list[Any]:
    """`value` as a flat list of its parts with their types, in order (without recursion: some
    cases nest deep): 1, 1.0 and True differ, NaN equals NaN, -0.0 differs from 0.0."""
    out: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out.append(("dict", len(item)))
            for key, inner in reversed(list(item.items())):
                stack.extend((inner, key))
        elif isinstance(item, list):
            out.append(("list", len(item)))
            stack.extend(reversed(item))
        elif isinstance(item, float):
            out.append(("float", "nan" if math.isnan(item) else item.hex()))
        else:
            out.append((type(item).__name__, repr(item)))
    return out


def _read(parse: Any, data: bytes | str) -> Any:
    try:
        return ("value", _shape(parse(data)))
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError, too deep
        return ("refused", type(e).__name__)


def assert_read_alike(data: bytes | str) -> None:
    assert _read(loads, data) == _read(standard_reading, data), data
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return
        assert _read(loads, text) == _read(standard_reading, text), text


def standard_library_calls() -> functions_called:
    """The functions of the standard library's json package run meanwhile."""
    json_dir = json.__file__.rsplit("/", 1)[0]
    return functions_called(lambda code: code.co_filename.startswith(json_dir))


EDGE_CASES = [
    REPLY,
    # Integers beyond 64 bits, either sign, and at the limits: integers, never rounded to floats.
    b'{"id": 123456789012345678901234567890}',
    b'{"a": 18446744073709551615, "b": 18446744073709551616}',
    b'{"a": -9223372036854775808, "b": -9223372036854775809}',
    b"[" + b"9" * 400 + b"]",
    b'{"a": -0, "b": -0.0, "c": 1E5, "d": 1e-400, "e": 2.2250738585072011e-308}',
    b'{"a": 123456789012345678901234567890.5, "b": 0.1, "c": 1.7976931348623157e308}',
    # NaN and Infinity, and numbers beyond a float's range (Python agents' json.dumps writes them).
    b'{"score": NaN}',
    b'{"a": Infinity, "b": -Infinity}',
    b'{"a": 1e400, "b": -1e400, "c": 1e5000000000}',
    # Repeated keys: the last wins, in the first one's place.
    b'{"a": 1, "b": 2, "a": 3}',
    b'{"a": {"x": 1}, "a": [2]}',
    # Lone surrogates, escaped or encoded (the standard library reads both), and a pair.
    b'{"a": "\\ud800"}',
    b'{"a": "cut \\ud83d", "b": "\\ude00"}',
    b'{"\\ud83d\\ude00": "\\ud83d\\ude00"}',
    b'{"a": "\xed\xa0\x80"}',
    b'{"a": "\xf0\x9f\x98\x80 \xc3\xa9"}',
    # Invalid UTF-8, control characters, NUL.
    b'{"a": "\xff"}',
    b'{"a": "\xc3"}',
    b'{"a": "x\x01y"}',
    b'{"a": "x\ty"}',
    b'{"a": "\\u0000", "b": "\\/"}',
    # Byte order marks, UTF-16 and UTF-32 (json.loads detects them), whitespace.
    b'\xef\xbb\xbf{"a": 1}',
    '{"a": "é"}'.encode("utf-16"),
    '{"a": "é"}'.encode("utf-16-le"),
    '{"a": "é"}'.encode("utf-32"),
    b' \t\r\n{"a": 1} \n',
    b'\x0c{"a": 1}',
    b'{"a": 1}\x0b',
    b'\xc2\xa0{"a": 1}',
    # Not JSON, or more than one value.
    b"",
    b" ",
    b'{"a": 1} x',
    b'{"a": 1}{"b": 2}',
    b'{"a": 1,}',
    b"{'a': 1}",
    b'{"a": 01}',
    b'{"a": .5}',
    b'{"a": 1.}',
    b'{"a": +1}',
    b'{"a": 0x10}',
    b"{a: 1}",
    b"[1, 2",
    b'"text"',
    b"1",
    b"null",
    b"true",
    # Nested deep: past the stack the standard library refuses; msgspec is not asked.
    b"[" * 400 + b"]" * 400,
    b"[" * 600 + b"]" * 600,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": "' + b"x" * 5000 + b'", "b": ' + b"[" * 450 + b"]" * 450 + b"}",
    b'[{"a": ' * 300 + b"1" + b"}]" * 300,
]


@pytest.mark.parametrize("data", EDGE_CASES)
def test_an_edge_case_reads_as_the_standard_library_reads_it(data: bytes) -> None:
    assert_read_alike(data)


def test_text_the_standard_library_reads_apart_reads_the_same() -> None:
    # A str reply (a stream event's data): a BOM or a lone surrogate in the text itself.
    for text in ['\ufeff{"a": 1}', '{"a": "\ud800"}', '{"a": "\u00a0"}', '\u00a0{"a": 1}']:
        assert_read_alike(text)


LONG_REPLY = REPLY.replace(b"an answer", b"a long answer [with {brackets}] " * 200)


@pytest.mark.parametrize("reply", [REPLY, LONG_REPLY], ids=["short", "long"])
def test_a_common_reply_is_read_without_the_standard_library(reply: bytes) -> None:
    with standard_library_calls() as seen:
        payload = loads(reply)
    assert payload == json.loads(reply)
    assert seen == []


def test_what_msgspec_refuses_the_standard_library_reads() -> None:
    with standard_library_calls() as seen:
        payload = loads(b'{"score": NaN, "id": 1}')
    assert math.isnan(payload["score"]) and payload["id"] == 1
    assert "decode" in seen


def test_a_reply_with_a_big_integer_and_nan_keeps_both() -> None:
    reply = parse_json_reply(
        b'{"output": [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}],'
        b' "custom_outputs": {"id": 123456789012345678901234567890, "score": NaN}}'
    )
    assert not isinstance(reply, Exception) and hasattr(reply, "custom_outputs")
    assert reply.custom_outputs["id"] == 123456789012345678901234567890
    assert isinstance(reply.custom_outputs["id"], int)
    assert math.isnan(reply.custom_outputs["score"])


_PIECES = [
    b"{", b"}", b"[", b"]", b'"', b":", b",", b"a", b"0", b"1", b"9" * 21, b"-", b".", b"e",
    b"E", b"+", b" ", b"\t", b"\n", b"\r", b"\x0c", b"\\", b"\\u", b"d83d", b"de00", b"d800",
    b"/", b"true", b"false", b"null", b"NaN", b"Infinity", b"\xff", b"\xed\xa0\x80",
    b"\xc3\xa9", b"\x00", b"\x1f", b"\xef\xbb\xbf", b"\xc2\xa0", b'"a"', b'{"a":', b'"a":1,',
    b"[1,2]", b"1e400", b"0.1", b"-0",
]  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_bytes_near_json_read_as_the_standard_library_reads_them(pieces: list[bytes]) -> None:
    assert_read_alike(b"".join(pieces))


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),  # lone surrogates too: json.dumps escapes them
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None)
@given(_JSON_VALUES, st.booleans())
def test_what_agents_write_reads_as_the_standard_library_reads_it(
    value: Any, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert_read_alike(text.encode("utf-8", "surrogatepass"))
    assert_read_alike(text)
