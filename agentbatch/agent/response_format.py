"""Typed answers: a response format (Databricks type string or JSON schema) becomes an Arrow type,
a JSON schema for the request, and a parser that turns the agent's answer text into a value of that
type.

Type strings are parsed with sqlglot's Databricks dialect, never by hand.

The answer checks are one rule for every path: the REST fallback runs `ResponseFormat.parse`, and
the push-down SQL (`agentbatch.planning.answers`) renders the same checks, in the same order, with the
same messages (the constants below):

1. the answer (a Markdown code fence removed) is not JSON, read as Databricks reads it
   (`agentbatch.agent.lenient_json`) -> `NOT_JSON`;
2. it is JSON but not an object -> `NOT_OBJECT`;
3. it has none of the declared top-level fields -> `no_fields_message`;
4. it lacks a field the format requires (a JSON schema's `required`; the fields of a type string
   are nullable, so an absent one is NULL) -> `missing_message`;
5. a top-level field's value does not fit its declared type -> `wrong_type_message`;
6. a top-level field's value is not one of its JSON schema's `enum` -> `not_allowed_message`
   (a NULL value is not checked; an `enum` below the top level is checked on the REST fallback
   only, where it fails its top-level field as 5: push-down never reads nested fields).

Each message ends with a preview of the answer: its first 200 characters, then `…`.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentbatch.agent import lenient_json
from agentbatch.sql.types import json_schema_to_sql

if TYPE_CHECKING:
    import pyarrow as pa

_PREVIEW_CHARS = 200
_INT_RANGES = {8: (-(2**7), 2**7 - 1), 16: (-(2**15), 2**15 - 1), 32: (-(2**31), 2**31 - 1)}
_INT_RANGES[64] = (-(2**63), 2**63 - 1)
# The texts a typed field accepts, shared with the push-down SQL, which guards its casts with them
# (`RLIKE`: Java's regular expressions on Databricks, RE2 on the DuckDB loopback). Written so that
# the three engines read them alike: `[0-9]` (not `\d`), ASCII `\s` (`re.ASCII` here, Java's
# default), and no `$` in the date and time ones (Java's matches before a final newline; the SQL
# anchors them with `\z`, Python matches them whole).
# Integer and number texts accepted in place of JSON numbers.
INTEGER_PATTERN = r"^\s*-?[0-9]+(\.0+)?\s*$"
NUMBER_PATTERN = r"^\s*-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
# DATE: `YYYY-MM-DD` (RFC 3339 full-date, years 0001-9999), nothing before or after it.
DATE_PATTERN = (
    r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
)
# TIMESTAMP: that date, `T` or a space, `HH:MM:SS`, an optional fraction (up to 9 digits, read to
# the microsecond, the rest dropped as Databricks drops it), then `Z`, an offset `+HH:MM` within
# Databricks' +-18:00, or nothing: a naive timestamp is UTC, whatever the session's time zone.
NAIVE_TIMESTAMP_PATTERN = (
    DATE_PATTERN + r"[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
)
TIMESTAMP_PATTERN = NAIVE_TIMESTAMP_PATTERN + r"(Z|[-+]((0[0-9]|1[0-7]):[0-5][0-9]|18:00))?"
_INTEGER_TEXT = re.compile(INTEGER_PATTERN, re.ASCII)
_NUMBER_TEXT = re.compile(NUMBER_PATTERN, re.ASCII)
_DATE_TEXT = re.compile(DATE_PATTERN, re.ASCII)
_TIMESTAMP_TEXT = re.compile(TIMESTAMP_PATTERN, re.ASCII)
_UTC = datetime.timezone.utc


class ResponseFormatError(ValueError):
    """The declared response format itself is invalid (a spec problem, not a row problem)."""


class AnswerParseError(ValueError):
    """An answer does not match the declared response format (a row error)."""


# The row-error messages shared with the push-down SQL; each is followed by the answer's preview.
NOT_JSON = "answer is not valid JSON: "
NOT_OBJECT = "answer is not a JSON object: "


def no_fields_message(names: Sequence[str]) -> str:
    return f"answer has none of the declared fields ({', '.join(names)}): "


def missing_message(name: str) -> str:
    return f"answer lacks the required field {name}: "


def wrong_type_message(name: str, sql_type: str) -> str:
    return f"answer field {name} does not fit {sql_type}: "


def not_allowed_message(name: str, allowed: Sequence[Any]) -> str:
    shown = ", ".join(json.dumps(value, ensure_ascii=False) for value in allowed)
    if len(shown) > 120:
        shown = shown[:120] + "…"
    return f"answer field {name} is not one of {shown}: "


@dataclass(frozen=True)
class DeclaredField:
    """A top-level field of the response format."""

    name: str
    sql_type: str  # the Databricks type the field is read as, printed by sqlglot
    required: bool  # the answer must carry the key (a JSON schema's `required`)
    allowed: tuple[Any, ...] = ()  # a JSON schema's `enum` (none: any value of the type)


Coerce = Callable[[Any, str], Any]


@dataclass(frozen=True)
class ResponseFormat:
    arrow_type: pa.DataType
    # The bare JSON schema of the answer object.
    json_schema: Mapping[str, Any]
    name: str
    _coerce: Coerce
    # Ask the model to follow the schema exactly. True for type strings (their schemas are built
    # strict-compatible); a JSON schema keeps the `strict` its wrapper declares (default False).
    strict: bool = True
    fields: tuple[DeclaredField, ...] = ()

    def parse(self, text: str) -> dict[str, Any]:
        """Parse an answer into a dict matching `arrow_type`; raise AnswerParseError if it cannot.

        The checks and messages are the module docstring's, shared with the push-down SQL."""
        try:
            value = lenient_json.loads(_strip_code_fence(text))
        except (ValueError, RecursionError):
            raise AnswerParseError(NOT_JSON + _preview(text)) from None
        if not isinstance(value, dict):
            raise AnswerParseError(NOT_OBJECT + _preview(text))
        if not any(f.name in value for f in self.fields):
            raise AnswerParseError(
                no_fields_message([f.name for f in self.fields]) + _preview(text)
            )
        for declared in self.fields:
            if declared.required and declared.name not in value:
                raise AnswerParseError(missing_message(declared.name) + _preview(text))
        coercers = getattr(self._coerce, "fields", {})
        result: dict[str, Any] = {}
        for declared in self.fields:
            try:
                result[declared.name] = coercers[declared.name](
                    value.get(declared.name), f"$.{declared.name}"
                )
            except AnswerParseError:
                message = wrong_type_message(declared.name, declared.sql_type)
                raise AnswerParseError(message + _preview(text)) from None
        for declared in self.fields:
            found = result[declared.name]
            if declared.allowed and found is not None and not _among(found, declared.allowed):
                message = not_allowed_message(declared.name, declared.allowed)
                raise AnswerParseError(message + _preview(text))
        return result

    def responses_text_param(self) -> dict[str, Any]:
        """The Responses API `text` parameter asking for this format."""
        return {
            "format": {
                "type": "json_schema",
                "name": self.name,
                "schema": dict(self.json_schema),
                "strict": self.strict,
            }
        }

    def chat_response_format(self) -> dict[str, Any]:
        """The Chat Completions `response_format` parameter asking for this format."""
        return {
            "type": "json_schema",
            "json_schema": {
                "name": self.name,
                "schema": dict(self.json_schema),
                "strict": self.strict,
            },
        }


