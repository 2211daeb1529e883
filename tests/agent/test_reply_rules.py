"""One outcome per reply, whichever way it came: streamed or not, Chat or Responses or ChatAgent,
against a loopback agent that answers each request with the reply its text names."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiohttp import web

from agentbatch.agent.bulk import run_bulk
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.ledger import Ledger
from agentbatch.agent.probe import probe_call
from agentbatch.agent.transport import AiohttpTransport
from agentbatch.errors import AgentError
from agentbatch.testing.background import BackgroundServer
from agentbatch.testing.inbound import parse_body

from .conftest import input_batches

# A reply: (status, content type, body).
Reply = tuple[int, str, bytes]


def json_reply(body: Any, status: int = 200) -> Reply:
    return status, "application/json", json.dumps(body).encode()


def sse_reply(*events: Any) -> Reply:
    frames = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return 200, "text/event-stream", "".join(frames).encode()


def message(text: str, item_id: str = "m1") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


def chunk(*choices: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": list(choices)}


def delta(content: str | None, index: int = 0, finish: str | None = None, **extra: Any) -> Any:
    return {"index": index, "delta": {"content": content, **extra}, "finish_reason": finish}


def chat(*choices: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "model": "m", "choices": list(choices)}


def choice(content: str | None, index: int = 0, finish: str = "stop", **extra: Any) -> Any:
    return {
        "index": index,
        "message": {"role": "assistant", "content": content, **extra},
        "finish_reason": finish,
    }


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
TOOL_CALL_DELTA = {"index": 0, **TOOL_CALL}

REPLIES: dict[str, Reply] = {
    # MLflow's AgentServer when the agent raises `TimeoutError()` mid-stream: `{"error": str(e)}`
    # and `[DONE]`; not streamed, the same agent is HTTP 500 `{"detail": str(e)}`
    # (mlflow/genai/agent_server/server.py, `_generate`, `_handle_invoke_request`).
    "MLFLOW_RAISES_STREAMED": sse_reply(
        {"type": "response.output_item.done", "item": message("Let me check the database...")},
        {"error": ""},
        "[DONE]",
    ),
    "MLFLOW_RAISES": json_reply({"detail": ""}, status=500),
    "TOOL_CALLS_STREAMED": sse_reply(
        chunk(delta(None, tool_calls=[TOOL_CALL_DELTA], role="assistant")),
        chunk(delta(None, finish="tool_calls")),
        "[DONE]",
    ),
    "TOOL_CALLS": json_reply(chat(choice(None, finish="tool_calls", tool_calls=[TOOL_CALL]))),
    "FILTERED_STREAMED": sse_reply(
        chunk(delta("", role="assistant")), chunk(delta(None, finish="content_filter")), "[DONE]"
    ),
    "FILTERED": json_reply(chat(choice("", finish="content_filter"))),
    # `n: 2`: the two choices' chunks interleave, each naming its index.
    "TWO_CHOICES_STREAMED": sse_reply(
        chunk(delta("AAA ")),
        chunk(delta("BBB ", index=1)),
        chunk(delta("aaa")),
        chunk(delta("bbb", index=1)),
        chunk(delta(None, finish="stop"), delta(None, index=1, finish="stop")),
        "[DONE]",
    ),
    "TWO_CHOICES": json_reply(chat(choice("AAA aaa"), choice("BBB bbb", index=1))),
    # The same agent's answer as a ChatAgent and as a ResponsesAgent: a tool step, two messages.
    "CHAT_AGENT": json_reply(
        {
            "messages": [
                {"role": "user", "content": "refund?", "id": "u"},
                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL], "id": "a1"},
                {"role": "tool", "content": "done", "tool_call_id": "call_1", "id": "t1"},
                {"role": "assistant", "content": "Summary: refund issued.", "id": "a2"},
                {"role": "assistant", "content": "Label: billing", "id": "a3"},
            ]
        }
    ),
    "RESPONSES_AGENT": json_reply(
        {
            "output": [
                {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": ""},
                {"type": "function_call_output", "call_id": "call_1", "output": "done"},
                message("Summary: refund issued.", "a2"),
                message("Label: billing", "a3"),
            ]
        }
    ),
    "HUGE": json_reply({"output": [message("x" * 5000)]}),
}


@dataclass
class ScriptedAgent:
    """Answers each POST with the reply its request's first word names; records what it got."""

    status: int | None = None  # answer every request with this status instead
    seen: list[str] = field(default_factory=list)

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{route:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append(f"{request.method} {request.path_qs}")
        if self.status is not None:
            return web.json_response({"detail": "Forbidden"}, status=self.status)
        if request.method != "POST":
            return web.Response(status=405)
        case = parse_body(await request.read()).text.split()[0]
        status, content_type, body = REPLIES[case]
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})


@pytest.fixture
def agent() -> Iterator[tuple[str, ScriptedAgent]]:
    scripted = ScriptedAgent()
    with BackgroundServer(scripted.build_app, name="scripted-agent") as server:
        yield server.url, scripted


async def outcomes(
    tmp_path: Path, spec: CallSpec, requests: list[str], **kwargs: Any
) -> dict[str, dict[str, Any]]:
    """Each request's row, by request text."""
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "ledger.sqlite"  # one ledger per run
    with Ledger(path, key="id") as ledger:
        await run_bulk(input_batches(spec, requests), call=spec, key="id", ledger=ledger, **kwargs)
        rows = pa.Table.from_batches(list(ledger.rows_of_run())).to_pylist()
    return {requests[r["id"]]: r for r in rows}


