from __future__ import annotations

import json

import pytest

from agentbatch.testing.inbound import BadRequest, parse_body, parse_json, request_key


def test_string_input() -> None:
    call = parse_json({"input": "hello", "stream": True, "model": "m"})
    assert (call.api, call.text, call.context, call.stream, call.model) == (
        "responses",
        "hello",
        "hello",
        True,
        "m",
    )
    assert call.key == request_key("hello")
    assert call.key.startswith("sha256:")


def test_message_list_takes_last_user_text_and_collects_context() -> None:
    call = parse_json(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "system", "content": "You triage tickets."},
                {"role": "user", "content": "first"},
                {"type": "function_call_output", "call_id": "c", "output": "tool"},
                {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
            ],
        }
    )
    assert call.text == "second"
    assert call.context == "Be brief.\nYou triage tickets.\nfirst\nsecond"


def test_options_and_formats() -> None:
    call = parse_json(
        {
            "input": "x",
            "custom_inputs": {"key": 42},
            "databricks_options": {"return_trace": True},
            "text": {"format": {"type": "json_schema", "name": "t", "schema": {}}},
        }
    )
    assert call.key == "42"
    assert call.return_trace and call.structured
    chat = parse_json(
        {"messages": [{"role": "user", "content": "q"}], "response_format": {"type": "json_object"}}
    )
    assert chat.api == "chat" and chat.structured and chat.text == "q"
    assert not parse_json({"input": "x", "text": {"format": {"type": "text"}}}).structured


def test_default_model_is_the_endpoint() -> None:
    assert parse_json({"input": "x"}, default_model="ep").model == "ep"
    assert parse_json({"input": "x", "model": "other"}, default_model="ep").model == "other"


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        ({"dataframe_records": [{"prompt": "a"}, {"prompt": "b", "n": 1}]}, ("a", "b 1")),
        ({"dataframe_split": {"columns": ["p"], "data": [["a"], ["b"]]}}, ("a", "b")),
        ({"inputs": ["a", "b"]}, ("a", "b")),
        ({"instances": "a"}, ("a",)),
    ],
)
def test_prediction_bodies(body: dict[str, object], rows: tuple[str, ...]) -> None:
    call = parse_json(body)
    assert call.api == "predictions"
    assert call.rows == rows


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "needs 'input'"),
        (b'{"input": 3}', "must be a string or a list"),
        (b'{"input": []}', "non-empty list"),
        (b'{"input": [{"role": "system", "content": "s"}]}', "no user message"),
        (b'{"input": [1]}', "must be an object"),
        (b'{"input": [{"role": "user", "content": 5}]}', "must be a string or a list of content"),
        (b'{"input": "x", "custom_inputs": []}', "custom_inputs must be a JSON object"),
        (b'{"input": "x", "databricks_options": 1}', "databricks_options must be"),
        (b'{"dataframe_split": {"columns": []}}', "'data' list"),
    ],
)
def test_bad_bodies_are_bad_requests(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_body(raw)


def test_parse_body_round_trip() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert parse_body(json.dumps(body).encode()).stream
