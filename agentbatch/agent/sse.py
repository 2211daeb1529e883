"""Parse a streamed (Server-Sent Events) reply into an AgentReply or a RowFailure (pure).

Three real styles are handled:

* MLflow AgentServer: `data:` lines only (Responses stream events), no `response.created` /
  `response.completed`, a `{"trace_id": ...}` event when asked, ends with `data: [DONE]`; an agent
  failure arrives as `data: {"error": ...}` inside an HTTP 200 stream.
* OpenAI-style Responses servers: `event:` + `data:` lines, the full lifecycle ending with
  `response.completed` (usage inside), errors as `response.failed` or `error`; no `[DONE]`.
* Chat Completions: `chat.completion.chunk` deltas, then `[DONE]`.

Final text comes from `response.output_item.done` message items; deltas are only a fallback. An
in-stream error is a row error, never a success with partial text. A stream that ends without a
completion event or `[DONE]` was truncated: a retryable error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agentbatch.agent.replies import (
    AgentReply,
    RowFailure,
    chat_content_text,
    error_message,
    message_text,
    trace_id_of,
    truncate,
    usage_tokens,
)
from agentbatch.agent.responses import MESSAGE_SEPARATOR, loads, preview

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_DONE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.done"})


@dataclass
class _Event:
    name: str | None
    data: str
    # False when the body ended before the event's terminating blank line.
    complete: bool


def iter_events(body: bytes) -> Iterator[_Event]:
    """SSE events of a body: `data:` lines joined by newlines, dispatched on a blank line."""
    text = body.decode("utf-8", "replace")
    name: str | None = None
    data: list[str] = []
    for line in _LINE_BREAK.split(text):
        if not line:
            if data:
                yield _Event(name, "\n".join(data), True)
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field_name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field_name == "data":
            data.append(value)
        elif field_name == "event":
            name = value
    if data:
        yield _Event(name, "\n".join(data), False)


@dataclass
class _State:
    messages: list[str] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    chat_parts: list[str] = field(default_factory=list)
    saw_chat: bool = False
    finished: bool = False
    failure: RowFailure | None = None
    custom_outputs: Any = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    trace_id: str | None = None
    final_output: list[Any] | None = None


def parse_sse(body: bytes) -> AgentReply | RowFailure:
    state = _State()
    for event in iter_events(body):
        if event.data.strip() == "[DONE]":
            state.finished = True
            break
        try:
            payload = loads(event.data)
        except ValueError:
            if not event.complete:
                break  # a cut-off last event: the stream was truncated
            return RowFailure("stream", f"stream event is not JSON: {preview(event.data)}")
        if not isinstance(payload, dict):
            continue
        _apply(state, event.name, payload)
        if state.failure is not None:
            return state.failure
        if state.finished:
            break
    if not state.finished:
        return RowFailure(
            "stream", "stream ended before completion (truncated reply)", retryable=True
        )
    return _reply(state)


def _apply(state: _State, name: str | None, ev: dict[str, Any]) -> None:
    kind = ev.get("type") if isinstance(ev.get("type"), str) else name
    _collect_metadata(state, ev)
    if kind == "error" or (ev.get("error") and kind in (None, "error")):
        message = error_message(ev.get("error")) or error_message(ev) or "agent failed"
        state.failure = RowFailure("agent", f"agent error in stream: {truncate(message)}")
        return
    if kind == "response.failed":
        response = ev.get("response")
        inner = response.get("error") if isinstance(response, dict) else None
        message = error_message(inner) or "response failed"
        state.failure = RowFailure("agent", f"agent error in stream: {truncate(message)}")
        return
    if kind == "response.output_text.delta":
        delta = ev.get("delta")
        if isinstance(delta, str):
            state.deltas.append(delta)
    elif kind == "response.output_item.done":
        text = message_text(ev.get("item"))
        if text is not None:
            state.messages.append(text)
    elif kind in _DONE_EVENTS:
        state.finished = True
        response = ev.get("response")
        if isinstance(response, dict):
            _collect_metadata(state, response)
            if isinstance(response.get("output"), list):
                state.final_output = response["output"]
    elif isinstance(ev.get("choices"), list):
        state.saw_chat = True
        for choice in ev["choices"]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                text = chat_content_text(delta.get("content"))
                if text:
                    state.chat_parts.append(text)


def _collect_metadata(state: _State, ev: dict[str, Any]) -> None:
    if ev.get("custom_outputs") is not None:
        state.custom_outputs = ev["custom_outputs"]
    inp, out = usage_tokens(ev.get("usage"))
    if inp is not None:
        state.input_tokens = inp
    if out is not None:
        state.output_tokens = out
    trace = ev.get("trace_id") if isinstance(ev.get("trace_id"), str) else trace_id_of(ev)
    if trace:
        state.trace_id = trace


def _reply(state: _State) -> AgentReply | RowFailure:
    text: str | None = None
    if state.messages:
        text = MESSAGE_SEPARATOR.join(state.messages)
    elif state.final_output is not None:
        texts = [t for t in (message_text(item) for item in state.final_output) if t is not None]
        text = MESSAGE_SEPARATOR.join(texts) if texts else None
    if text is None and state.deltas:
        text = "".join(state.deltas)
    if text is None and state.saw_chat:
        text = "".join(state.chat_parts)
    if text is None:
        return RowFailure("parse", "stream completed without answer text")
    return AgentReply(
        text=text,
        custom_outputs=state.custom_outputs,
        input_tokens=state.input_tokens,
        output_tokens=state.output_tokens,
        trace_id=state.trace_id,
    )


def looks_finished(tail: bytes) -> bool:
    """True when the stream's last bytes end with `data: [DONE]` (lets the reader stop early)."""
    return tail.rstrip().endswith(b"data: [DONE]") or tail.rstrip().endswith(b"data:[DONE]")


__all__ = ["iter_events", "looks_finished", "parse_sse"]