async def test_an_mlflow_stream_error_without_a_message_fails_the_row_as_its_500_does(
    agent: tuple[str, ScriptedAgent], tmp_path: Path
) -> None:
    url, _ = agent
    streamed = await outcomes(
        tmp_path, CallSpec(endpoint=url, stream=True, max_retries=1), ["MLFLOW_RAISES_STREAMED"]
    )
    plain = await outcomes(tmp_path, CallSpec(endpoint=url, max_retries=1), ["MLFLOW_RAISES"])
    row, twin = streamed["MLFLOW_RAISES_STREAMED"], plain["MLFLOW_RAISES"]
    assert row["response"] is None, row
    assert row["error"].startswith("[transient] ") and twin["error"].startswith("[transient] ")
    assert "without a message" in row["error"]
    assert row["attempts"] == twin["attempts"] == 2


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("TOOL_CALLS", "[permanent] reply has no answer text: only tool calls"),
        ("FILTERED", "[permanent] reply withheld by a content filter"),
    ],
)
async def test_a_chat_reply_without_an_answer_fails_alike_streamed_or_not(
    agent: tuple[str, ScriptedAgent], tmp_path: Path, case: str, error: str
) -> None:
    url, _ = agent
    plain = await outcomes(tmp_path, CallSpec(endpoint=url, api="chat"), [case])
    spec = CallSpec(endpoint=url, api="chat", stream=True)
    streamed = await outcomes(tmp_path, spec, [f"{case}_STREAMED"])
    row, twin = streamed[f"{case}_STREAMED"], plain[case]
    assert row["response"] is None and twin["response"] is None
    assert row["error"] == twin["error"]
    assert row["error"].startswith(error), row["error"]


async def test_a_streamed_chat_reply_keeps_choice_zero_like_the_reply_not_streamed(
    agent: tuple[str, ScriptedAgent], tmp_path: Path
) -> None:
    url, _ = agent
    plain = await outcomes(tmp_path, CallSpec(endpoint=url, api="chat"), ["TWO_CHOICES"])
    spec = CallSpec(endpoint=url, api="chat", stream=True)
    streamed = await outcomes(tmp_path, spec, ["TWO_CHOICES_STREAMED"])
    assert streamed["TWO_CHOICES_STREAMED"]["response"] == plain["TWO_CHOICES"]["response"]
    assert plain["TWO_CHOICES"]["response"] == "AAA aaa"


async def test_a_chat_agent_reply_joins_its_messages_as_a_responses_reply_does(
    agent: tuple[str, ScriptedAgent], tmp_path: Path
) -> None:
    url, _ = agent
    chat_agent = await outcomes(tmp_path, CallSpec(endpoint=url, api="chat"), ["CHAT_AGENT"])
    responses = await outcomes(tmp_path, CallSpec(endpoint=url), ["RESPONSES_AGENT"])
    expected = "Summary: refund issued.\n\nLabel: billing"
    assert chat_agent["CHAT_AGENT"]["response"] == responses["RESPONSES_AGENT"]["response"]
    assert chat_agent["CHAT_AGENT"]["response"] == expected


async def test_a_reply_over_the_size_cap_records_the_status_the_server_sent(
    agent: tuple[str, ScriptedAgent], tmp_path: Path
) -> None:
    url, _ = agent
    transport = AiohttpTransport(max_body_bytes=1000)
    try:
        rows = await outcomes(tmp_path, CallSpec(endpoint=url), ["HUGE"], transport=transport)
    finally:
        await transport.close()
    assert "byte cap" in rows["HUGE"]["error"]
    assert rows["HUGE"]["http_status"] == 200


# --- agent URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "reached"),
    [
        # An Azure Functions key and an Azure OpenAI api-version ride in the query.
        ("/api/agent?code=KEY123", "/api/agent/responses?code=KEY123"),
        (
            "/openai/responses?api-version=2025-03-01-preview",
            "/openai/responses?api-version=2025-03-01-preview",
        ),
        ("/agent/?x=1&y=2", "/agent/responses?x=1&y=2"),
    ],
)
async def test_the_route_goes_on_the_path_and_the_query_stays(
    agent: tuple[str, ScriptedAgent], tmp_path: Path, given: str, reached: str
) -> None:
    url, scripted = agent
    spec = CallSpec(endpoint=url + given)
    probe_call(spec)
    rows = await outcomes(tmp_path, spec, ["RESPONSES_AGENT"])
    assert rows["RESPONSES_AGENT"]["error"] is None
    # The probe asks the very URL rows are sent to.
    assert scripted.seen == [f"GET {reached}", f"POST {reached}"]


@pytest.mark.parametrize("status", [403, 404])
async def test_credentials_in_an_agent_url_never_reach_errors_or_logs(
    agent: tuple[str, ScriptedAgent],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    url, scripted = agent
    scripted.status = status
    secret_url = url.replace("://", "://alice:pw-SECRET@") + "/agent/responses?code=FUNCKEY42"
    spec = CallSpec(endpoint=secret_url)
    errors = []
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(AgentError) as caught:
            await outcomes(tmp_path, spec, ["RESPONSES_AGENT"])
        errors.append(str(caught.value))
        try:
            probe_call(spec)  # stops the run on the 404; the 403 is alive
        except AgentError as probed:
            errors.append(str(probed))
    assert len(errors) == (2 if status == 404 else 1)
    assert scripted.seen[0] == "POST /agent/responses?code=FUNCKEY42"  # the key is still sent
    for text in (*errors, caplog.text):
        assert "pw-SECRET" not in text and "FUNCKEY42" not in text, text
    assert f"HTTP {status}" in str(caught.value)
    assert "127.0.0.1" in str(caught.value) and "code=***" in str(caught.value)
