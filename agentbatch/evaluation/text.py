"""Turning answers into comparable values: fields of structured answers, canonical text,
normalisation, numbers and JSON. Pure functions; no scorer logic.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import unicodedata
from decimal import Decimal
from typing import Any

_MISSING = object()
_CODE_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")


class FieldMissing(LookupError):
    """The answer has no such field."""


def strip_code_fence(text: str) -> str:
    """Models often wrap JSON in ```json fences; the content is what counts."""
    match = _CODE_FENCE.match(text)
    return match.group(1) if match else text


def parse_json(value: Any) -> Any:
    """A structured answer as is; a text answer parsed as JSON (ValueError if it is not JSON)."""
    if isinstance(value, (dict, list)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"not JSON text: {type(value).__name__}")
    return json.loads(strip_code_fence(value))


def get_field(value: Any, path: str | None) -> Any:
    """The dotted `path` inside a structured answer (a text answer is parsed as JSON first)."""
    if path is None:
        return value
    node = value
    if isinstance(node, str):
        try:
            node = parse_json(node)
        except ValueError:
            raise FieldMissing(f"the answer is not JSON, so it has no field {path!r}") from None
    for part in path.split("."):
        found = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if found is _MISSING:
            raise FieldMissing(f"the answer has no field {path!r}")
        node = found
    return node


def as_text(value: Any) -> str:
    """Canonical text of a value: 3, 3.0, a DECIMAL's 3.00 and "3" compare equal; objects as
    sorted JSON, of their values as `json_form` gives them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal) and value.is_finite():
        return "0" if value.is_zero() else format(value.normalize(), "f")
    if isinstance(value, (dict, list)):
        return json.dumps(
            json_form(value),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
    return str(value)


def json_form(value: Any) -> Any:
    """A typed answer's value as the agent's JSON gave it, for checks made on JSON (a schema):
    a DATE or TIMESTAMP as its ISO text, a DECIMAL as a number (a whole one exact), nested
    values alike. The stored value is a Python date or Decimal, which no JSON type matches."""
    if isinstance(value, dict):
        return {name: json_form(item) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_form(item) for item in value]
    if isinstance(value, Decimal) and value.is_finite():
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.date, datetime.time)):  # a datetime is a date too
        return value.isoformat()
    return value


def normalise(
    text: str, *, ignore_case: bool, ignore_whitespace: bool, ignore_punctuation: bool
) -> str:
    text = unicodedata.normalize("NFKC", text)
    if ignore_punctuation:
        text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    if ignore_case:
        text = text.casefold()
    if ignore_whitespace or ignore_punctuation:
        text = _SPACES.sub(" ", text).strip()
    return text


def as_number(value: Any) -> float | None:
    """A number from a number or from text ("3", " 4.5 ", "about 12%", "1,200"); None if none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        match = _NUMBER.search(text)
        if match is None:
            return None
        token = match.group(0)
        # "1,200" is a thousands separator; "3,5" is a decimal comma.
        if "," in token and "." not in token and not re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+", token):
            token = token.replace(",", ".")
        try:
            number = float(token.replace(",", ""))
        except ValueError:
            return None
    return number if math.isfinite(number) else None


def preview(value: Any, limit: int = 120) -> str:
    text = as_text(value) if not isinstance(value, str) else value
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
