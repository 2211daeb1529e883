"""Server-sent event streams in the three styles agents use.

- `openai`: the OpenAI Responses lifecycle with `event:` lines (response.created ...
  response.completed carrying usage); no `[DONE]`.
- `mlflow`: what MLflow's AgentServer sends for a ResponsesAgent: data-only lines of
  `response.output_text.delta` and `response.output_item.done`, an optional `{"trace_id": ...}`,
  then `data: [DONE]`; a failure is `data: {"error": "<message>"}` inside the 200 stream.
- `chat`: Chat Completions `chat.completion.chunk` deltas, then `data: [DONE]`.

Each builder returns the whole stream as frames (bytes); `error_after` replaces everything
after that many text deltas with the style's in-stream error.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from agentbatch.testing.inbound import AgentCall
from agentbatch.testing.replies import (
    Reply,
    databricks_output,
    output_item,
    responses_body,
)

StreamStyle = Literal["openai", "mlflow", "chat"]
STREAM_ERROR_MESSAGE = "injected fault: the stream failed"
_DONE = b"data: [DONE]\n\n"


def text_deltas(answer: str) -> list[str]:
    """The answer cut into word-sized deltas that join back to it exactly."""
    return re.findall(r"\s*\S+\s*", answer) or [answer]


def data_frame(payload: dict[str, Any], *, compact: bool = True) -> bytes:
    separators = (",", ":") if compact else (", ", ": ")
    return b"data: " + json.dumps(payload, separators=separators).encode() + b"\n\n"


def event_frame(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()


def openai_frames(
    call: AgentCall, reply: Reply, *, model: str, error_after: int | None = None
) -> list[bytes]:
    final = responses_body(call, reply, model=model, minimal=False)
    started = {**final, "status": "in_progress", "output": []}
    for name in ("usage", "custom_outputs", "databricks_output", "metadata"):
        started.pop(name, None)
    item = output_item(reply)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": reply.item_id,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
    ]
    for index, delta in enumerate(text_deltas(reply.answer)):
        if error_after is not None and index >= error_after:
            events.append(
                {
                    "type": "error",
                    "code": "server_error",
                    "message": STREAM_ERROR_MESSAGE,
                    "param": None,
                }
            )
            return _numbered(events)
        events.append(
            {
                "type": "response.output_text.delta",
                "item_id": reply.item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            }
        )
    events += [
        {
            "type": "response.output_text.done",
            "item_id": reply.item_id,
            "output_index": 0,
            "content_index": 0,
            "text": reply.answer,
            "logprobs": [],
        },
        {
            "type": "response.content_part.done",
            "item_id": reply.item_id,
            "output_index": 0,
            "content_index": 0,
            "part": item["content"][0],
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    return _numbered(events)


def _numbered(events: list[dict[str, Any]]) -> list[bytes]:
    return [event_frame({**event, "sequence_number": n}) for n, event in enumerate(events)]


def mlflow_frames(call: AgentCall, reply: Reply, *, error_after: int | None = None) -> list[bytes]:
    frames: list[bytes] = []
    for index, delta in enumerate(text_deltas(reply.answer)):
        if error_after is not None and index >= error_after:
            frames += [data_frame({"error": STREAM_ERROR_MESSAGE}, compact=False), _DONE]
            return frames
        event = {"type": "response.output_text.delta", "item_id": reply.item_id, "delta": delta}
        frames.append(data_frame(event, compact=False))
    done: dict[str, Any] = {
        "type": "response.output_item.done",
        "item": output_item(reply, status=None),
    }
    if call.custom_inputs is not None:
        done["custom_outputs"] = call.custom_inputs
    if reply.databricks_trace:
        done["databricks_output"] = databricks_output(reply)
    frames.append(data_frame(done, compact=False))
    if reply.metadata_trace:
        frames.append(data_frame({"trace_id": reply.trace_id}, compact=False))
    frames.append(_DONE)
    return frames


def chat_frames(
    call: AgentCall, reply: Reply, *, model: str, error_after: int | None = None
) -> list[bytes]:
    base = {
        "id": f"chatcmpl-{reply.response_id[5:]}",
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": call.model or model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    frames = [data_frame(chunk({"role": "assistant", "content": ""}))]
    for index, delta in enumerate(text_deltas(reply.answer)):
        if error_after is not None and index >= error_after:
            error = {"message": STREAM_ERROR_MESSAGE, "type": "server_error", "code": "500"}
            frames += [data_frame({"error": error}), _DONE]
            return frames
        frames.append(data_frame(chunk({"content": delta})))
    last = chunk({}, "stop")
    last["usage"] = {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }
    if reply.databricks_trace:
        last["databricks_output"] = databricks_output(reply)
    frames += [data_frame(last), _DONE]
    return frames


def stream_frames(
    style: StreamStyle,
    call: AgentCall,
    reply: Reply,
    *,
    model: str,
    error_after: int | None = None,
) -> list[bytes]:
    if style == "openai":
        return openai_frames(call, reply, model=model, error_after=error_after)
    if style == "mlflow":
        return mlflow_frames(call, reply, error_after=error_after)
    return chat_frames(call, reply, model=model, error_after=error_after)
