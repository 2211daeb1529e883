"""Reply parsing: JSON bodies of every protocol, and the three SSE styles (table-driven, with
payloads shaped like what real servers send)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentbatch.agent.replies import AgentReply, RowFailure
from agentbatch.agent.response_format import parse_response_format
from agentbatch.agent.responses import apply_response_format, parse_json_reply, reply_from_payload
from agentbatch.agent.sse import parse_sse
from tests.support.profiled import functions_called


def message(text: str, item_id: str = "msg_1") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


# --- JSON replies --------------------------------------------------------------------------

JSON_OK: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "MLflow AgentServer minimal: only output and custom_outputs",
        {"object": "response", "output": [message("hi")], "custom_outputs": {"route": "a"}},
        {"text": "hi", "custom_outputs": {"route": "a"}},
    ),
    (
        "Responses with usage and a Model Serving trace",
        {
            "id": "resp_1",
            "status": "completed",
            "output": [message("hi")],
            "usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
            "databricks_output": {"trace": {"info": {"trace_id": "tr-1"}, "data": {"spans": []}}},
        },
        {"text": "hi", "input_tokens": 7, "output_tokens": 2, "trace_id": "tr-1"},
    ),
    (
        "older traces name the id request_id",
        {
            "output": [message("x")],
            "databricks_output": {"trace": {"info": {"request_id": "tr-old"}}},
        },
        {"text": "x", "trace_id": "tr-old"},
    ),
    (
        "AgentServer trace id in metadata",
        {"output": [message("x")], "metadata": {"trace_id": "tr-meta"}},
        {"text": "x", "trace_id": "tr-meta"},
    ),
    (
        "tool calls before the answer; several messages are joined",
        {
            "output": [
                {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
                message("first", "m1"),
                message("second", "m2"),
            ]
        },
        {"text": "first\n\nsecond"},
    ),
    (
        "Chat Completions",
        {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "yo"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
        {"text": "yo", "input_tokens": 3, "output_tokens": 1},
    ),
    (
        "Chat content parts: reasoning skipped, text joined",
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "reasoning",
                                "summary": [{"type": "summary_text", "text": "hmm"}],
                            },
                            {"type": "text", "text": "answer"},
                        ],
                    }
                }
            ]
        },
        {"text": "answer"},
    ),
    (
        "ChatAgent: tool calls and tool messages are steps, not the answer",
        {
            "messages": [
                {"role": "user", "content": "question", "id": "0"},
                {
                    "role": "assistant",
                    "content": "thinking",
                    "id": "1",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
                },
                {"role": "tool", "content": "42", "id": "2", "tool_call_id": "c1"},
                {"role": "assistant", "content": "final", "id": "3"},
            ],
            "custom_outputs": {"k": 1},
        },
        {"text": "final", "custom_outputs": {"k": 1}},
    ),
    ("custom model, one prediction", {"predictions": ["label-a"]}, {"text": "label-a"}),
    ("custom model, structured predictions", {"predictions": {"a": 1}}, {"text": '{"a": 1}'}),
    (
        "a request id is not a trace id",
        {"id": "resp_9", "request_id": "req-9", "output": [message("x")]},
        {"text": "x", "trace_id": None},
    ),
    (
        "one message with one empty part: an empty answer",
        {"output": [message("")]},
        {"text": ""},
    ),
    (
        "one message whose one part is no text, then another message",
        {
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "refusal"}]},
                message("after"),
            ]
        },
        {"text": "after"},
    ),
    (
        "one message of parts, one of them text",
        {
            "output": [
                {
                    "type": "message",
                    "content": [{"type": "output_text", "text": 5}, {"type": "text", "text": "t"}],
                }
            ]
        },
        {"text": "t"},
    ),
    (
        "usage of a whole float and a big count",
        {"output": [message("x")], "usage": {"input_tokens": 2.0, "output_tokens": 2**63 - 1}},
        {"text": "x", "input_tokens": 2, "output_tokens": 2**63 - 1},
    ),
]


@pytest.mark.parametrize(("name", "payload", "expected"), JSON_OK, ids=[c[0] for c in JSON_OK])
def test_json_replies(name: str, payload: dict[str, Any], expected: dict[str, Any]) -> None:
    reply = parse_json_reply(json.dumps(payload).encode())
    assert isinstance(reply, AgentReply), reply
    for field, value in expected.items():
        assert getattr(reply, field) == value, field


JSON_FAIL: list[tuple[str, bytes, str, str]] = [
    ("not JSON", b"<html>502 Bad Gateway</html>", "parse", "not JSON"),
    ("truncated JSON", b'{"output": [', "parse", "not JSON"),
    ("error object in a 200", b'{"error": {"message": "agent blew up"}}', "agent", "agent blew up"),
    (
        "failed Responses status",
        b'{"status": "failed", "output": [], "error": {"code": "server_error", "message": "boom"}}',
        "agent",
        "boom",
    ),
    (
        "Databricks error shape in a 200",
        b'{"error_code": "BAD", "message": "nope"}',
        "agent",
        "BAD: nope",
    ),
    (
        "no message output",
        b'{"output": [{"type": "function_call", "name": "f"}]}',
        "parse",
        "no answer text",
    ),
    ("unknown shape", b'{"foo": 1}', "parse", "no answer text"),
    (
        "one message whose one part is no text",
        b'{"output": [{"type": "message", "content": [{"type": "output_text", "text": null}]}]}',
        "parse",
        "no answer text",
    ),
    (
        "one message from the user",
        b'{"output": [{"type": "message", "role": "user", "content": "q"}]}',
        "parse",
        "no answer text",
    ),
    ("a list", b"[1, 2]", "parse", "unrecognised"),
]


@pytest.mark.parametrize(
    ("name", "body", "kind", "message_part"), JSON_FAIL, ids=[c[0] for c in JSON_FAIL]
)
def test_json_failures(name: str, body: bytes, kind: str, message_part: str) -> None:
    failure = parse_json_reply(body)
    assert isinstance(failure, RowFailure)
    assert failure.kind == kind
    assert message_part in failure.message
    assert not failure.retryable


# --- SSE -----------------------------------------------------------------------------------


def data(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def event(payload: dict[str, Any]) -> str:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"


MLFLOW = (
    data({"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Hel"})
    + data({"type": "response.output_text.delta", "item_id": "msg_1", "delta": "lo"})
    + data({"type": "response.output_item.done", "item": message("Hello")})
    + data({"trace_id": "tr-7"})
    + data("[DONE]")
)
MLFLOW_CUSTOM = data(
    {"type": "response.output_item.done", "item": message("x"), "custom_outputs": {"a": 1}}
) + data("[DONE]")
MLFLOW_ERROR = (
    data({"type": "response.output_text.delta", "item_id": "msg_1", "delta": "partial "})
    + data({"error": "tool call failed: timeout"})
    + data("[DONE]")
)
RESPONSE = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
DONE_RESPONSE = {
    **RESPONSE,
    "status": "completed",
    "output": [message("Hello")],
    "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
}
OPENAI_PREFIX = (
    event({"type": "response.created", "sequence_number": 0, "response": RESPONSE})
    + event({"type": "response.in_progress", "sequence_number": 1, "response": RESPONSE})
    + event(
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**message(""), "status": "in_progress", "content": []},
        }
    )
    + event(
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "delta": "Hel",
        }
    )
    + event(
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "delta": "lo"}
    )
    + event({"type": "response.output_text.done", "item_id": "msg_1", "text": "Hello"})
)
OPENAI = (
    OPENAI_PREFIX
    + event({"type": "response.output_item.done", "output_index": 0, "item": message("Hello")})
    + event({"type": "response.completed", "response": DONE_RESPONSE})
)
OPENAI_FAILED = OPENAI_PREFIX + event(
    {
        "type": "response.failed",
        "response": {
            **RESPONSE,
            "status": "failed",
            "error": {"code": "server_error", "message": "model crashed"},
        },
    }
)
OPENAI_ERROR_EVENT = OPENAI_PREFIX + event(
    {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None}
)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


CHAT = (
    data(chunk({"role": "assistant", "content": ""}))
    + data(chunk({"content": "Hel"}))
    + data(chunk({"content": "lo"}))
    + data(chunk({}, "stop", usage={"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}))
    + data("[DONE]")
)

SSE_OK: list[tuple[str, str, dict[str, Any]]] = [
    ("MLflow AgentServer", MLFLOW, {"text": "Hello", "trace_id": "tr-7"}),
    ("MLflow custom_outputs on an event", MLFLOW_CUSTOM, {"text": "x", "custom_outputs": {"a": 1}}),
    ("OpenAI lifecycle", OPENAI, {"text": "Hello", "input_tokens": 5, "output_tokens": 2}),
    (
        "OpenAI without output_item.done: the completed response's output",
        OPENAI_PREFIX + event({"type": "response.completed", "response": DONE_RESPONSE}),
        {"text": "Hello"},
    ),
    (
        "OpenAI with only deltas: deltas as a fallback",
        OPENAI_PREFIX
        + event({"type": "response.completed", "response": {**RESPONSE, "status": "completed"}}),
        {"text": "Hello"},
    ),
    ("Chat chunks", CHAT, {"text": "Hello", "input_tokens": 4, "output_tokens": 2}),
    ("CRLF line endings", MLFLOW.replace("\n", "\r\n"), {"text": "Hello"}),
    (
        "comments and a multi-line data field",
        ": keep-alive\n\n"
        + 'data: {"type": "response.output_item.done",\ndata:  "item": '
        + json.dumps(message("multi"))
        + "}\n\n"
        + data("[DONE]"),
        {"text": "multi"},
    ),
    (
        "Model Serving trace on the last event",
        data({"type": "response.output_item.done", "item": message("t")})
        + data(
            {
                "type": "response.output_item.done",
                "item": {"type": "function_call"},
                "databricks_output": {"trace": {"info": {"trace_id": "tr-s"}}},
            }
        )
        + data("[DONE]"),
        {"text": "t", "trace_id": "tr-s"},
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), SSE_OK, ids=[c[0] for c in SSE_OK])
def test_sse_styles(name: str, body: str, expected: dict[str, Any]) -> None:
    reply = parse_sse(body.encode())
    assert isinstance(reply, AgentReply), reply
    for field, value in expected.items():
        assert getattr(reply, field) == value, field


SSE_FAIL: list[tuple[str, str, str, bool, str]] = [
    # Retried like the HTTP 500 the same agent answers when not streamed.
    ("MLflow in-stream error", MLFLOW_ERROR, "agent", True, "tool call failed"),
    ("OpenAI response.failed", OPENAI_FAILED, "agent", False, "model crashed"),
    ("OpenAI error event", OPENAI_ERROR_EVENT, "agent", False, "slow down"),
    (
        "chat error chunk",
        data(chunk({"content": "a"})) + data({"error": {"message": "overloaded", "code": "429"}}),
        "agent",
        False,
        "overloaded",
    ),
    ("OpenAI cut before completion", OPENAI_PREFIX, "stream", True, "truncated"),
    ("MLflow cut before [DONE]", MLFLOW.replace(data("[DONE]"), ""), "stream", True, "truncated"),
    (
        "cut in the middle of an event",
        MLFLOW[: MLFLOW.index("output_item.done") + 10],
        "stream",
        True,
        "truncated",
    ),
    ("empty body", "", "stream", True, "truncated"),
    ("garbage event in the middle", data("{oops") + data("[DONE]"), "stream", False, "not JSON"),
    ("completed without any text", data("[DONE]"), "parse", False, "without answer text"),
]


@pytest.mark.parametrize(
    ("name", "body", "kind", "retryable", "message_part"), SSE_FAIL, ids=[c[0] for c in SSE_FAIL]
)
def test_sse_failures(name: str, body: str, kind: str, retryable: bool, message_part: str) -> None:
    failure = parse_sse(body.encode())
    assert isinstance(failure, RowFailure), failure
    assert (failure.kind, failure.retryable) == (kind, retryable)
    assert message_part in failure.message


def test_in_stream_error_never_returns_partial_text() -> None:
    failure = parse_sse(MLFLOW_ERROR.encode())
    assert isinstance(failure, RowFailure)
    assert "partial" not in failure.message


# --- typed answers -------------------------------------------------------------------------


def test_response_format_types_the_answer() -> None:
    fmt = parse_response_format("STRUCT<label: STRING, urgency: INT>")
    reply = apply_response_format(AgentReply(text='{"label": "bug", "urgency": 2}'), fmt)
    assert isinstance(reply, AgentReply)
    assert reply.value == {"label": "bug", "urgency": 2}


def test_response_format_reads_the_last_message_of_several() -> None:
    fmt = parse_response_format("STRUCT<label: STRING>")
    reply = apply_response_format(AgentReply(text='Let me look.\n\n{"label": "bug"}'), fmt)
    assert isinstance(reply, AgentReply)
    assert reply.value == {"label": "bug"}


def test_response_format_failure_carries_raw_text() -> None:
    fmt = parse_response_format("STRUCT<label: STRING>")
    failure = apply_response_format(AgentReply(text="I think it is a bug"), fmt)
    assert isinstance(failure, RowFailure)
    assert failure.kind == "parse" and "I think it is a bug" in failure.message


def test_custom_outputs_keep_big_integers_and_nan_as_sent() -> None:
    # A 30-digit id must not come back rounded, and a NaN score must not fail the row (Python
    # agents' json.dumps writes NaN): both are what faster JSON parsers do.
    body = (
        b'{"output": [{"type": "message", "role": "assistant", "content": "ok"}],'
        b' "custom_outputs": {"id": 123456789012345678901234567890, "score": NaN}}'
    )
    reply = parse_json_reply(body)
    assert isinstance(reply, AgentReply)
    assert reply.custom_outputs["id"] == 123456789012345678901234567890
    assert reply.custom_outputs["score"] != reply.custom_outputs["score"]  # NaN


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]
)
def test_a_reply_is_read_in_every_encoding_json_allows(encoding: str) -> None:
    # The UTF-8 fast path must not take a body that only the standard library's detection reads.
    body = json.dumps({"output": [{"type": "message", "content": "é ok"}]}).encode(encoding)
    reply = parse_json_reply(body)
    assert isinstance(reply, AgentReply) and reply.text == "é ok"


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 7, "output_tokens": 2}, (7, 2)),
        ({"prompt_tokens": 3.0, "completion_tokens": 1}, (3, 1)),
        # A count no BIGINT holds, not a whole number, or below zero (it would take tokens off a
        # run's --max-tokens budget) is unknown.
        ({"input_tokens": 2**63, "output_tokens": 1.5}, (None, None)),
        ({"input_tokens": -5, "output_tokens": True}, (None, None)),
    ],
)
def test_token_counts_a_server_reports(usage: dict[str, Any], expected: tuple[Any, Any]) -> None:
    from agentbatch.agent.replies import usage_tokens

    assert usage_tokens(usage) == expected


def test_a_common_reply_is_read_in_few_calls() -> None:
    # One per row: the usual Responses reply (one message of one part, whole token counts).
    payload = {
        "status": "completed",
        "output": [message("hi")],
        "usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
    }
    with functions_called() as calls:
        reply = reply_from_payload(payload)
    assert isinstance(reply, AgentReply) and (reply.text, reply.input_tokens) == ("hi", 7)
    assert len(calls) <= 7, calls


def test_a_reply_not_in_utf8_is_named_so_not_called_json_it_is_not() -> None:
    """JSON with a Latin-1 byte and no charset said `reply is not JSON`, which it is."""
    body = '{"output": [{"type": "message", "content": [{"type": "output_text", "text": "café"}]}]}'
    failure = parse_json_reply(body.encode("latin-1"))
    assert isinstance(failure, RowFailure) and not failure.retryable
    assert failure.message.startswith(f"reply is not UTF-8 (byte {body.index('é')} of the body): ")
    not_json = parse_json_reply(b"<html>busy</html>")
    assert isinstance(not_json, RowFailure)
    assert not_json.message == "reply is not JSON: <html>busy</html>"