def _preview(text: str) -> str:
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "…"


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def _strip_code_fence(text: str) -> str:
    # Models asked for JSON sometimes wrap it in a Markdown fence.
    match = _FENCE.match(text)
    return match.group(1) if match else text


def parse_response_format(spec: str | Mapping[str, Any]) -> ResponseFormat:
    """Build a ResponseFormat from a type string (`STRUCT<a: STRING>` or `a STRING, b INT`) or a
    JSON schema (bare, or wrapped as `{"type": "json_schema", "json_schema": {"schema": ...}}`)."""
    if isinstance(spec, str):
        return _from_type_string(spec)
    if isinstance(spec, Mapping):
        return _from_json_schema(spec)
    raise ResponseFormatError(
        f"response_format must be a type string or a JSON schema, not {type(spec).__name__}"
    )


# --- Databricks type strings -------------------------------------------------------------------


def _from_type_string(text: str) -> ResponseFormat:
    from sqlglot import exp
    from sqlglot.errors import ParseError

    source = text.strip()
    if not source:
        raise ResponseFormatError("response_format is empty")
    # sqlglot forgives a missing closing bracket; a type string with one is still a typo.
    if source.count("<") != source.count(">"):
        raise ResponseFormatError(f"response_format {text!r} has unbalanced angle brackets")
    if not source.upper().startswith("STRUCT"):
        source = f"STRUCT<{source}>"
    try:
        dtype = exp.DataType.build(source, dialect="databricks")
    except (ParseError, TypeError, ValueError) as e:  # TypeError: sqlglot compiled
        raise ResponseFormatError(f"response_format {text!r} is not a Databricks type: {e}") from e
    if dtype.this != exp.DataType.Type.STRUCT or not dtype.expressions:
        raise ResponseFormatError(f"response_format {text!r} must be a STRUCT with fields")
    arrow_type, schema, coerce = _sql_type(dtype, text)
    fields = tuple(
        DeclaredField(column.name, column.args["kind"].sql("databricks"), required=False)
        for column in dtype.expressions
    )
    return ResponseFormat(arrow_type, schema, "response", coerce, fields=fields)


