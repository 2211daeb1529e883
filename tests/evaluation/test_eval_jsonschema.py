"""The JSON Schema subset used by the json_schema scorer."""

from __future__ import annotations

from typing import Any

import pytest

from agentbatch.evaluation.jsonschema_lite import check_schema, first_violation

SCHEMA = {
    "type": "object",
    "required": ["label", "urgency"],
    "additionalProperties": False,
    "properties": {
        "label": {"enum": ["bug", "billing"]},
        "urgency": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[a-z]+$"},
            "maxItems": 2,
        },
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 5}]},
    },
}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"label": "bug", "urgency": 3}, None),
        ({"label": "bug", "urgency": 3.0}, None),
        ({"label": "bug", "urgency": 3, "tags": ["a", "b"], "note": None}, None),
        ({"label": "bug"}, "$: missing required property 'urgency'"),
        ({"label": "other", "urgency": 3}, "$.label: 'other' is not one of"),
        ({"label": "bug", "urgency": 9}, "$.urgency: 9 is more than 5"),
        ({"label": "bug", "urgency": True}, "$.urgency: expected integer, got boolean"),
        ({"label": "bug", "urgency": 2, "x": 1}, "$.x: not allowed"),
        ({"label": "bug", "urgency": 2, "tags": ["A"]}, "$.tags[0]: does not match"),
        ({"label": "bug", "urgency": 2, "tags": ["a", "b", "c"]}, "$.tags: more than 2 items"),
        ({"label": "bug", "urgency": 2, "note": "too long"}, "$.note: matches none of anyOf"),
        (["bug"], "$: expected object, got array"),
    ],
)
def test_violations(value: Any, problem: str | None) -> None:
    found = first_violation(value, SCHEMA)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_a_valid_schema_passes_the_check() -> None:
    check_schema(SCHEMA)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "format": "x"}, "schema.format: unsupported"),
        ({"type": "int"}, "schema.type: use one or more of"),
        ({"properties": {"a": {"$ref": "#/x"}}}, "schema.properties.a.$ref: unsupported"),
        ({"required": "a"}, "schema.required: must be a list"),
        ({"pattern": "(("}, "schema.pattern: invalid regular expression"),
        ({"minimum": "1"}, "schema.minimum: must be a number"),
        ({"anyOf": []}, "schema.anyOf: must be a non-empty list"),
    ],
)
def test_unsupported_or_malformed_schemas_are_refused(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("$", r"\$").replace("(", r"\(")):
        check_schema(schema)
