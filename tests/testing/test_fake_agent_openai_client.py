"""The official openai client parses the demo agent's replies: the fake cannot drift silently."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openai import APIError, AsyncOpenAI, OpenAI

from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.sse import STREAM_ERROR_MESSAGE

MakeAgent = Callable[..., AgentServer]


def _client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def test_responses_create(agent: AgentServer) -> None:
    response = _client(agent.url).responses.create(model="demo", input="hello there")
    assert response.output_text == "answer: hello there"
    assert response.status == "completed"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 3)


def test_responses_create_on_serving_endpoints(agent: AgentServer) -> None:
    client = _client(agent.serving_url)
    response = client.responses.create(
        model="my-endpoint",
        input=[{"role": "user", "content": "hi"}],
        extra_body={"custom_inputs": {"key": "k"}, "databricks_options": {"return_trace": True}},
    )
    assert response.output_text == "answer: hi"
    assert response.model == "my-endpoint"
    extra = response.model_extra or {}
    assert extra["custom_outputs"] == {"key": "k"}
    assert extra["databricks_output"]["trace"]["info"]["trace_id"].startswith("tr-")


def test_responses_stream_openai_style(agent: AgentServer) -> None:
    events = list(_client(agent.url).responses.create(model="demo", input="a b c", stream=True))
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "answer: a b c"
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == "answer: a b c"
    assert final.response.usage is not None and final.response.usage.output_tokens == 4


def test_responses_stream_helper_accumulates(agent: AgentServer) -> None:
    with _client(agent.url).responses.stream(model="demo", input="x y") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "answer: x y"


def test_responses_stream_mlflow_style(make_agent: MakeAgent) -> None:
    server = make_agent(minimal=True)
    user = [{"role": "user", "content": "a b"}]
    events = list(_client(server.url).responses.create(model="demo", input=user, stream=True))  # type: ignore[arg-type]
    assert [e.type for e in events] == [
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_item.done",
    ]


def test_chat_completions(agent: AgentServer) -> None:
    client = _client(agent.serving_url)
    completion = client.chat.completions.create(
        model="my-endpoint", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "answer: hi"
    assert completion.usage is not None and completion.usage.total_tokens == 3
    chunks = list(
        client.chat.completions.create(
            model="my-endpoint", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "answer: hi"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_errors_surface_as_openai_errors(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(p_stream_error=1.0), stream_style="mlflow")
    # MLflow's `{"error": "<text>"}` is not an object: the client says something generic and
    # keeps the text in `body`.
    with pytest.raises(APIError, match="An error occurred during streaming") as raised:
        list(_client(server.url).responses.create(model="demo", input="a b c", stream=True))
    assert raised.value.body == STREAM_ERROR_MESSAGE
    chat = make_agent(FaultConfig(p_stream_error=1.0))
    with pytest.raises(APIError, match="injected fault"):
        list(
            _client(chat.serving_url).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "a b"}], stream=True
            )
        )


async def test_async_client(agent: AgentServer) -> None:
    client = AsyncOpenAI(base_url=agent.url, api_key="unused", max_retries=0)
    response = await client.responses.create(model="demo", input="async")
    assert response.output_text == "answer: async"
    await client.close()