def _sql_type(dtype: Any, origin: str) -> tuple[pa.DataType, dict[str, Any], Coerce]:
    import pyarrow as pa
    from sqlglot import exp

    t = exp.DataType.Type
    kind = dtype.this
    if kind == t.STRUCT:
        fields: list[pa.Field] = []
        props: dict[str, Any] = {}
        coercers: dict[str, Coerce] = {}
        for column in dtype.expressions:
            name = column.name
            child = column.args.get("kind") if isinstance(column, exp.ColumnDef) else None
            if not name or not isinstance(child, exp.DataType):
                raise ResponseFormatError(
                    f"response_format {origin!r}: every field needs a name and a type"
                )
            if name in coercers:
                raise ResponseFormatError(f"response_format {origin!r}: duplicate field {name!r}")
            child_type, child_schema, child_coerce = _sql_type(child, origin)
            fields.append(pa.field(name, child_type))
            props[name] = child_schema
            coercers[name] = child_coerce
        schema = {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }
        return pa.struct(fields), schema, _struct_coercer(coercers)
    if kind == t.ARRAY:
        item_type, item_schema, item_coerce = _sql_type(dtype.expressions[0], origin)
        return (
            pa.list_(item_type),
            {"type": "array", "items": item_schema},
            _list_coercer(item_coerce),
        )
    if kind == t.MAP:
        key_type, _, _ = _sql_type(dtype.expressions[0], origin)
        value_type, value_schema, value_coerce = _sql_type(dtype.expressions[1], origin)
        if not pa.types.is_string(key_type):
            raise ResponseFormatError(f"response_format {origin!r}: MAP keys must be STRING")
        schema = {"type": "object", "additionalProperties": value_schema}
        return pa.map_(key_type, value_type), schema, _map_coercer(value_coerce)
    scalar = _SCALARS.get(kind.name)
    if scalar is not None:
        return scalar()
    if kind == t.DECIMAL:
        params = [int(p.this.this) for p in dtype.expressions] or [10, 0]
        precision, scale = ([*params, 0])[:2]
        coerce = _decimal_coercer(precision, scale)
        return pa.decimal128(precision, scale), {"type": "number"}, coerce
    raise ResponseFormatError(
        f"response_format {origin!r}: type {dtype.sql('databricks')} is not supported"
    )


