"""What `mlflow models serve` (legacy Model Serving containers) really sends. See README.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hello there"}]
Send = Callable[..., Any]
SCORING_ERROR_KEYS = {"error_code", "message", "error_class", "sqlstate"}


def test_responses_agent_invoke(responses_model_server: Any, send: Send, captures: Any) -> None:
    reply = send(
        responses_model_server, "/invocations", {"input": USER, "custom_inputs": {"key": "k1"}}
    )
    captures.check("models_serve_responses.json", reply)
    assert reply.status == 200
    assert reply.content_type == "application/json"
    body = json.loads(reply.body)
    assert set(body) == {"object", "output", "custom_outputs"}
    assert body["output"][0]["content"][0]["text"] == "echo: hello there"
    assert body["custom_outputs"] == {"key": "k1"}
    # json.dumps defaults: ", " separators.
    assert reply.body.startswith(b'{"object": "response", "output": [')


def test_responses_agent_never_streams(
    responses_model_server: Any, send: Send, captures: Any
) -> None:
    reply = send(responses_model_server, "/invocations", {"input": USER, "stream": True})
    captures.check("models_serve_responses_stream_flag.json", reply)
    assert reply.status == 200
    assert reply.content_type == "application/json"
    assert json.loads(reply.body)["object"] == "response"


def test_databricks_options_are_ignored(responses_model_server: Any, send: Send) -> None:
    reply = send(
        responses_model_server,
        "/invocations",
        {"input": USER, "databricks_options": {"return_trace": True}},
    )
    assert reply.status == 200
    assert set(json.loads(reply.body)) == {"object", "output"}


def test_responses_agent_error_is_400(
    responses_model_server: Any, send: Send, captures: Any
) -> None:
    reply = send(
        responses_model_server, "/invocations", {"input": [{"role": "user", "content": "FAIL"}]}
    )
    captures.check("models_serve_responses_error_agent.json", reply)
    assert reply.status == 400
    body = json.loads(reply.body)
    assert set(body) == SCORING_ERROR_KEYS | {"stack_trace"}
    assert body["error_code"] == "BAD_REQUEST"
    assert body["message"].startswith("Encountered an unexpected error while evaluating the model")
    # The agent's own message is only in the stack trace.
    assert "agent failed on purpose for: FAIL" in body["stack_trace"]
    assert "agent failed on purpose" not in body["message"]


@pytest.mark.parametrize(
    ("name", "body", "raw", "error_code", "error_class"),
    [
        (
            "string_input",
            {"input": "hi"},
            None,
            "INVALID_PARAMETER_VALUE",
            "SCHEMA_ENFORCEMENT_FAILED",
        ),
        ("bad_json", None, b"{oops", "BAD_REQUEST", "INVALID_PARAMETER_VALUE"),
    ],
)
def test_responses_agent_bad_requests(
    responses_model_server: Any,
    send: Send,
    captures: Any,
    name: str,
    body: Any,
    raw: bytes | None,
    error_code: str,
    error_class: str,
) -> None:
    reply = send(responses_model_server, "/invocations", body, raw=raw)
    captures.check(f"models_serve_responses_error_{name}.json", reply)
    assert reply.status == 400
    parsed = json.loads(reply.body)
    assert set(parsed) == SCORING_ERROR_KEYS
    assert (parsed["error_code"], parsed["error_class"]) == (error_code, error_class)


def test_content_type_must_be_json(responses_model_server: Any, send: Send, captures: Any) -> None:
    reply = send(
        responses_model_server,
        "/invocations",
        {"input": USER},
        headers={"Content-Type": "text/plain"},
    )
    captures.check("models_serve_error_content_type.txt", reply)
    assert reply.status == 415
    assert reply.content_type.startswith("text/plain")


def test_no_responses_route(responses_model_server: Any, send: Send) -> None:
    reply = send(responses_model_server, "/responses", {"input": USER})
    assert reply.status == 404
    assert json.loads(reply.body) == {"detail": "Not Found"}


def test_ping(responses_model_server: Any, send: Send) -> None:
    assert send(responses_model_server, "/ping", method="GET").status == 200
    version = send(responses_model_server, "/version", method="GET")
    assert version.body.decode().startswith("3.")


def test_chat_agent_invoke(chat_model_server: Any, send: Send, captures: Any) -> None:
    reply = send(
        chat_model_server, "/invocations", {"messages": USER, "custom_inputs": {"key": "k1"}}
    )
    captures.check("models_serve_chat_agent.json", reply)
    assert reply.status == 200
    body = json.loads(reply.body)
    assert body == {
        "messages": [{"role": "assistant", "content": "echo: hello there", "id": "msg_3"}],
        "custom_outputs": {"key": "k1"},
    }


def test_chat_agent_never_streams(chat_model_server: Any, send: Send) -> None:
    reply = send(chat_model_server, "/invocations", {"messages": USER, "stream": True})
    assert reply.status == 200
    assert reply.content_type == "application/json"
    assert "messages" in json.loads(reply.body)


def test_chat_agent_ignores_databricks_options(chat_model_server: Any, send: Send) -> None:
    body = {"messages": USER, "databricks_options": {"return_trace": True}, "temperature": 0.1}
    reply = send(chat_model_server, "/invocations", body)
    assert reply.status == 200
    assert set(json.loads(reply.body)) == {"messages"}


def test_chat_agent_error_is_400(chat_model_server: Any, send: Send, captures: Any) -> None:
    reply = send(
        chat_model_server, "/invocations", {"messages": [{"role": "user", "content": "FAIL"}]}
    )
    captures.check("models_serve_chat_agent_error_agent.json", reply)
    assert reply.status == 400
    body = json.loads(reply.body)
    assert body["error_code"] == "BAD_REQUEST"
    assert "agent failed on purpose for: FAIL" in body["stack_trace"]


def test_chat_agent_refuses_responses_bodies(
    chat_model_server: Any, send: Send, captures: Any
) -> None:
    reply = send(chat_model_server, "/invocations", {"input": USER})
    captures.check("models_serve_chat_agent_error_input_body.json", reply)
    assert reply.status == 400
    assert json.loads(reply.body)["error_class"] == "SCHEMA_ENFORCEMENT_FAILED"
