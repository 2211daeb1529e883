"""JSON bodies the agent server sends: Responses, Chat Completions, ChatAgent, predictions, errors.

The shapes follow the real wire formats (OpenAI Responses and Chat Completions as Databricks
Model Serving speaks them, and what MLflow's AgentServer and scoring server send); see
tests/conformance/README.md for the captured originals.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Literal

from agentbatch.testing.inbound import AgentCall

ChatReply = Literal["completion", "chat_agent"]

# Databricks REST error codes by HTTP status.
ERROR_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class Reply:
    """One answer with the ids and counts every wire format needs."""

    answer: str
    response_id: str
    item_id: str
    trace_id: str
    created: int
    input_tokens: int
    output_tokens: int
    # Where the trace id goes: Databricks `databricks_output`, MLflow `metadata`, or nowhere.
    databricks_trace: bool
    metadata_trace: bool


def make_reply(call: AgentCall, answer: str, attempt: int, *, metadata_trace: bool) -> Reply:
    digest = hashlib.blake2b(f"{call.key}|{attempt}".encode(), digest_size=16).hexdigest()
    return Reply(
        answer=answer,
        response_id=f"resp_{digest[:24]}",
        item_id=f"msg_{digest[8:32]}",
        trace_id=f"tr-{digest}",
        created=int(time.time()),
        input_tokens=len(call.context.split()),
        output_tokens=len(answer.split()),
        databricks_trace=call.return_trace,
        metadata_trace=metadata_trace,
    )


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error_code": ERROR_CODES.get(status, "UNKNOWN"), "message": message}


def output_item(reply: Reply, *, status: str | None = "completed") -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message", "id": reply.item_id}
    if status is not None:
        item["status"] = status
    item["role"] = "assistant"
    item["content"] = [{"type": "output_text", "text": reply.answer, "annotations": []}]
    return item


def responses_usage(reply: Reply) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


def databricks_output(reply: Reply) -> dict[str, Any]:
    return {
        "trace": {
            "info": {
                "trace_id": reply.trace_id,
                "request_time": f"{reply.created}",
                "state": "OK",
            },
            "data": {"spans": []},
        }
    }


def responses_body(
    call: AgentCall, reply: Reply, *, model: str, minimal: bool, status: str = "completed"
) -> dict[str, Any]:
    """A Responses API body; `minimal` answers like MLflow's AgentServer (no id, usage, model)."""
    body: dict[str, Any]
    if minimal:
        body = {"object": "response", "output": [output_item(reply, status=None)]}
    else:
        body = {
            "id": reply.response_id,
            "object": "response",
            "created_at": reply.created,
            "status": status,
            "model": call.model or model,
            "output": [output_item(reply)],
            "usage": responses_usage(reply),
        }
    _add_extras(body, call, reply)
    return body


def failed_responses_body(call: AgentCall, reply: Reply, *, model: str) -> dict[str, Any]:
    """A 200 Responses body whose generation failed (what a non-streamed stream error becomes)."""
    body = responses_body(call, reply, model=model, minimal=False, status="failed")
    body["output"] = []
    body["error"] = {"code": "server_error", "message": "injected fault: the generation failed"}
    return body


def chat_completion_body(call: AgentCall, reply: Reply, *, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"chatcmpl-{reply.response_id[5:]}",
        "object": "chat.completion",
        "created": reply.created,
        "model": call.model or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
    }
    if reply.databricks_trace:
        body["databricks_output"] = databricks_output(reply)
    return body


def chat_agent_body(call: AgentCall, reply: Reply) -> dict[str, Any]:
    """What a legacy MLflow ChatAgent answers on Model Serving."""
    body: dict[str, Any] = {
        "messages": [{"role": "assistant", "content": reply.answer, "id": reply.item_id}]
    }
    _add_extras(body, call, reply)
    return body


def predictions_body(answers: list[str]) -> dict[str, Any]:
    return {"predictions": answers}


def _add_extras(body: dict[str, Any], call: AgentCall, reply: Reply) -> None:
    if call.custom_inputs is not None:
        body["custom_outputs"] = call.custom_inputs
    if reply.databricks_trace:
        body["databricks_output"] = databricks_output(reply)
    if reply.metadata_trace:
        body["metadata"] = {"trace_id": reply.trace_id}
