"""Parse a streamed (Server-Sent Events) reply into an AgentReply or a RowFailure (pure).

Three real styles are handled:

* MLflow AgentServer: `data:` lines only (Responses stream events), no `response.created` /
  `response.completed`, a `{"trace_id": ...}` event when asked, ends with `data: [DONE]`; an agent
  failure arrives as `data: {"error": str(e)}` inside an HTTP 200 stream, `""` for an exception
  without a message (a bare `TimeoutError()`).
* OpenAI-style Responses servers: `event:` + `data:` lines, the full lifecycle ending with
  `response.completed` (usage inside), errors as `response.failed` or `error`; no `[DONE]`.
* Chat Completions: `chat.completion.chunk` deltas, then `[DONE]`; only choice 0 is kept, as the
  non-streamed reply keeps `choices[0]`.

Final text comes from `response.output_item.done` message items; deltas are only a fallback. An
in-stream error is a row error, never a success with partial text: MLflow's string `error` is
retryable (the same agent not streamed answers HTTP 500), other in-stream errors are not. A stream
that ends without a completion event or `[DONE]` was truncated: a retryable error.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agentbatch.agent.replies import (
    AgentReply,
    RowFailure,
    chat_choice_failure,
    chat_content_text,
    error_message,
    incomplete_failure,
    message_text,
    trace_id_of,
    truncate,
    usage_tokens,
)
from agentbatch.agent.responses import join_messages, loads, preview

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"
_BOM_BYTES = _BOM.encode()
_DONE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.done"})


@dataclass
class _Event:
    name: str | None
    data: str
    # False when the body ended before the event's terminating blank line.
    complete: bool


def _valid_utf8(body: bytes) -> bool:
    """UTF-8 but for a character cut at the very end (a stream read up to its end event may
    stop there: parse_sse reads nothing after that event)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.reason == "unexpected end of data"
    return True


def iter_events(body: bytes) -> Iterator[_Event]:
    """SSE events of a body: `data:` lines joined by newlines, dispatched on a blank line."""
    text = body.decode("utf-8", "replace")
    if text.startswith(_BOM):
        # An event stream is read with "UTF-8 decode", which drops a leading byte order mark
        # (WHATWG HTML, server-sent events, "Parsing an event stream"); kept, it would make the
        # first line's field name `\ufeffdata` and lose the first event.
        text = text[1:]
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
    # Choice 0 of a Chat Completions stream: its text, whether any came, its tool calls and end.
    chat_parts: list[str] = field(default_factory=list)
    saw_chat: bool = False
    chat_text: bool = False
    chat_tool_calls: bool = False
    chat_finish: Any = None
    finished: bool = False
    failure: RowFailure | None = None
    custom_outputs: Any = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    trace_id: str | None = None
    final_output: list[Any] | None = None


def parse_sse(body: bytes) -> AgentReply | RowFailure:
    if not _valid_utf8(body):
        # WHATWG decodes a stream's bad bytes as U+FFFD: stored, the answer would be misquoted.
        return RowFailure("parse", f"stream is not UTF-8 text: {preview(body)}")
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
            return _with_usage(state.failure, state)
        if state.finished:
            break
    if not state.finished:
        # Paid for all the same when its usage came before the cut (a Chat stream's usage chunk
        # comes before `[DONE]`): sent again, the row's usage adds it (worker.py, Outcome).
        return _with_usage(
            RowFailure(
                "stream", "stream ended before completion (truncated reply)", retryable=True
            ),
            state,
        )
    return _reply(state)


def _apply(state: _State, name: str | None, ev: dict[str, Any]) -> None:
    kind = ev.get("type") if isinstance(ev.get("type"), str) else name
    _collect_metadata(state, ev)
    # The key is the signal, not its value: MLflow sends `{"error": ""}` for a message-less error.
    # A Databricks error object (`{"error_code": ..., "message": ...}`) is one as well, as it is
    # in a reply not streamed (responses.py, `_failure_of`).
    if kind == "error" or (
        kind is None
        and (ev.get("error") is not None or (ev.get("error_code") and not ev.get("choices")))
    ):
        state.failure = _stream_error(ev)
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
        state.failure = incomplete_failure(response)
        if isinstance(response, dict):
            _collect_metadata(state, response)
            if isinstance(response.get("output"), list):
                state.final_output = response["output"]
    elif isinstance(ev.get("choices"), list):
        state.saw_chat = True
        for choice in ev["choices"]:
            # With `n` > 1 the choices' chunks interleave, each naming its `index`
            # (openai-python `types/chat/chat_completion_chunk.py`, `Choice.index`).
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                _apply_chat_choice(state, choice)


def _apply_chat_choice(state: _State, choice: dict[str, Any]) -> None:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        text = chat_content_text(delta.get("content"))
        if text is not None:
            state.chat_text = True
            if text:
                state.chat_parts.append(text)
        if delta.get("tool_calls") or delta.get("function_call"):
            state.chat_tool_calls = True
    if choice.get("finish_reason") is not None:
        state.chat_finish = choice["finish_reason"]


def _stream_error(ev: dict[str, Any]) -> RowFailure:
    error = ev.get("error")
    message = error_message(error) or error_message(ev) or "the agent failed without a message"
    # MLflow's AgentServer streams `{"error": str(e)}` where the same agent not streamed answers
    # HTTP 500 (mlflow/genai/agent_server/server.py, `_generate` and `_handle_invoke_request`):
    # retried as that 500 is.
    mlflow_style = isinstance(error, str) and "type" not in ev
    return RowFailure(
        "agent", f"agent error in stream: {truncate(message)}", retryable=mlflow_style
    )


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