def _string() -> tuple[pa.DataType, dict[str, Any], Coerce]:
    import pyarrow as pa

    return pa.string(), {"type": "string"}, _coerce_string


def _int(bits: int) -> Callable[[], tuple[pa.DataType, dict[str, Any], Coerce]]:
    def build() -> tuple[pa.DataType, dict[str, Any], Coerce]:
        import pyarrow as pa

        arrow = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}[bits]
        return arrow, {"type": "integer"}, _int_coercer(bits)

    return build


def _float(bits: int) -> Callable[[], tuple[pa.DataType, dict[str, Any], Coerce]]:
    def build() -> tuple[pa.DataType, dict[str, Any], Coerce]:
        import pyarrow as pa

        return (pa.float32() if bits == 32 else pa.float64()), {"type": "number"}, _coerce_float

    return build


def _bool() -> tuple[pa.DataType, dict[str, Any], Coerce]:
    import pyarrow as pa

    return pa.bool_(), {"type": "boolean"}, _coerce_bool


def _date() -> tuple[pa.DataType, dict[str, Any], Coerce]:
    import pyarrow as pa

    return pa.date32(), {"type": "string", "format": "date"}, _coerce_date


def _timestamp() -> tuple[pa.DataType, dict[str, Any], Coerce]:
    import pyarrow as pa

    return (
        pa.timestamp("us", tz="UTC"),
        {"type": "string", "format": "date-time"},
        _coerce_timestamp,
    )


_SCALARS: dict[str, Callable[[], tuple[pa.DataType, dict[str, Any], Coerce]]] = {
    "TEXT": _string,
    "VARCHAR": _string,
    "CHAR": _string,
    "TINYINT": _int(8),
    "SMALLINT": _int(16),
    "INT": _int(32),
    "BIGINT": _int(64),
    "FLOAT": _float(32),
    "DOUBLE": _float(64),
    "BOOLEAN": _bool,
    "DATE": _date,
    "TIMESTAMP": _timestamp,
    "TIMESTAMPLTZ": _timestamp,
    "TIMESTAMPTZ": _timestamp,
}


# --- JSON schemas ------------------------------------------------------------------------------


def _from_json_schema(spec: Mapping[str, Any]) -> ResponseFormat:
    name = "response"
    strict = False
    schema: Any = spec
    if spec.get("type") == "json_schema":
        wrapper = spec.get("json_schema")
        if not isinstance(wrapper, Mapping) or not isinstance(wrapper.get("schema"), Mapping):
            raise ResponseFormatError("response_format json_schema must contain a 'schema' object")
        name = str(wrapper.get("name") or name)
        strict = bool(wrapper.get("strict", False))
        schema = wrapper["schema"]
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), Mapping):
        raise ResponseFormatError("response_format JSON schema must be an object with properties")
    arrow_type, coerce = _schema_type(schema, "$")
    if not isinstance(coerce, _StructCoerce):
        raise ResponseFormatError("response_format JSON schema must be an object with properties")
    required = schema.get("required") or []
    fields = tuple(
        DeclaredField(
            str(name),
            json_schema_to_sql(sub),
            required=name in required,
            allowed=_enum_of(sub, f"$.{name}"),
        )
        for name, sub in schema["properties"].items()
    )
    return ResponseFormat(arrow_type, dict(schema), name, coerce, strict=strict, fields=fields)


def _enum_of(schema: Any, path: str) -> tuple[Any, ...]:
    """The values a JSON schema's `enum` allows (none: no enum), without `null`: a NULL value is
    never checked against them."""
    values = schema.get("enum") if isinstance(schema, Mapping) else None
    if values is None:
        return ()
    if not isinstance(values, list) or not values:
        raise ResponseFormatError(f"response_format JSON schema at {path}: enum must be a list")
    return tuple(v for v in values if v is not None)


