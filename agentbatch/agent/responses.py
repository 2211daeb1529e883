"""Parse a non-streaming reply body (Responses, Chat Completions, ChatAgent, custom model) into an
AgentReply or a RowFailure (pure).

Bodies may be minimal: MLflow's AgentServer returns only `output` and `custom_outputs`, with no id,
usage or status.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from msgspec.json import decode as _fast_decode

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
from agentbatch.agent.response_format import AnswerParseError, ResponseFormat

# First bytes that rule out a BOM and UTF-16/32-BE; a zero second byte is UTF-16/32-LE.
_PLAIN_UTF8_STARTS = frozenset(bytes([b]) for b in b'{["-0123456789tfn \t\r\n')

# Replies nested deeper than this are left to the standard library alone: that deep, whether a
# parser refuses one depends on the stack, and the two count their depth differently. A reply of
# twice as many characters or fewer cannot nest deeper (most replies: their brackets go uncounted).
_FAST_MAX_DEPTH = 500


def loads(data: bytes | str) -> Any:
    """A reply's JSON exactly as the standard library's `json.loads` reads it.

    msgspec parses the common reply in a fifth of the time, and what it accepts it reads as the
    standard library does (integers of any size, the last of repeated keys): what it refuses
    (NaN and Infinity, a number beyond a float's range, a lone surrogate, a byte order mark,
    invalid UTF-8, whatever is not JSON) is read again by the standard library, which decides.
    tests/agent/test_reply_json.py holds the two to the same answers."""
    if len(data) <= 2 * _FAST_MAX_DEPTH or _brackets(data) <= _FAST_MAX_DEPTH:
        try:
            return _fast_decode(data)
        except Exception:  # refused (or not one it reads the same): the standard library decides
            pass
    return _standard_loads(data)


def _brackets(data: bytes | str) -> int:
    if isinstance(data, bytes):
        return data.count(b"[") + data.count(b"{")
    return data.count("[") + data.count("{")


def _standard_loads(data: bytes | str) -> Any:
    """The standard library's parser: big integers stay integers, NaN and Infinity are read."""
    try:
        if isinstance(data, bytes) and data[:1] in _PLAIN_UTF8_STARTS and data[1:2] != b"\0":
            # What `json.loads(bytes)` would decode it as, without its encoding detection.
            data = data.decode("utf-8")
        return json.loads(data)
    except RecursionError:  # a hostile reply nested deeper than the stack: not JSON to us
        raise ValueError("JSON nested too deeply") from None


# json.dumps with any option builds a new JSONEncoder on every call (several microseconds):
# per row, one made once gives the same text (json.dumps(value, ensure_ascii=False)).
_TEXT_JSON = json.JSONEncoder(ensure_ascii=False)

MESSAGE_SEPARATOR = "\n\n"


def join_messages(texts: list[str]) -> str | None:
    """The answer of a reply with several assistant messages, on every path: their texts in order,
    empty ones left out ("" when all are empty, None when there is none)."""
    answer = [t for t in texts if t]
    if answer:
        return MESSAGE_SEPARATOR.join(answer)
    return "" if texts else None


