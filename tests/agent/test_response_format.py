"""Response formats: type strings (parsed by sqlglot) and JSON schemas -> Arrow + parser."""

from __future__ import annotations

import datetime
import decimal
import json
import re
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
    assert value["amount"] == decimal.Decimal("12.35")
    pa.array([value], type=fmt.arrow_type)


UTC = datetime.timezone.utc
TYPED = "STRUCT<d: DATE, t: TIMESTAMP, amount: DECIMAL(10,2), x: DOUBLE, n: INT>"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("d", "2024-03-01", datetime.date(2024, 3, 1)),
        ("d", "0001-01-01", datetime.date(1, 1, 1)),
        ("d", "2024-02-29", datetime.date(2024, 2, 29)),
        ("t", "2024-01-01T10:00:00Z", datetime.datetime(2024, 1, 1, 10, tzinfo=UTC)),
        # naive: UTC
        ("t", "2024-01-01T10:00:00", datetime.datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ("t", "2024-01-01 10:00:00.5", datetime.datetime(2024, 1, 1, 10, 0, 0, 500000, UTC)),
        ("t", "2024-01-01T10:00:00+05:30", datetime.datetime(2024, 1, 1, 4, 30, tzinfo=UTC)),
        ("t", "2024-01-01T23:00:00-18:00", datetime.datetime(2024, 1, 2, 17, tzinfo=UTC)),
        # beyond microseconds: dropped, not rounded (as Databricks reads it)
        ("t", "2024-01-01T10:00:00.1234569Z", datetime.datetime(2024, 1, 1, 10, 0, 0, 123456, UTC)),
        # half-up, as Databricks' cast rounds; a JSON number as its text
        ("amount", 1.005, decimal.Decimal("1.01")),
        ("amount", 0.125, decimal.Decimal("0.13")),
        ("amount", -1.005, decimal.Decimal("-1.01")),
        ("amount", "0.125", decimal.Decimal("0.13")),
        ("amount", " 2.5 ", decimal.Decimal("2.50")),
        ("amount", 1e-3, decimal.Decimal("0.00")),
        ("amount", 5e-3, decimal.Decimal("0.01")),
        ("amount", "1.005e0", decimal.Decimal("1.01")),
        ("amount", 12345678, decimal.Decimal("12345678.00")),
        ("amount", 99999999.994, decimal.Decimal("99999999.99")),
    ],
)
def test_typed_fields_read_the_iso_forms(field: str, value: Any, expected: Any) -> None:
    fmt = parse_response_format(TYPED)
    parsed = fmt.parse(json.dumps({field: value}))
    assert parsed[field] == expected
    if isinstance(expected, datetime.datetime):
        assert parsed[field].utcoffset() == datetime.timedelta(0)
    pa.array([parsed], type=fmt.arrow_type)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("d", "2024"),
        ("d", "2024-1-1"),
        ("d", "20240101"),
        ("d", "2024-01-01garbage"),
        ("d", "2024-01-01 garbage"),
        ("d", "2024-01-01T10:00:00Z"),
        ("d", " 2024-01-01"),
        ("d", "2024-01-01\n"),
        ("d", "+2024-01-01"),
        ("d", "2024-02-30"),
        ("d", "2023-02-29"),
        ("d", "0000-01-01"),
        ("d", "２０２４-01-01"),  # fullwidth digits
        ("d", 20240101),
        ("d", True),
        ("t", "10:00"),
        ("t", "2024-01-01"),
        ("t", "2024-01-01T10:00:00 UTC"),
        ("t", "2024-01-01T10:00Z"),
        ("t", "2024-01-01T10"),
        ("t", "2024-01-01T10:00:00+0530"),
        ("t", "2024-01-01T10:00:00+18:30"),
        ("t", "2024-01-01T10:00:00.Z"),
        ("t", "2024-01-01T10:00:00.1234567890Z"),
        ("t", "2024-01-01T24:00:00Z"),
        ("t", "2024-01-01T10:00:60Z"),
        ("t", "2024-01-01t10:00:00z"),
        ("t", "2024-01-01T10:00:00Z\n"),
        ("t", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
        ("t", 1704103200),
        ("amount", 99999999.995),
        ("amount", "+1.5"),
        ("amount", "1_000"),
        ("amount", "NaN"),
        ("amount", "Infinity"),
        ("amount", "1e999999999"),
        ("amount", "\u00a05"),
        ("amount", True),
        ("amount", [1]),
        ("x", "\u00a05"),
        ("n", "5\u2003"),
    ],
)
def test_typed_fields_refuse_anything_else(field: str, value: Any) -> None:
    fmt = parse_response_format(TYPED)
    sql_type = {f.name: f.sql_type for f in fmt.fields}[field]
    message = f"answer field {field} does not fit {sql_type}: "
    with pytest.raises(AnswerParseError, match=re.escape(message)):
        fmt.parse(json.dumps({field: value}))


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


def test_an_enum_below_the_top_level_fails_its_top_level_field() -> None:
    """Nested fields never go through push-down: their `enum` is checked on the REST fallback,
    as a value that does not fit the top-level field's type."""
    fmt = parse_response_format(
        {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
                "who": {"type": "object", "properties": {"role": {"enum": ["user", "admin"]}}},
            },
        }
    )
    assert fmt.parse('{"tags": ["a", "b"], "who": {"role": "admin"}}') == {
        "tags": ["a", "b"],
        "who": {"role": "admin"},
    }
    assert fmt.parse('{"tags": null, "who": {"role": null}}')["who"] == {"role": None}
    with pytest.raises(AnswerParseError, match="answer field tags does not fit ARRAY<STRING>"):
        fmt.parse('{"tags": ["a", "c"]}')
    with pytest.raises(AnswerParseError, match="answer field who does not fit STRUCT"):
        fmt.parse('{"who": {"role": "root"}}')


def test_an_enum_must_be_a_list() -> None:
    with pytest.raises(ResponseFormatError, match=r"\$\.team: enum must be a list"):
        parse_response_format(
            {"type": "object", "properties": {"team": {"type": "string", "enum": "billing"}}}
        )