def _among(value: Any, allowed: tuple[Any, ...]) -> bool:
    """`value` equals one of `allowed`, as SQL's IN compares: a boolean is no number."""
    return any((type(value) is bool) == (type(v) is bool) and value == v for v in allowed)


def _schema_type(schema: Any, path: str, *, top: bool = False) -> tuple[pa.DataType, Coerce]:
    """The Arrow type and coercer of `schema`. Below the top level an `enum` is checked by the
    coercer; a top-level field's (`top`) by `ResponseFormat.parse`, as push-down checks it."""
    arrow_type, coerce = _schema_type_unchecked(schema, path)
    allowed = _enum_of(schema, path)
    if top or not allowed:
        return arrow_type, coerce

    def checked(value: Any, where: str) -> Any:
        found = coerce(value, where)
        if found is not None and not _among(found, allowed):
            raise _fail(where, f"one of {list(allowed)}", value)
        return found

    return arrow_type, checked


def _schema_type_unchecked(schema: Any, path: str) -> tuple[pa.DataType, Coerce]:
    import pyarrow as pa

    if not isinstance(schema, Mapping):
        raise ResponseFormatError(f"response_format JSON schema at {path} must be an object")
    kind = schema.get("type")
    if isinstance(kind, list):
        # ["string", "null"]: nullable; every Arrow field is nullable anyway.
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if len(non_null) == 1 else None
    if kind is None and "enum" in schema:
        kind = "string"
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, Mapping) or not props:
            # A free-form object has no Arrow struct shape: keep it as JSON text.
            return pa.string(), _coerce_json_text
        fields = []
        coercers: dict[str, Coerce] = {}
        for name, child in props.items():
            child_type, coercers[name] = _schema_type(child, f"{path}.{name}", top=path == "$")
            fields.append(pa.field(name, child_type))
        return pa.struct(fields), _struct_coercer(coercers)
    if kind == "array":
        item_type, item_coerce = _schema_type(schema.get("items", {"type": "string"}), f"{path}[]")
        return pa.list_(item_type), _list_coercer(item_coerce)
    if kind == "string":
        return pa.string(), _coerce_string
    if kind == "integer":
        return pa.int64(), _int_coercer(64)
    if kind == "number":
        return pa.float64(), _coerce_float
    if kind == "boolean":
        return pa.bool_(), _coerce_bool
    raise ResponseFormatError(f"response_format JSON schema at {path}: unsupported type {kind!r}")


# --- coercion of parsed JSON into Arrow-compatible Python values ------------------------------


def _fail(path: str, expected: str, value: Any) -> AnswerParseError:
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return AnswerParseError(f"{path}: expected {expected}, got {shown[:60]}")


