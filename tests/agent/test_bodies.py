"""Request bodies per row (pure, table-driven)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentbatch.agent.bodies import BodyBuilder, RequestError
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.response_format import parse_response_format


def body(spec: CallSpec, request: str | None, **kwargs: Any) -> dict[str, Any]:
    return json.loads(BodyBuilder(spec, **kwargs).build(request))  # type: ignore[no-any-return]


CASES: list[tuple[str, CallSpec, str, dict[str, Any]]] = [
    (
        "responses text",
        CallSpec(endpoint="e"),
        "hi",
        {"input": [{"role": "user", "content": "hi"}]},
    ),
    (
        "chat text",
        CallSpec(endpoint="e", api="chat"),
        "hi",
        {"messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "parameters, custom inputs, options and stream at the top level",
        CallSpec(
            endpoint="e",
            stream=True,
            model_parameters={"temperature": 0.1, "max_tokens": 5},
            custom_inputs={"tenant": "acme"},
            databricks_options={"return_trace": True},
        ),
        'quote " and ünïcode',
        {
            "input": [{"role": "user", "content": 'quote " and ünïcode'}],
            "temperature": 0.1,
            "max_tokens": 5,
            "custom_inputs": {"tenant": "acme"},
            "databricks_options": {"return_trace": True},
            "stream": True,
        },
    ),
    (
        "json request is the base; row custom inputs win over the job's",
        CallSpec(endpoint="e", request_is_json=True, custom_inputs={"tenant": "acme", "a": 1}),
        '{"input": [{"role": "user", "content": "x"}], "custom_inputs": {"a": 2}}',
        {"input": [{"role": "user", "content": "x"}], "custom_inputs": {"tenant": "acme", "a": 2}},
    ),
    (
        "json request for a custom model passes through",
        CallSpec(endpoint="e", request_is_json=True),
        '{"dataframe_records": [{"x": 1}]}',
        {"dataframe_records": [{"x": 1}]},
    ),
    (
        # Databricks' to_json leaves a NULL struct field out (DuckDB's writes null): the body is
        # the same on every engine, and a NULL never overrides the job's max_tokens.
        "a request mapping's NULL fields are absent, at any depth",
        CallSpec(endpoint="e", request_is_json=True, model_parameters={"max_tokens": 5}),
        '{"input": [{"role": "user", "content": "x", "name": null}], "max_tokens": null,'
        ' "custom_inputs": {"a": null, "b": [null, 1]}}',
        {
            "input": [{"role": "user", "content": "x"}],
            "max_tokens": 5,
            "custom_inputs": {"b": [None, 1]},
        },
    ),
    (
        "the job's stream setting overrides the row's",
        CallSpec(endpoint="e", request_is_json=True),
        '{"input": "x", "stream": true}',
        {"input": "x"},
    ),
]


@pytest.mark.parametrize(
    ("name", "spec", "request_text", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_bodies(name: str, spec: CallSpec, request_text: str, expected: dict[str, Any]) -> None:
    assert body(spec, request_text) == expected


def test_openai_compatible_route_names_the_model() -> None:
    got = body(CallSpec(endpoint="openai/m", api="chat"), "hi", model="m")
    assert got["model"] == "m"
    got = body(
        CallSpec(endpoint="openai/m", request_is_json=True),
        '{"input": "x", "model": "z"}',
        model="m",
    )
    assert got["model"] == "m"


def test_response_format_goes_where_each_api_expects_it() -> None:
    fmt = parse_response_format("STRUCT<label: STRING>")
    responses = body(CallSpec(endpoint="e"), "hi", response_format=fmt)
    assert responses["text"]["format"]["type"] == "json_schema"
    assert responses["text"]["format"]["schema"]["properties"] == {"label": {"type": "string"}}
    chat = body(CallSpec(endpoint="e", api="chat"), "hi", response_format=fmt)
    assert chat["response_format"]["json_schema"]["schema"]["required"] == ["label"]
    # A row that already asks for a format keeps its own.
    own = body(
        CallSpec(endpoint="e", request_is_json=True),
        '{"input": "x", "text": {"format": {"type": "text"}}}',
        response_format=fmt,
    )
    assert own["text"] == {"format": {"type": "text"}}


@pytest.mark.parametrize(
    ("spec", "request_text", "message"),
    [
        (CallSpec(endpoint="e"), None, "NULL"),
        (CallSpec(endpoint="e", request_is_json=True), "{not json", "not valid JSON"),
        (CallSpec(endpoint="e", request_is_json=True), "[1, 2]", "JSON object"),
    ],
)
def test_unusable_requests_are_row_errors(
    spec: CallSpec, request_text: str | None, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        BodyBuilder(spec).build(request_text)
