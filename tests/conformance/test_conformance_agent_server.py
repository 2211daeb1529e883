"""What MLflow's AgentServer (Databricks Apps agents) really sends. See README.md."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hello there"}]
TRACE_ID = re.compile(r"^tr-[0-9a-f]{32}$")
Send = Callable[..., Any]


def sse_data(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body; fails on any other field (AgentServer sends none)."""
    text = raw.decode()
    assert text.endswith("\n\n")
    payloads = []
    for frame in text.split("\n\n")[:-1]:
        assert frame.startswith("data: "), frame
        assert "\n" not in frame
        payloads.append(frame[len("data: ") :])
    return payloads


def test_invoke(mlflow_agent_server: Any, send: Send, captures: Any) -> None:
    reply = send(mlflow_agent_server, "/responses", {"input": USER, "custom_inputs": {"key": "k1"}})
    captures.check("agent_server_responses.json", reply)
    assert reply.status == 200
    assert reply.content_type == "application/json"
    body = json.loads(reply.body)
    # No id, status, model or usage: only what the agent returned, dumped without None fields.
    assert set(body) == {"object", "output", "custom_outputs"}
    assert body["object"] == "response"
    assert body["custom_outputs"] == {"key": "k1"}
    [item] = body["output"]
    assert item == {
        "type": "message",
        "id": "msg_conformance_1",
        "content": [{"text": "echo: hello there", "type": "output_text", "annotations": []}],
        "role": "assistant",
    }
    # Compact JSON (FastAPI), unlike the SSE frames below.
    assert b'{"object":"response",' in reply.body


def test_any_content_type_is_read_as_json(mlflow_agent_server: Any, send: Send) -> None:
    reply = send(
        mlflow_agent_server, "/responses", {"input": USER}, headers={"Content-Type": "text/plain"}
    )
    assert reply.status == 200


def test_invocations_is_the_same_route(mlflow_agent_server: Any, send: Send) -> None:
    one = send(mlflow_agent_server, "/responses", {"input": USER})
    two = send(mlflow_agent_server, "/invocations", {"input": USER})
    assert (one.status, one.body) == (two.status, two.body)


def test_trace_id_only_via_header(mlflow_agent_server: Any, send: Send, captures: Any) -> None:
    options = send(
        mlflow_agent_server,
        "/responses",
        {"input": USER, "databricks_options": {"return_trace": True}},
    )
    assert set(json.loads(options.body)) == {"object", "output"}  # databricks_options ignored
    reply = send(
        mlflow_agent_server,
        "/responses",
        {"input": USER},
        headers={"x-mlflow-return-trace-id": "true"},
    )
    captures.check("agent_server_responses_trace.json", reply)
    assert TRACE_ID.match(json.loads(reply.body)["metadata"]["trace_id"])


def test_stream(mlflow_agent_server: Any, send: Send, captures: Any) -> None:
    reply = send(
        mlflow_agent_server,
        "/responses",
        {"input": USER, "stream": True, "custom_inputs": {"key": "k1"}},
    )
    captures.check("agent_server_stream.sse", reply)
    assert reply.status == 200
    assert reply.content_type == "text/event-stream; charset=utf-8"
    payloads = sse_data(reply.body)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert all(set(e) == {"type", "item_id", "delta"} for e in deltas)
    assert "".join(e["delta"] for e in deltas) == "echo: hello there"
    done = events[-1]
    assert done["type"] == "response.output_item.done"
    assert done["item"]["content"][0]["text"] == "echo: hello there"
    assert done["custom_outputs"] == {"key": "k1"}
    # json.dumps defaults: ", " and ": " separators.
    assert payloads[0].startswith('{"type": "response.output_text.delta", ')


def test_stream_trace_id_frame(mlflow_agent_server: Any, send: Send, captures: Any) -> None:
    reply = send(
        mlflow_agent_server,
        "/responses",
        {"input": USER, "stream": True},
        headers={"x-mlflow-return-trace-id": "true"},
    )
    captures.check("agent_server_stream_trace.sse", reply)
    payloads = sse_data(reply.body)
    assert payloads[-1] == "[DONE]"
    trace = json.loads(payloads[-2])
    assert set(trace) == {"trace_id"} and TRACE_ID.match(trace["trace_id"])


def test_stream_error_inside_a_200(mlflow_agent_server: Any, send: Send, captures: Any) -> None:
    reply = send(
        mlflow_agent_server,
        "/responses",
        {"input": [{"role": "user", "content": "please FAIL now"}], "stream": True},
    )
    captures.check("agent_server_stream_error.sse", reply)
    assert reply.status == 200
    payloads = sse_data(reply.body)
    assert json.loads(payloads[0])["type"] == "response.output_text.delta"  # partial output
    assert json.loads(payloads[1]) == {
        "error": "agent failed on purpose mid-stream for: please FAIL now"
    }
    assert payloads[2:] == ["[DONE]"]


def test_invoke_error_is_500_detail(mlflow_agent_server: Any, send: Send, captures: Any) -> None:
    reply = send(
        mlflow_agent_server, "/responses", {"input": [{"role": "user", "content": "FAIL"}]}
    )
    captures.check("agent_server_error_agent.json", reply)
    assert reply.status == 500
    assert json.loads(reply.body) == {"detail": "agent failed on purpose for: FAIL"}


@pytest.mark.parametrize(
    ("name", "body", "raw", "detail"),
    [
        ("string_input", {"input": "hello"}, None, "Invalid parameters for ResponsesAgent: "),
        ("chat_body", {"messages": USER}, None, "Invalid parameters for ResponsesAgent: "),
        ("bad_json", None, b"{oops", "Invalid JSON in request body: "),
    ],
)
def test_bad_requests_are_400_detail(
    mlflow_agent_server: Any,
    send: Send,
    captures: Any,
    name: str,
    body: Any,
    raw: bytes | None,
    detail: str,
) -> None:
    reply = send(mlflow_agent_server, "/responses", body, raw=raw)
    captures.check(f"agent_server_error_{name}.json", reply)
    assert reply.status == 400
    parsed = json.loads(reply.body)
    assert set(parsed) == {"detail"}
    assert parsed["detail"].startswith(detail)


def test_info_and_health(mlflow_agent_server: Any, send: Send, captures: Any) -> None:
    info = send(mlflow_agent_server, "/agent/info", method="GET")
    captures.check("agent_server_info.json", info)
    assert json.loads(info.body)["agent_api"] == "responses"
    health = send(mlflow_agent_server, "/health", method="GET")
    assert json.loads(health.body) == {"status": "healthy"}


def test_openai_client_reads_it(mlflow_agent_server: Any) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=mlflow_agent_server.base_url, api_key="unused", max_retries=0)
    response = client.responses.create(model="any", input=USER)  # type: ignore[arg-type]
    assert response.output_text == "echo: hello there"
    events = list(client.responses.create(model="any", input=USER, stream=True))  # type: ignore[arg-type]
    assert events[-1].type == "response.output_item.done"
