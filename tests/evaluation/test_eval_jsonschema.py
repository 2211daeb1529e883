"""JSON Schema in evaluation specs and the json_schema scorer: the full standard, by `jsonschema`."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import pytest

from agentbatch.evaluation.scorers import JsonSchemaScorer
from agentbatch.spec import evaluation as spec
from agentbatch.spec.json_schema import check_schema, first_violation

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
        ({"label": "bug"}, "$: 'urgency' is a required property"),
        ({"label": "other", "urgency": 3}, "$.label: 'other' is not one of"),
        ({"label": "bug", "urgency": 9}, "$.urgency: 9 is greater than the maximum of 5"),
        ({"label": "bug", "urgency": True}, "$.urgency: True is not of type 'integer'"),
        ({"label": "bug", "urgency": 2, "x": 1}, "$: Additional properties are not allowed"),
        ({"label": "bug", "urgency": 2, "tags": ["A"]}, "$.tags[0]: 'A' does not match"),
        (
            {"label": "bug", "urgency": 2, "tags": ["a", "b", "c"]},
            "$.tags: ['a', 'b', 'c'] is too long",
        ),
        ({"label": "bug", "urgency": 2, "note": "too long"}, "$.note: 'too long' is too long"),
        (["bug"], "$: ['bug'] is not of type 'object'"),
    ],
)
def test_violations_name_the_place_and_the_rule(value: Any, problem: str | None) -> None:
    found = first_violation(value, SCHEMA)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem), found


class Line(pydantic.BaseModel):
    sku: str
    quantity: int = pydantic.Field(ge=1)


class Order(pydantic.BaseModel):
    kind: Literal["order"]
    placed: str = pydantic.Field(json_schema_extra={"format": "date"})
    lines: list[Line]
    point: tuple[float, float]


def test_schemas_generated_by_pydantic_are_accepted_and_enforced() -> None:
    # $defs/$ref, prefixItems and format: what pydantic writes, and what the old subset refused.
    schema = Order.model_json_schema()
    assert "$defs" in schema and "prefixItems" in str(schema) and "format" in str(schema)
    check_schema(schema)
    good = {
        "kind": "order",
        "placed": "2026-01-31",
        "lines": [{"sku": "a", "quantity": 2}],
        "point": [1, 2],
    }
    assert first_violation(good, schema) is None
    bad_ref = {**good, "lines": [{"sku": "a", "quantity": 0}]}
    assert (
        first_violation(bad_ref, schema) == "$.lines[0].quantity: 0 is less than the minimum of 1"
    )
    bad_date = {**good, "placed": "31/01/2026"}
    assert first_violation(bad_date, schema) == "$.placed: '31/01/2026' is not a 'date'"
    bad_tuple = {**good, "point": [1, "x"]}
    assert first_violation(bad_tuple, schema) == "$.point[1]: 'x' is not of type 'number'"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "int"}, "invalid JSON Schema at type: 'int' is not valid"),
        ({"required": "a"}, "invalid JSON Schema at required: 'a' is not of type 'array'"),
        ({"minimum": "1"}, "invalid JSON Schema at minimum: '1' is not of type 'number'"),
        ({"anyOf": []}, "invalid JSON Schema at anyOf: [] should be non-empty"),
        (["not", "an", "object"], "a JSON Schema must be an object"),
    ],
)
def test_malformed_schemas_are_refused_with_the_place(schema: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_schema(schema)
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_scorer_passes_matching_answers_and_fails_the_rest() -> None:
    options = spec.JsonSchema.model_validate({"schema": SCHEMA})
    scorer = JsonSchemaScorer("shape", options)
    verdicts = [
        scorer.score({"response": text}).value
        for text in ('{"label": "bug", "urgency": 1}', '{"label": "bug"}', "not json")
    ]
    assert verdicts == [1.0, 0.0, 0.0]