def _with_usage(failure: RowFailure, state: _State) -> RowFailure:
    """A failure with the usage the stream reported so far (a reply withheld by a content
    filter was paid for all the same)."""
    if state.input_tokens is None and state.output_tokens is None:
        return failure
    return dataclasses.replace(
        failure, input_tokens=state.input_tokens, output_tokens=state.output_tokens
    )


def _reply(state: _State) -> AgentReply | RowFailure:
    text: str | None = None
    if state.messages:
        text = join_messages(state.messages)
    elif state.final_output is not None:
        text = join_messages(
            [t for t in (message_text(item) for item in state.final_output) if t is not None]
        )
    if text is None and state.deltas:
        text = "".join(state.deltas)
    if text is None and state.saw_chat:
        text = "".join(state.chat_parts) if state.chat_text else None
        failure = chat_choice_failure(text, state.chat_finish, state.chat_tool_calls)
        if failure is not None:
            return _with_usage(failure, state)
    if text is None:
        return RowFailure("parse", "stream completed without answer text")
    return AgentReply(
        text=text,
        custom_outputs=state.custom_outputs,
        input_tokens=state.input_tokens,
        output_tokens=state.output_tokens,
        trace_id=state.trace_id,
    )


# The start of an event after which parse_sse reads nothing more, at the start of a line:
# `data: [DONE]`; a Responses terminal or error event, named by its `event:` line or by the
# `type` its data starts with; MLflow's `data: {"error": ...}`. Quotes inside a JSON string are
# escaped and a data line holds no raw line break, so an answer's text cannot look like one.
_TERMINAL = re.compile(
    rb"\n(?:(?P<done>data: ?\[DONE\])"
    rb"|event: ?(?:response\.(?:completed|incomplete|failed|done)|error) *\r?\n"
    rb'|data: ?\{ ?"(?:type" ?: ?"(?:response\.(?:completed|incomplete|failed|done)|error)"'
    rb'|error" ?: ?["{]))'
)
_BLANK_LINE = re.compile(rb"\n\r?\n")
# Bytes kept from one chunk to the next: more than the longest marker above.
_SEAM = 64
# A chunk up to this size is scanned joined to the kept bytes (one small copy, one scan); a
# larger one is not copied.
_JOINED_MAX = 4096


class StreamEnd:
    """Tells, chunk by chunk, when a stream holds its end, so the reader need not wait for a
    server that keeps the connection open: `data: [DONE]`, or a terminal or error event (see
    _TERMINAL) once its blank line came. Comment lines (`: ping`) after it change nothing. A
    marker split over two chunks is found: the last bytes of each chunk are kept. Costs one
    regex scan of each chunk (in C) and a copy of a few bytes, or of a small chunk."""

    __slots__ = ("_pending", "_started", "_tail")

    def __init__(self) -> None:
        self._tail = b"\n"  # the stream starts at the start of a line
        # A terminal event began, its blank line has not come yet.
        self._pending = False
        self._started = False

    def feed(self, chunk: bytes) -> bool:
        if not self._started:
            self._started = True
            if chunk.startswith(_BOM_BYTES):  # dropped when parsed (see iter_events)
                chunk = chunk[len(_BOM_BYTES) :]
        tail = self._tail
        if len(chunk) <= _JOINED_MAX:
            data = tail + chunk
            self._tail = data[-_SEAM:]
            if self._pending:
                return _BLANK_LINE.search(data, len(tail) - 2) is not None
            found = _TERMINAL.search(data)
            return found is not None and self._found(data, found)
        # A large chunk is not copied: the seam (the kept bytes, the chunk's first bytes), then
        # the chunk itself.
        self._tail = chunk[-_SEAM:]
        seam = tail + chunk[:_SEAM]
        if self._pending:
            if _BLANK_LINE.search(seam, len(tail) - 2) is not None:
                return True
        else:
            found = _TERMINAL.search(seam)
            if found is not None and self._found(seam, found):
                return True
        if self._pending:
            # Past the seam's part of the chunk: the pending event began before it.
            return _BLANK_LINE.search(chunk, _SEAM - 2) is not None
        found = _TERMINAL.search(chunk)
        return found is not None and self._found(chunk, found)

    def _found(self, data: bytes, found: re.Match[bytes]) -> bool:
        """A terminal event begins at `found`: the stream ended, or will at its blank line."""
        if found.group("done") is not None:
            return True
        self._pending = True
        return _BLANK_LINE.search(data, found.start() + 1) is not None


def stream_ended(body: bytes) -> bool:
    """Whether a stream read so far holds its end as parse_sse reads it (`[DONE]`, a terminal
    event, an error event), so that parsing it gives the reply the whole stream would give."""
    state = _State()
    for event in iter_events(body):
        if event.data.strip() == "[DONE]":
            return True
        try:
            payload = loads(event.data)
        except ValueError:
            return False  # cut off, or not JSON: not an end parse_sse would reach
        if isinstance(payload, dict):
            _apply(state, event.name, payload)
            if state.failure is not None or state.finished:
                return True
    return False


__all__ = ["StreamEnd", "iter_events", "parse_sse", "stream_ended"]
