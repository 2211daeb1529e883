"""The one per-row outcome shape every protocol parses into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agentbatch.agent.redact import redact

# Error kinds counted in the run's stats. `http` errors are counted by status as `http_<status>`.
FailureKind = Literal[
    "http", "timeout", "connection", "parse", "stream", "agent", "too_large", "request"
]

MESSAGE_CHARS = 500


# Not frozen: one of each per row on the hot path, and a frozen dataclass's __init__ costs 3x.
@dataclass(slots=True)
class AgentReply:
    """A successful answer. `value` is the text, or the typed dict when a response format is set."""

    text: str
    custom_outputs: Any = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    trace_id: str | None = None
    value: Any = None


@dataclass(slots=True)
class RowFailure:
    """A failed attempt. `retryable` says whether sending the row again may help."""

    kind: FailureKind
    message: str
    retryable: bool = False
    status: int | None = None
    # The usage a reply that came and was paid for reported, though it holds no answer (a
    # content filter, a response_format it does not match): the budget and the bill count it.
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def stats_key(self) -> str:
        return f"http_{self.status}" if self.kind == "http" and self.status else self.kind


def truncate(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, masked first when cut: a secret cut in two is no
    longer one the whole message's masking finds."""
    return text if len(text) <= limit else redact(text)[:limit] + "…"


_INT64_LIMIT = 2**63


def as_int(value: Any) -> int | None:
    """A token count that fits the BIGINT token columns, else None (a server may send anything:
    a negative count would take tokens off a run's budget)."""
    if type(value) is int:  # the common case first (a bool is not of type int)
        return value if 0 <= value < _INT64_LIMIT else None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value < _INT64_LIMIT:
        return value
    return None


def usage_tokens(usage: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens from a Responses (`input_tokens`) or Chat (`prompt_tokens`) usage."""
    if not isinstance(usage, dict):
        return None, None
    inp = usage.get("input_tokens", usage.get("prompt_tokens"))
    out = usage.get("output_tokens", usage.get("completion_tokens"))
    if (
        type(inp) is int
        and type(out) is int
        and 0 <= inp < _INT64_LIMIT
        and 0 <= out < _INT64_LIMIT
    ):
        return inp, out  # the common usage: as_int of each is itself
    return as_int(inp), as_int(out)


def trace_id_of(payload: Any) -> str | None:
    """The MLflow trace id from the documented fields only.

    Model Serving: `databricks_output.trace.info.trace_id` (or `request_id`, its older name).
    MLflow AgentServer with `x-mlflow-return-trace-id`: `metadata.trace_id`, or a stream event
    `{"trace_id": ...}`.
    """
    if not isinstance(payload, dict):
        return None
    output = payload.get("databricks_output")
    if isinstance(output, dict):
        trace = output.get("trace")
        info = trace.get("info") if isinstance(trace, dict) else None
        if isinstance(info, dict):
            found = info.get("trace_id") or info.get("request_id")
            if isinstance(found, str) and found:
                return found
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("trace_id"), str):
        return str(metadata["trace_id"])
    return None


def message_text(item: Any) -> str | None:
    """The text of a Responses output item of type `message` (its `output_text` parts)."""
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        return None
    if item.get("role", "assistant") != "assistant":
        return None
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    if len(content) == 1:  # the common message: one part, its text is the message's
        part = content[0]
        if isinstance(part, dict) and part.get("type") in ("output_text", "text"):
            text = part.get("text")
            if isinstance(text, str):
                return text
        return None
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in ("output_text", "text"):
            text = part.get("text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts) if parts else None


def chat_content_text(content: Any) -> str | None:
    """Chat message content: a string, or a list of parts (text parts joined, reasoning skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        return "".join(parts) if parts else None
    return None


def chat_choice_failure(
    text: str | None, finish_reason: Any, tool_calls: bool
) -> RowFailure | None:
    """Why a Chat Completions choice holds no answer, or None; streamed or not, the same rule.

    `finish_reason` is `content_filter` "if content was omitted due to a flag from our content
    filters", `tool_calls` "if the model called a tool" (openai-python
    `types/chat/chat_completion.py` and `chat_completion_chunk.py`, `Choice.finish_reason`).
    """
    if finish_reason == "content_filter":
        return RowFailure(
            "agent", "reply withheld by a content filter (finish_reason content_filter)"
        )
    if not text and (tool_calls or finish_reason == "tool_calls"):
        reason = f" (finish_reason {finish_reason})" if isinstance(finish_reason, str) else ""
        return RowFailure("parse", f"reply has no answer text: only tool calls{reason}")
    return None


def incomplete_failure(response: Any) -> RowFailure | None:
    """Why a Responses reply that ended `incomplete` holds no answer, or None; streamed or not,
    the same rule.

    `incomplete_details.reason` is `max_output_tokens` or `content_filter` (openai-python
    `types/responses/response.py`, `IncompleteDetails.reason`): text cut by a filter is what the
    filter left, a row error as a Chat choice's `finish_reason` `content_filter` is (see
    chat_choice_failure); text cut at the token limit stays the answer, as `length` does.
    """
    if not isinstance(response, dict) or response.get("status") != "incomplete":
        return None
    details = response.get("incomplete_details")
    if isinstance(details, dict) and details.get("reason") == "content_filter":
        return RowFailure(
            "agent", "reply withheld by a content filter (incomplete_details.reason content_filter)"
        )
    return None


def error_message(payload: Any) -> str | None:
    """The human message of an error payload in any of the common shapes, else None."""
    if isinstance(payload, str):
        return payload or None
    if not isinstance(payload, dict):
        return None
    for key in ("message", "detail", "error_message"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            code = payload.get("error_code") or payload.get("code")
            return f"{code}: {value}" if isinstance(code, str) and code else value
    inner = payload.get("error")
    if inner is not None and inner is not payload:
        return error_message(inner)
    detail = payload.get("detail")
    if isinstance(detail, list | dict):
        return truncate(str(detail))
    return None
