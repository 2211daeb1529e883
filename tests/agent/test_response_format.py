"""Response formats: type strings (parsed by sqlglot) and JSON schemas -> Arrow + parser."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pyarrow as pa
import pytest

from agentbatch.agent.response_format import (
    AnswerParseError,
    ResponseFormatError,
    parse_response_format,
)


@pytest.mark.parametrize(
    ("spec", "arrow"),
    [
        (
            "STRUCT<label: STRING, urgency: INT>",
            pa.struct([("label", pa.string()), ("urgency", pa.int32())]),
        ),
        (
            "label STRING, urgency BIGINT",
            pa.struct([("label", pa.string()), ("urgency", pa.int64())]),
        ),
        (
            "STRUCT<tags: ARRAY<STRING>, score: DOUBLE, ok: BOOLEAN, d: DATE>",
            pa.struct(
                [
                    ("tags", pa.list_(pa.string())),
                    ("score", pa.float64()),
                    ("ok", pa.bool_()),
                    ("d", pa.date32()),
                ]
            ),
        ),
        (
            "STRUCT<inner: STRUCT<a: SMALLINT>, m: MAP<STRING, INT>, amount: DECIMAL(6,2)>",
            pa.struct(
                [
                    ("inner", pa.struct([("a", pa.int16())])),
                    ("m", pa.map_(pa.string(), pa.int32())),
                    ("amount", pa.decimal128(6, 2)),
                ]
            ),
        ),
        (
            {
                "type": "object",
                "properties": {"label": {"type": "string"}, "n": {"type": "integer"}},
            },
            pa.struct([("label", pa.string()), ("n", pa.int64())]),
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "triage",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "labels": {"type": "array", "items": {"type": "string"}},
                            "p": {"type": ["number", "null"]},
                            "kind": {"enum": ["a", "b"]},
                        },
                    },
                },
            },
            pa.struct(
                [("labels", pa.list_(pa.string())), ("p", pa.float64()), ("kind", pa.string())]
            ),
        ),
    ],
)
def test_arrow_types(spec: Any, arrow: pa.DataType) -> None:
    assert parse_response_format(spec).arrow_type == arrow


def test_request_schema_is_strict_json_schema() -> None:
    fmt = parse_response_format("STRUCT<label: STRING, urgency: INT, tags: ARRAY<STRING>>")
    assert fmt.json_schema == {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "urgency": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["label", "urgency", "tags"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"label": "bug", "urgency": 3}', {"label": "bug", "urgency": 3}),
        ('```json\n{"label": "bug", "urgency": 3.0}\n```', {"label": "bug", "urgency": 3}),
        ('{"label": "bug"}', {"label": "bug", "urgency": None}),
        ('{"label": "bug", "urgency": "4", "extra": 1}', {"label": "bug", "urgency": 4}),
    ],
)
def test_answers_parse_into_the_struct(text: str, expected: dict[str, Any]) -> None:
    fmt = parse_response_format("STRUCT<label: STRING, urgency: INT>")
    value = fmt.parse(text)
    assert value == expected
    pa.array([value], type=fmt.arrow_type)  # fits the Arrow type


def test_rich_types_coerce() -> None:
    fmt = parse_response_format(
        "STRUCT<d: DATE, t: TIMESTAMP, amount: DECIMAL(6,2), m: MAP<STRING, INT>>"
    )
    value = fmt.parse(
        '{"d": "2025-01-31", "t": "2025-01-31T10:00:00Z", "amount": 12.345, "m": {"a": 1}}'
    )
    assert value["d"] == datetime.date(2025, 1, 31)
    assert value["t"] == datetime.datetime(2025, 1, 31, 10, tzinfo=datetime.timezone.utc)
    assert value["amount"] == decimal.Decimal("12.35") or value["amount"] == decimal.Decimal(
        "12.34"
    )
    pa.array([value], type=fmt.arrow_type)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json at all", "not valid JSON"),
        ('["a"]', "object"),
        ('{"label": 1, "urgency": "high"}', "answer field urgency does not fit INT: "),
        ('{"label": "x", "urgency": 99999999999}', "answer field urgency does not fit INT: "),
        ('{"label": "x", "urgency": true}', "answer field urgency does not fit INT: "),
        ('{"label": "x", "urgency": 3.5}', "answer field urgency does not fit INT: "),
        ('{"answer": "fine"}', r"answer has none of the declared fields \(label, urgency\): "),
        ("{}", r"answer has none of the declared fields \(label, urgency\): "),
        ("null", "answer is not a JSON object: "),
        ('"bug"', "answer is not a JSON object: "),
        ('{"label": "bug"', "answer is not valid JSON: "),
    ],
)
def test_bad_answers_are_parse_errors_with_the_raw_text(text: str, message: str) -> None:
    fmt = parse_response_format("STRUCT<label: STRING, urgency: INT>")
    with pytest.raises(AnswerParseError, match=message) as info:
        fmt.parse(text)
    assert text[:20] in str(info.value)


def test_raw_text_in_parse_errors_is_truncated() -> None:
    fmt = parse_response_format("STRUCT<label: STRING>")
    with pytest.raises(AnswerParseError) as info:
        fmt.parse("x" * 10_000)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "STRUCT<label STRING",
        "STRING",
        "STRUCT<a: INTERVAL DAY>",
        "STRUCT<m: MAP<INT, STRING>>",
        {"type": "array"},
        {"type": "json_schema", "json_schema": {}},
        42,
    ],
)
def test_bad_formats_are_spec_errors(spec: Any) -> None:
    with pytest.raises(ResponseFormatError):
        parse_response_format(spec)


def test_strictness() -> None:
    assert parse_response_format("a STRING").responses_text_param()["format"]["strict"] is True
    bare = parse_response_format({"type": "object", "properties": {"a": {"type": "string"}}})
    assert bare.chat_response_format()["json_schema"]["strict"] is False
    wrapped = parse_response_format(
        {
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "strict": True,
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            },
        }
    )
    assert wrapped.responses_text_param()["format"] == {
        "type": "json_schema",
        "name": "x",
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        "strict": True,
    }


def test_wrong_shape_answers_are_row_errors_not_nulls() -> None:
    """An agent answering another shape must not be stored as a struct of NULLs (issue 20)."""
    fmt = parse_response_format("STRUCT<sentiment: STRING>")
    with pytest.raises(AnswerParseError) as info:
        fmt.parse('{"answer": "great product"}')
    assert str(info.value) == (
        'answer has none of the declared fields (sentiment): {"answer": "great product"}'
    )


def test_a_json_schema_requires_what_it_lists_and_lets_the_rest_be_null() -> None:
    fmt = parse_response_format(
        {
            "type": "object",
            "properties": {"label": {"type": "string"}, "score": {"type": ["integer", "null"]}},
            "required": ["label"],
        }
    )
    assert fmt.parse('{"label": "a"}') == {"label": "a", "score": None}
    with pytest.raises(AnswerParseError, match=r"^answer lacks the required field label: "):
        fmt.parse('{"score": 3}')
    with pytest.raises(AnswerParseError, match=r"^answer field score does not fit BIGINT: "):
        fmt.parse('{"label": "a", "score": "many"}')


def test_previews_cut_at_200_characters_with_an_ellipsis() -> None:
    fmt = parse_response_format("STRUCT<label: STRING>")
    text = "é" * 250
    with pytest.raises(AnswerParseError) as info:
        fmt.parse(text)
    assert str(info.value) == "answer is not valid JSON: " + "é" * 200 + "…"
