"""An async MLflow AgentServer app, as Databricks Apps agent templates write it.

It answers `echo: <last user text>` and fails on purpose when the text contains `FAIL`
(before any output when invoked, after the first delta when streamed).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from mlflow.genai.agent_server import AgentServer, invoke, stream
from mlflow.types.responses import (
    ResponsesAgentRequest,
    ResponsesAgentResponse,
    ResponsesAgentStreamEvent,
    create_text_delta,
    create_text_output_item,
)

ITEM_ID = "msg_conformance_1"


def _last_user_text(request: ResponsesAgentRequest) -> str:
    text = ""
    for message in request.input:
        data = message.model_dump()
        if data.get("role") != "user":
            continue
        content = data.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return text


def _answer(text: str) -> str:
    return f"echo: {text}"


@invoke()
async def answer(request: ResponsesAgentRequest) -> ResponsesAgentResponse:
    text = _last_user_text(request)
    if "FAIL" in text:
        raise RuntimeError(f"agent failed on purpose for: {text}")
    return ResponsesAgentResponse(
        output=[create_text_output_item(_answer(text), ITEM_ID)],
        custom_outputs=request.custom_inputs,
    )


@stream()
async def answer_stream(
    request: ResponsesAgentRequest,
) -> AsyncGenerator[ResponsesAgentStreamEvent, None]:
    text = _last_user_text(request)
    full = _answer(text)
    words = full.split(" ")
    for index, word in enumerate(words):
        delta = word if index == len(words) - 1 else word + " "
        yield ResponsesAgentStreamEvent(**create_text_delta(delta, ITEM_ID))
        if "FAIL" in text:
            raise RuntimeError(f"agent failed on purpose mid-stream for: {text}")
    yield ResponsesAgentStreamEvent(
        type="response.output_item.done",
        item=create_text_output_item(full, ITEM_ID),
        custom_outputs=request.custom_inputs,
    )


agent_server = AgentServer("ResponsesAgent")
app = agent_server.app