class _StructCoerce:
    """Coerces an object field by field; `fields` lets the top level check each one."""

    def __init__(self, fields: Mapping[str, Coerce]) -> None:
        self.fields = dict(fields)

    def __call__(self, value: Any, path: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _fail(path, "an object", value)
        # Missing fields become NULL; extra fields are ignored.
        return {name: c(value.get(name), f"{path}.{name}") for name, c in self.fields.items()}


def _struct_coercer(fields: Mapping[str, Coerce]) -> Coerce:
    return _StructCoerce(fields)


def _list_coercer(item: Coerce) -> Coerce:
    def coerce(value: Any, path: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, list):
            raise _fail(path, "an array", value)
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return coerce


def _map_coercer(item: Coerce) -> Coerce:
    def coerce(value: Any, path: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _fail(path, "an object", value)
        return [(str(k), item(v, f"{path}.{k}")) for k, v in value.items()]

    return coerce


# json.dumps with any option builds a new JSONEncoder on every call (several microseconds):
# per row, one made once gives the same text (json.dumps(value, ensure_ascii=False,
# separators=(",", ":")) and json.dumps(value, ensure_ascii=False)).
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_TEXT_JSON = json.JSONEncoder(ensure_ascii=False)


def _coerce_string(value: Any, path: str) -> Any:
    # As Databricks' get_json_object reads a value as text: scalars as written, objects and arrays
    # as compact JSON.
    if value is None or isinstance(value, str):
        return value
    return _COMPACT_JSON.encode(value)


def _coerce_json_text(value: Any, path: str) -> Any:
    return None if value is None else _TEXT_JSON.encode(value)


def _int_coercer(bits: int) -> Coerce:
    low, high = _INT_RANGES[bits]

    def coerce(value: Any, path: str) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            raise _fail(path, "an integer", value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            value = int(value.strip().split(".")[0])
        if not isinstance(value, int):
            raise _fail(path, "an integer", value)
        if not low <= value <= high:
            raise _fail(path, f"an integer in {bits}-bit range", value)
        return value

    return coerce


def _coerce_float(value: Any, path: str) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, "a number", value)
    return float(value)


def _coerce_bool(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _fail(path, "a boolean", value)


def _decimal_coercer(precision: int, scale: int) -> Coerce:
    # Rounded half-up (away from zero), as Databricks' cast to DECIMAL rounds (Python's default
    # context rounds half to even); digits enough for any value that fits, so a value that does
    # not fit is refused for its size, not for the context's.
    quantum = decimal.Decimal(1).scaleb(-scale)
    limit = decimal.Decimal(10) ** (precision - scale)
    context = decimal.Context(prec=precision + 2, rounding=decimal.ROUND_HALF_UP)

    def coerce(value: Any, path: str) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            # The number texts the SQL side reads (not `+1`, `1_000`, `NaN` or `Infinity`).
            if not _NUMBER_TEXT.fullmatch(value):
                raise _fail(path, "a number", value)
            text = value.strip()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            # A JSON number: as its text (a fraction read as a double, then written shortest),
            # which is what Databricks' get_json_object gives the cast.
            text = str(value)
        else:
            raise _fail(path, "a number", value)
        try:
            number = decimal.Decimal(text).quantize(quantum, context=context)
        except decimal.InvalidOperation:
            number = None
        if number is None or not abs(number) < limit:
            raise _fail(path, f"a number fitting DECIMAL({precision},{scale})", value)
        return number

    return coerce


def _coerce_date(value: Any, path: str) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        try:
            return datetime.date(int(value[:4]), int(value[5:7]), int(value[8:10]))
        except ValueError:  # not in the calendar: 2024-02-30
            pass
    raise _fail(path, "a date (YYYY-MM-DD)", value)


def _coerce_timestamp(value: Any, path: str) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and _TIMESTAMP_TEXT.fullmatch(value):
        # Matched whole: `YYYY-MM-DD?HH:MM:SS` at fixed places, then `.fraction` and the offset.
        rest = value[19:]
        offset = 0
        if rest.endswith("Z"):
            rest = rest[:-1]
        elif len(rest) >= 6 and rest[-6] in "+-":
            offset = int(rest[-5:-3]) * 60 + int(rest[-2:])
            offset = -offset if rest[-6] == "-" else offset
            rest = rest[:-6]
        micros = int(rest[1:7].ljust(6, "0")) if rest else 0
        try:
            parsed = datetime.datetime(
                int(value[:4]),
                int(value[5:7]),
                int(value[8:10]),
                int(value[11:13]),
                int(value[14:16]),
                int(value[17:19]),
                micros,
                tzinfo=_UTC,
            )
            return parsed - datetime.timedelta(minutes=offset) if offset else parsed
        except (ValueError, OverflowError):  # not in the calendar, or out of range in UTC
            pass
    raise _fail(path, "an ISO-8601 timestamp", value)
