"""A small JSON Schema validator for structured answers: the keywords answer schemas use.

Supported: type, enum, const, properties, required, additionalProperties, items, minItems,
maxItems, minLength, maxLength, pattern, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
anyOf, oneOf, allOf; annotations (title, description, default, examples, $schema, $id) are ignored.
Any other keyword is refused when the job loads, so a schema never passes by being misunderstood.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment"}
)
_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "anyOf",
        "oneOf",
        "allOf",
    }
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


_MAX_DEPTH = 32


def check_schema(schema: Any, path: str = "schema", depth: int = 0) -> None:
    """Raise ValueError naming the first unsupported or malformed part of `schema`."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{path}: nested more than {_MAX_DEPTH} levels deep")
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise ValueError(f"{path}: a schema is a mapping")
    for key, value in schema.items():
        where = f"{path}.{key}"
        if key in _ANNOTATIONS:
            continue
        if key not in _KEYWORDS:
            raise ValueError(f"{where}: unsupported JSON Schema keyword")
        if key == "type":
            kinds = value if isinstance(value, list) else [value]
            if not kinds or any(k not in _TYPES for k in kinds):
                raise ValueError(f"{where}: use one or more of {', '.join(sorted(_TYPES))}")
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}: must map property names to schemas")
            for name, sub in value.items():
                check_schema(sub, f"{where}.{name}", depth + 1)
        elif key in ("items", "additionalProperties"):
            check_schema(value, where, depth + 1)
        elif key in ("anyOf", "oneOf", "allOf"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{where}: must be a non-empty list of schemas")
            for number, sub in enumerate(value):
                check_schema(sub, f"{where}[{number}]", depth + 1)
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}: must be a list of property names")
        elif key == "enum":
            if not isinstance(value, list) or not value:
                raise ValueError(f"{where}: must be a non-empty list")
        elif key == "pattern":
            try:
                re.compile(str(value))
            except re.error as err:
                raise ValueError(f"{where}: invalid regular expression: {err}") from None
        elif key != "const" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{where}: must be a number")


def first_violation(value: Any, schema: Any, path: str = "$") -> str | None:
    """The first way `value` breaks `schema`, or None when it conforms."""
    if schema is True:
        return None
    if schema is False:
        return f"{path}: not allowed"
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, kind) for kind in kinds):
            return f"{path}: expected {' or '.join(kinds)}, got {_type_name(value)}"
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        return f"{path}: {value!r} is not one of {schema['enum']!r}"
    if "const" in schema and not _same(value, schema["const"]):
        return f"{path}: expected {schema['const']!r}"
    for check in (_object_violation, _array_violation, _string_violation, _number_violation):
        problem = check(value, schema, path)
        if problem:
            return problem
    return _combinator_violation(value, schema, path)


def _object_violation(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if not isinstance(value, dict):
        return None
    for name in schema.get("required", []):
        if name not in value:
            return f"{path}: missing required property {name!r}"
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problem = first_violation(item, properties[name], f"{path}.{name}")
        else:
            problem = first_violation(item, extra, f"{path}.{name}")
        if problem:
            return problem
    return None


def _array_violation(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if not isinstance(value, list):
        return None
    if len(value) < schema.get("minItems", 0):
        return f"{path}: fewer than {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{path}: more than {schema['maxItems']} items"
    if "items" in schema:
        for number, item in enumerate(value):
            problem = first_violation(item, schema["items"], f"{path}[{number}]")
            if problem:
                return problem
    return None


def _string_violation(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if not isinstance(value, str):
        return None
    if len(value) < schema.get("minLength", 0):
        return f"{path}: shorter than {schema['minLength']} characters"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{path}: longer than {schema['maxLength']} characters"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{path}: does not match {schema['pattern']!r}"
    return None


def _number_violation(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if "minimum" in schema and value < schema["minimum"]:
        return f"{path}: {value} is less than {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"{path}: {value} is more than {schema['maximum']}"
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return f"{path}: {value} is not more than {schema['exclusiveMinimum']}"
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        return f"{path}: {value} is not less than {schema['exclusiveMaximum']}"
    return None


def _combinator_violation(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    for sub in schema.get("allOf", []):
        problem = first_violation(value, sub, path)
        if problem:
            return problem
    if "anyOf" in schema and all(first_violation(value, s, path) for s in schema["anyOf"]):
        return f"{path}: matches none of anyOf"
    if "oneOf" in schema:
        matches = sum(first_violation(value, s, path) is None for s in schema["oneOf"])
        if matches != 1:
            return f"{path}: matches {matches} of oneOf (expected exactly 1)"
    return None


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    expected: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
    }
    return isinstance(value, expected[kind])


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0, but true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    names: dict[type, str] = {dict: "object", list: "array", str: "string"}
    return names.get(type(value), type(value).__name__)
