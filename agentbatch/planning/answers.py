"""The push-down answer checks: `ai_query`'s text read into the declared type, in SQL.

The same rule as the REST fallback (`ResponseFormat.parse`, whose docstring lists the checks), with
the same messages, built only from functions Databricks SQL documents and that return NULL rather
than raise on bad input, so one odd row never fails the statement (ANSI mode):

- `json_object_keys(text)`: the keys of a JSON object; NULL for other JSON, invalid JSON or ''
- `get_json_object(text, '$.field')`: a value as text (objects and arrays as JSON); NULL when
  absent, JSON null, or the text is not JSON
- `try_cast`, `from_json` (PERMISSIVE: NULL for a value of another shape), `rlike`

Each field is read from its own text, so a bad field is named and never blanks the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agentbatch.agent.response_format import (
    DATE_PATTERN,
    INTEGER_PATTERN,
    NAIVE_TIMESTAMP_PATTERN,
    NOT_JSON,
    NOT_OBJECT,
    NUMBER_PATTERN,
    TIMESTAMP_PATTERN,
    DeclaredField,
    ResponseFormat,
    missing_message,
    no_fields_message,
    not_allowed_message,
    wrong_type_message,
)
from agentbatch.planning.failures import kind_sql
from agentbatch.sql import quoting
from agentbatch.sql.quoting import Sql, SqlValueError

# What `_strip_code_fence` removes on the REST side: a Markdown fence around the whole answer.
FENCE_PATTERN = r"(?s)^\s*```[a-zA-Z]*\s*\n(.*?)\n?\s*```\s*$"
PREVIEW_CHARS = 200
_PREFIX = "response_format: "
_INTEGERS = {"TINYINT", "SMALLINT", "INT", "BIGINT"}
_FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_DIGITS = r"^\s*(-?[0-9]+)"

TEXT = Sql("`_text`")  # the answer text column
JSON = Sql("`_json`")  # the text without a code fence
KEYS = Sql("`_keys`")
PREVIEW = Sql("`_preview`")


@dataclass(frozen=True)
class AnswerField:
    name: Sql  # the field name as a string literal
    raw: Sql  # its value as text
    raw_alias: Sql
    value: Sql  # the typed value, read from `raw_alias`
    value_alias: Sql


@dataclass(frozen=True)
class AnswerChecks:
    """SQL fragments for `_answers.sql`."""

    json: Sql  # `_json` from `_text`
    keys: Sql  # `_keys` from `_json`
    preview: Sql  # `_preview` from `_text`: what every message ends with
    fields: tuple[AnswerField, ...]
    problem: Sql  # the first failed check's message, or NULL
    response: Sql  # the typed struct


def plain_field_name(name: str) -> bool:
    """Whether push-down can read the field by JSON path (`$.name`)."""
    return re.match(_FIELD_NAME, name) is not None


def answer_checks(fmt: ResponseFormat) -> AnswerChecks:
    fields: list[AnswerField] = []
    for number, declared in enumerate(fmt.fields):
        if not plain_field_name(declared.name):
            raise SqlValueError(
                f"response_format field {declared.name!r}: push-down reads fields by JSON path, "
                "so their names must be letters, digits and underscores"
            )
        raw_alias = quoting.identifier(f"_raw_{number}")
        fields.append(
            AnswerField(
                name=quoting.literal(declared.name),
                raw=Sql(f"get_json_object({JSON}, {quoting.literal('$.' + declared.name)})"),
                raw_alias=raw_alias,
                value=_typed(raw_alias, declared.sql_type),
                value_alias=quoting.identifier(f"_value_{number}"),
            )
        )
    names = ", ".join(f.name for f in fields)
    whens = [
        (
            f"{KEYS} IS NULL AND get_json_object({JSON}, '$') IS NULL AND trim({JSON}) <> 'null'",
            NOT_JSON,
        ),
        (f"{KEYS} IS NULL", NOT_OBJECT),
        (
            f"NOT arrays_overlap({KEYS}, array({names}))",
            no_fields_message([d.name for d in fmt.fields]),
        ),
    ]
    for declared, field in zip(fmt.fields, fields, strict=True):
        if declared.required:
            whens.append(
                (f"NOT array_contains({KEYS}, {field.name})", missing_message(declared.name))
            )
    for declared, field in zip(fmt.fields, fields, strict=True):
        whens.append(
            (
                f"{field.raw_alias} IS NOT NULL AND {field.value_alias} IS NULL",
                wrong_type_message(declared.name, declared.sql_type),
            )
        )
    for declared, field in zip(fmt.fields, fields, strict=True):
        if declared.allowed:
            whens.append(
                (
                    f"{field.value_alias} IS NOT NULL AND NOT {_among(field, declared)}",
                    not_allowed_message(declared.name, declared.allowed),
                )
            )
    cases = " ".join(
        f"WHEN {condition} THEN concat({quoting.literal(_PREFIX + message)}, {PREVIEW})"
        for condition, message in whens
    )
    struct = ", ".join(f"{f.name}, {f.value_alias}" for f in fields)
    return AnswerChecks(
        json=Sql(
            f"coalesce(nullif(regexp_extract({TEXT}, {quoting.literal(FENCE_PATTERN)}, 1), ''), "
            f"{TEXT})"
        ),
        keys=Sql(f"json_object_keys({JSON})"),
        preview=Sql(
            f"CASE WHEN char_length({TEXT}) <= {PREVIEW_CHARS} THEN {TEXT} "
            f"ELSE concat(substr({TEXT}, 1, {PREVIEW_CHARS}), '…') END"
        ),
        fields=tuple(fields),
        problem=Sql(f"CASE WHEN {TEXT} IS NULL THEN NULL {cases} END"),
        response=Sql(f"named_struct({struct})"),
    )


def _among(field: AnswerField, declared: DeclaredField) -> str:
    """SQL: the field's typed value is one of its `enum` values. Only values of the field's own
    kind are listed (a STRING compared with a number would be cast; a BOOLEAN with a number
    refused), as the REST fallback compares them."""
    kind = declared.sql_type.split("(")[0].strip().upper()
    values: list[Any] = []
    for value in declared.allowed:
        if isinstance(value, bool):
            fits = kind == "BOOLEAN"
        elif isinstance(value, (int, float)):
            fits = kind in _INTEGERS or kind in {"DOUBLE", "FLOAT", "DECIMAL"}
        else:
            fits = isinstance(value, str) and kind == "STRING"
        if fits:
            values.append(value)
    if not values:
        return "FALSE"
    return f"{field.value_alias} IN ({', '.join(quoting.literal(v) for v in values)})"


def error_sql(failure: Sql, problem: Sql | None) -> Sql:
    """The `error` column: ai_query's message or the first failed check, with its kind. The
    kind is read from `failure` alone (`failures.kind_sql`): a failed check is permanent."""
    reason = f"coalesce({failure}, {problem})" if problem is not None else failure
    return Sql(f"concat({kind_sql(failure)}, {reason})")


def _typed(raw: Sql, sql_type: str) -> Sql:
    """A field's text read as `sql_type`, NULL when it does not fit (as `_coerce_*` refuse it)."""
    kind = sql_type.split("(")[0].split("<")[0].strip().upper()
    if kind in ("STRING", "VARCHAR", "CHAR"):
        return raw
    if kind in _INTEGERS:
        digits = f"regexp_extract({raw}, {quoting.literal(_DIGITS)}, 1)"
        return Sql(
            f"CASE WHEN {raw} RLIKE {quoting.literal(INTEGER_PATTERN)} "
            f"THEN try_cast({digits} AS {sql_type}) END"
        )
    if kind in ("FLOAT", "DOUBLE", "DECIMAL"):
        return Sql(
            f"CASE WHEN {raw} RLIKE {quoting.literal(NUMBER_PATTERN)} "
            f"THEN try_cast({raw} AS {sql_type}) END"
        )
    if kind == "BOOLEAN":
        return Sql(f"CASE {raw} WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END")
    if kind == "DATE":
        # Only `YYYY-MM-DD`: Databricks' cast also reads `2024`, `2024-1-1`, `2024-01-01 text`.
        return Sql(f"CASE WHEN {raw} RLIKE {_whole(DATE_PATTERN)} THEN try_cast({raw} AS DATE) END")
    if kind in ("TIMESTAMP", "TIMESTAMP_LTZ"):
        # Only ISO 8601 (the cast also reads `10:00` as today, zone names, ...); a naive one is
        # read as UTC, not in the session's time zone.
        return Sql(
            f"try_cast(CASE WHEN {raw} RLIKE {_whole(NAIVE_TIMESTAMP_PATTERN)} "
            f"THEN concat({raw}, 'Z') WHEN {raw} RLIKE {_whole(TIMESTAMP_PATTERN)} THEN {raw} END "
            f"AS {sql_type})"
        )
    # STRUCT, ARRAY, MAP: parsed from the field's JSON text. A plan never pushes such a field
    # down (builder.nested_answer_fields): from_json fills a part that does not fit with NULL.
    return Sql(f"from_json({raw}, {quoting.literal(sql_type)})")


def _whole(pattern: str) -> Sql:
    """`pattern` matching a whole text in RLIKE: `\\z`, as Java's `$` also matches before a final
    line break (RE2's does not; both know `\\z`)."""
    return quoting.literal(rf"^(?:{pattern})\z")
