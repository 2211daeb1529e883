from __future__ import annotations

import json
from typing import Any

import pytest

from agentbatch.testing.inbound import parse_json
from agentbatch.testing.replies import make_reply
from agentbatch.testing.sse import STREAM_ERROR_MESSAGE, stream_frames, text_deltas


def _parse(frames: list[bytes]) -> list[tuple[str | None, str]]:
    events = []
    for frame in frames:
        assert frame.endswith(b"\n\n")
        event = None
        data = ""
        for line in frame.decode().strip("\n").split("\n"):
            name, _, value = line.partition(": ")
            if name == "event":
                event = value
            else:
                assert name == "data"
                data = value
        events.append((event, data))
    return events


def _reply(body: dict[str, Any], metadata_trace: bool = False) -> tuple[Any, Any]:
    call = parse_json(body)
    return call, make_reply(call, "answer: one two three", 1, metadata_trace=metadata_trace)


@pytest.mark.parametrize("answer", ["a", "one two  three ", "  lead", "", "   "])
def test_deltas_join_back_to_the_answer(answer: str) -> None:
    assert "".join(text_deltas(answer)) == answer


def test_openai_lifecycle() -> None:
    call, reply = _reply({"input": "x", "custom_inputs": {"key": "k"}})
    events = _parse(stream_frames("openai", call, reply, model="m"))
    types = [e for e, _ in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    payloads = [json.loads(d) for _, d in events]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert all(p["type"] == e for (e, _), p in zip(events, payloads, strict=True))
    deltas = [p["delta"] for p in payloads if p["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "answer: one two three"
    final = payloads[-1]["response"]
    assert final["usage"]["output_tokens"] == 4
    assert final["custom_outputs"] == {"key": "k"}
    assert all(d != "[DONE]" for _, d in events)


def test_mlflow_style_is_data_only_and_ends_with_done() -> None:
    call, reply = _reply({"input": "x", "custom_inputs": {"a": 1}}, metadata_trace=True)
    events = _parse(stream_frames("mlflow", call, reply, model="m"))
    assert all(event is None for event, _ in events)
    assert events[-1][1] == "[DONE]"
    payloads = [json.loads(d) for _, d in events[:-1]]
    assert payloads[-1] == {"trace_id": reply.trace_id}
    done = payloads[-2]
    assert done["type"] == "response.output_item.done"
    assert done["custom_outputs"] == {"a": 1}
    assert done["item"]["content"][0]["text"] == "answer: one two three"


def test_chat_chunks() -> None:
    call, reply = _reply({"messages": [{"role": "user", "content": "x"}]})
    events = _parse(stream_frames("chat", call, reply, model="m"))
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "answer: one two three"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("style", ["openai", "mlflow", "chat"])
def test_error_after_the_first_delta(style: str) -> None:
    body: dict[str, Any] = (
        {"messages": [{"role": "user", "content": "x"}]} if style == "chat" else {"input": "x"}
    )
    call, reply = _reply(body)
    events = _parse(stream_frames(style, call, reply, model="m", error_after=1))  # type: ignore[arg-type]
    datas = [d for _, d in events]
    if style == "openai":
        last = json.loads(datas[-1])
        assert events[-1][0] == "error"
        assert last["message"] == STREAM_ERROR_MESSAGE
    else:
        assert datas[-1] == "[DONE]"
        error = json.loads(datas[-2])["error"]
        message = error if style == "mlflow" else error["message"]
        assert message == STREAM_ERROR_MESSAGE
    assert sum("delta" in d for d in datas) == (2 if style == "chat" else 1)
