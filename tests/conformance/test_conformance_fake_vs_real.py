"""The shipped demo agent, in its MLflow-like modes, answers in the same shapes as real MLflow."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig

pytestmark = pytest.mark.slow

Send = Callable[..., Any]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def shape(value: Any) -> Any:
    """Keys and nesting without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def frames(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for frame in raw.decode().split("\n\n")[:-1]:
        payload = frame.removeprefix("data: ")
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def stream_outline(raw: bytes) -> list[Any]:
    """Event shapes with runs of identical delta shapes collapsed to one."""
    outline: list[Any] = []
    for event in frames(raw):
        item = shape(event) if event != "[DONE]" else "[DONE]"
        if not outline or outline[-1] != item:
            outline.append(item)
    return outline


@pytest.fixture(scope="module")
def fake() -> Iterator[AgentServer]:
    with serve_agent(minimal=True) as server:
        yield server


@pytest.fixture(scope="module")
def failing_fake() -> Iterator[AgentServer]:
    with serve_agent(FaultConfig(p_stream_error=1.0), minimal=True) as server:
        yield server


@pytest.fixture(scope="module")
def fake_chat_agent() -> Iterator[AgentServer]:
    with serve_agent(chat_reply="chat_agent") as server:
        yield server


@pytest.mark.parametrize("custom_inputs", [None, {"key": "k1"}])
@pytest.mark.parametrize("trace_header", [False, True])
def test_invoke_shapes_match(
    mlflow_agent_server: Any,
    fake: AgentServer,
    send: Send,
    custom_inputs: dict[str, str] | None,
    trace_header: bool,
) -> None:
    body: dict[str, Any] = {"input": user("hello there")}
    if custom_inputs:
        body["custom_inputs"] = custom_inputs
    headers = {"x-mlflow-return-trace-id": "true"} if trace_header else {}
    real = send(mlflow_agent_server, "/responses", body, headers=headers)
    ours = send(fake, "/responses", body, headers=headers)
    assert (real.status, real.content_type) == (ours.status, ours.content_type)
    assert shape(json.loads(real.body)) == shape(json.loads(ours.body))


@pytest.mark.parametrize("trace_header", [False, True])
def test_stream_shapes_match(
    mlflow_agent_server: Any, fake: AgentServer, send: Send, trace_header: bool
) -> None:
    body = {"input": user("hello there"), "stream": True, "custom_inputs": {"key": "k"}}
    headers = {"x-mlflow-return-trace-id": "true"} if trace_header else {}
    real = send(mlflow_agent_server, "/responses", body, headers=headers)
    ours = send(fake, "/responses", body, headers=headers)
    assert real.status == ours.status == 200
    assert real.content_type == ours.content_type
    assert stream_outline(real.body) == stream_outline(ours.body)
    # Same JSON spacing too: clients that split on bytes see the same thing.
    assert real.body.startswith(b'data: {"type": "response.output_text.delta", "item_id": ')
    assert ours.body.startswith(b'data: {"type": "response.output_text.delta", "item_id": ')


def test_stream_error_shapes_match(
    mlflow_agent_server: Any, failing_fake: AgentServer, send: Send
) -> None:
    body = {"input": user("please FAIL now"), "stream": True}
    real = frames(send(mlflow_agent_server, "/responses", body).body)
    ours = frames(send(failing_fake, "/responses", body).body)
    assert [shape(e) for e in real] == [shape(e) for e in ours]
    assert ours[-2]["error"] and ours[-1] == "[DONE]"


@pytest.mark.parametrize("body", [{"input": "a string"}, {"messages": user("hi")}])
def test_refusals_match(
    mlflow_agent_server: Any, fake: AgentServer, send: Send, body: dict[str, Any]
) -> None:
    real = send(mlflow_agent_server, "/responses", body)
    ours = send(fake, "/responses", body)
    assert real.status == ours.status == 400
    assert shape(json.loads(real.body)) == shape(json.loads(ours.body)) == {"detail": "str"}
    assert json.loads(ours.body)["detail"].startswith("Invalid parameters for ResponsesAgent")


def test_chat_agent_shapes_match(
    chat_model_server: Any, fake_chat_agent: AgentServer, send: Send
) -> None:
    body = {"messages": user("hello there"), "custom_inputs": {"key": "k"}}
    real = send(chat_model_server, "/invocations", body)
    ours = send(fake_chat_agent, "/invocations", body)
    assert real.status == ours.status == 200
    assert shape(json.loads(real.body)) == shape(json.loads(ours.body))
