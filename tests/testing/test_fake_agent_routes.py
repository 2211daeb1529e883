"""The demo agent's routes and reply shapes, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key

MakeAgent = Callable[..., AgentServer]

TICKET = "Classify the support ticket. Ticket: my password does not work"


async def _post(url: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, **kwargs) as r:
        return r.status, await r.json(content_type=None)


async def test_responses_full_body(agent: AgentServer) -> None:
    status, body = await _post(
        f"{agent.url}/responses",
        {"input": [{"role": "user", "content": "hello"}], "custom_inputs": {"key": "row-1"}},
    )
    assert status == 200
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["id"].startswith("resp_")
    [item] = body["output"]
    assert (item["type"], item["role"]) == ("message", "assistant")
    assert item["content"] == [{"type": "output_text", "text": "answer: hello", "annotations": []}]
    assert body["usage"]["input_tokens"] == 1
    assert body["usage"]["output_tokens"] == 2
    assert body["custom_outputs"] == {"key": "row-1"}
    assert "databricks_output" not in body
    assert agent.stats().requests_for("row-1") == 1


async def test_minimal_body_like_agent_server(make_agent: MakeAgent) -> None:
    server = make_agent(minimal=True)
    user = [{"role": "user", "content": TICKET}]
    status, body = await _post(f"{server.url}/responses", {"input": user})
    assert status == 200
    assert set(body) == {"object", "output"}
    assert body["output"][0]["content"][0]["text"] == "account"
    # Like the real AgentServer: a bare string or a chat body is refused.
    for refused in ({"input": TICKET}, {"messages": user}):
        status, body = await _post(f"{server.url}/responses", refused)
        assert status == 400
        assert body["detail"].startswith("Invalid parameters for ResponsesAgent")


async def test_trace_ids(agent: AgentServer) -> None:
    _, body = await _post(
        f"{agent.url}/responses", {"input": "x", "databricks_options": {"return_trace": True}}
    )
    assert body["databricks_output"]["trace"]["info"]["trace_id"].startswith("tr-")
    _, body = await _post(
        f"{agent.url}/responses", {"input": "x"}, headers={"x-mlflow-return-trace-id": "true"}
    )
    assert body["metadata"]["trace_id"].startswith("tr-")


async def test_structured_triage(agent: AgentServer) -> None:
    fmt = {"format": {"type": "json_schema", "name": "triage", "schema": {"type": "object"}}}
    _, body = await _post(f"{agent.url}/responses", {"input": TICKET, "text": fmt})
    assert body["output"][0]["content"][0]["text"] == '{"label": "account", "urgency": 3}'


async def test_serving_invocations_chat_and_responses(agent: AgentServer) -> None:
    url = f"{agent.url}/serving-endpoints/my-agent/invocations"
    status, body = await _post(url, {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["model"] == "my-agent"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "answer: hi"}
    assert body["usage"]["total_tokens"] == 3
    status, body = await _post(url, {"input": "hi"})
    assert body["object"] == "response" and body["model"] == "my-agent"
    status, body = await _post(url, {"dataframe_records": [{"q": "a"}, {"q": "b"}]})
    assert body == {"predictions": ["answer: a", "answer: b"]}


async def test_chat_agent_replies_never_stream(make_agent: MakeAgent) -> None:
    server = make_agent(chat_reply="chat_agent")
    body_in = {
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "custom_inputs": {"a": 1},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/invocations", json=body_in) as response,
    ):
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["messages"][0]["content"] == "answer: hi"
    assert body["messages"][0]["role"] == "assistant"
    assert body["custom_outputs"] == {"a": 1}


async def test_openai_compatible_routes_need_a_model(make_agent: MakeAgent) -> None:
    server = make_agent(known_endpoints=frozenset({"known"}))
    base = f"{server.url}/serving-endpoints"
    status, body = await _post(
        f"{base}/chat/completions", {"messages": [{"role": "user", "content": "q"}]}
    )
    assert status == 400 and "'model'" in body["message"]
    status, body = await _post(f"{base}/responses", {"model": "unknown", "input": "q"})
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    status, body = await _post(f"{base}/responses", {"model": "known", "input": "q"})
    assert status == 200 and body["model"] == "known"
    status, _ = await _post(f"{base}/unknown/invocations", {"input": "q"})
    assert status == 404


@pytest.mark.parametrize("minimal", [False, True])
async def test_bad_bodies_are_400_with_a_message(make_agent: MakeAgent, minimal: bool) -> None:
    server = make_agent(minimal=minimal)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/responses", data=b"{oops") as response,
    ):
        assert response.status == 400
        body = await response.json()
    if minimal:
        assert "not valid JSON" in body["detail"]
    else:
        assert body["error_code"] == "BAD_REQUEST"
        assert "not valid JSON" in body["message"]


async def test_stats_reset_and_config_endpoints(agent: AgentServer) -> None:
    await _post(f"{agent.url}/responses", {"input": "x"})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{agent.url}/_stats") as response:
            stats = await response.json()
        assert stats == agent.stats().as_json()
        assert stats["requests_by_key"] == {request_key("x"): 1}
        assert stats["status_counts"] == {"200": 1}
        async with session.post(f"{agent.url}/_config", json={"p_server_error": 1.0}) as response:
            assert response.status == 200
        async with session.post(f"{agent.url}/responses", json={"input": "x"}) as response:
            assert response.status == 500
        async with session.post(f"{agent.url}/_config", json={"p_nope": 1}) as response:
            assert response.status == 400
            assert "p_nope" in (await response.json())["message"]
        async with session.post(f"{agent.url}/_config", json={"p_hang": 2}) as response:
            assert response.status == 400
        async with session.post(f"{agent.url}/_reset") as response:
            assert response.status == 200
        async with session.get(f"{agent.url}/health") as response:
            assert await response.json() == {"status": "healthy"}
    assert agent.stats().requests_total == 0


def test_configure_swaps_faults_and_options() -> None:
    import httpx

    with serve_agent(model="first") as server:
        assert httpx.post(f"{server.url}/responses", json={"input": "x"}).json()["model"] == "first"
        server.configure(FaultConfig(p_unavailable=1.0), model="second")
        assert httpx.post(f"{server.url}/responses", json={"input": "x"}).status_code == 503
        server.configure(FaultConfig())
        assert (
            httpx.post(f"{server.url}/responses", json={"input": "x"}).json()["model"] == "second"
        )


def test_bad_options_are_usage_errors() -> None:
    from agentbatch.errors import UsageError
    from agentbatch.testing.agent_app import AgentOptions

    with pytest.raises(UsageError, match="stream_style"):
        AgentOptions(stream_style="sse")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="chat_reply"):
        AgentOptions(chat_reply="agent")  # type: ignore[arg-type]
    with serve_agent() as server, pytest.raises(UsageError):
        server.configure(chat_reply="nope")


@pytest.mark.parametrize("route", ["/invocations", "/serving-endpoints/any/invocations"])
async def test_a_body_that_is_not_json_typed_is_415_like_mlflow_models_serve(
    agent: AgentServer, route: str
) -> None:
    """`mlflow models serve` (behind Model Serving) answers 415 to a non-JSON Content-Type
    (captured: tests/conformance/captures/models_serve_error_content_type.txt)."""
    body = b'{"input": [{"role": "user", "content": "hello"}]}'
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{agent.url}{route}", data=body, headers={"Content-Type": "text/plain"}
        ) as response:
            assert response.status == 415
            assert response.content_type == "text/plain"
        async with session.post(
            f"{agent.url}{route}", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 200
    # The Apps agent (MLflow's AgentServer) parses any body as JSON.
    status, _ = await _post(f"{agent.url}/responses", {"input": [{"role": "user", "content": "x"}]})
    assert status == 200