def preview(body: bytes | str, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return truncate(" ".join(text.split()), limit)


def parse_json_reply(body: bytes) -> AgentReply | RowFailure:
    try:
        payload = loads(body)
    except UnicodeDecodeError as err:  # a ValueError too: JSON text in another encoding
        return RowFailure(
            "parse", f"reply is not UTF-8 (byte {err.start} of the body): {preview(body)}"
        )
    except ValueError:
        return RowFailure("parse", f"reply is not JSON: {preview(body)}")
    return reply_from_payload(payload)


def reply_from_payload(payload: Any) -> AgentReply | RowFailure:
    """Interpret a decoded reply object of any supported protocol."""
    if isinstance(payload, str):
        return AgentReply(text=payload)
    if not isinstance(payload, dict):
        return RowFailure("parse", f"unrecognised reply: {preview(json.dumps(payload))}")
    inp, out = usage_tokens(payload.get("usage"))
    failure = _failure_of(payload)
    if failure is None:
        text = _text_of(payload)
        if isinstance(text, RowFailure):
            failure = text
        elif text is None:
            failure = RowFailure(
                "parse", f"reply has no answer text: {preview(json.dumps(payload))}"
            )
        else:
            # By position (text, custom_outputs, input_tokens, output_tokens, trace_id): one is
            # built per row, and a keyword call costs twice as much.
            return AgentReply(text, payload.get("custom_outputs"), inp, out, trace_id_of(payload))
    # A reply without an answer may still have been paid for: its usage goes with the failure.
    return dataclasses.replace(failure, input_tokens=inp, output_tokens=out)


_ANSWER_KEYS = ("output", "choices", "messages", "predictions")


def _failure_of(payload: dict[str, Any]) -> RowFailure | None:
    status = payload.get("status")
    if (
        status != "failed"
        and status != "incomplete"
        and not payload.get("error")
        and not payload.get("error_code")
    ):
        return None  # the common reply: nothing below applies
    filtered = incomplete_failure(payload)
    if filtered is not None:
        return filtered
    has_answer = any(payload.get(k) for k in _ANSWER_KEYS)
    if status == "failed" or (payload.get("error") and not has_answer):
        message = error_message(payload.get("error")) or error_message(payload) or "agent failed"
        return RowFailure("agent", f"agent error: {truncate(message)}")
    if payload.get("error_code") and not has_answer:
        return RowFailure("agent", f"agent error: {truncate(error_message(payload) or '')}")
    return None


def _text_of(payload: dict[str, Any]) -> str | RowFailure | None:
    output = payload.get("output")
    if isinstance(output, list):
        if len(output) == 1:
            return message_text(output[0])  # join_messages of one text (or none) is that text
        texts = []
        for item in output:
            text = message_text(item)
            if text is not None:
                texts.append(text)
        return join_messages(texts)
    choices = payload.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return _choice_text(choices[0])
    messages = payload.get("messages")
    if isinstance(messages, list):
        return _chat_agent_text(messages)
    if "predictions" in payload:
        predictions = payload["predictions"]
        if isinstance(predictions, list) and len(predictions) == 1:
            predictions = predictions[0]
        if isinstance(predictions, str):
            return predictions
        return _TEXT_JSON.encode(predictions)
    return None


def _choice_text(choice: dict[str, Any]) -> str | RowFailure | None:
    message = choice.get("message")
    if isinstance(message, dict):
        text = chat_content_text(message.get("content"))
        tool_calls = bool(message.get("tool_calls") or message.get("function_call"))
    else:
        text = choice.get("text") if isinstance(choice.get("text"), str) else None
        tool_calls = False
    return chat_choice_failure(text, choice.get("finish_reason"), tool_calls) or text


def _chat_agent_text(messages: list[Any]) -> str | None:
    """A ChatAgent reply (mlflow/types/agent.py `ChatAgentResponse.messages`, where `content` may
    be None when `tool_calls` is set): the text of every assistant message after the last user
    message, joined as the Responses path joins its output messages. Tool messages and assistant
    messages that call tools are steps, not the answer, as MLflow's own conversion to Responses
    output drops the content beside tool calls (mlflow/types/responses.py
    `_cc_stream_to_responses_stream`)."""
    start = 0
    for i, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            start = i + 1
    texts = []
    for message in messages[start:]:
        if _is_answer_message(message):
            text = chat_content_text(message.get("content"))
            if text is not None:
                texts.append(text)
    return join_messages(texts)


def _is_answer_message(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and message.get("role") == "assistant"
        and not message.get("tool_calls")
    )


def apply_response_format(reply: AgentReply, fmt: ResponseFormat | None) -> AgentReply | RowFailure:
    """Type the answer: parse the text into the declared struct, or a parse RowFailure."""
    if fmt is None:
        return reply
    candidates = [reply.text]
    # Agents that emit several messages put the structured answer in the last one.
    if MESSAGE_SEPARATOR in reply.text:
        candidates.append(reply.text.rsplit(MESSAGE_SEPARATOR, 1)[1])
    error: AnswerParseError | None = None
    for text in candidates:
        try:
            value = fmt.parse(text)
        except AnswerParseError as e:
            error = error or e
            continue
        return AgentReply(
            text=reply.text,
            custom_outputs=reply.custom_outputs,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            trace_id=reply.trace_id,
            value=value,
        )
    return RowFailure(
        "parse",
        f"response_format: {error}",
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
    )
