"""A stream is read until it holds its end, wherever the chunks fall: `[DONE]` split over two
writes, a Responses stream ending at `response.completed` with no `[DONE]`, comments after the
end. A server that keeps the connection open must not turn a whole answer into a timeout (and a
second paid call); one whose end is not where the reader looks is parsed at the deadline.

StreamEnd is checked against every way of cutting real streams; the transport against real
servers on 127.0.0.1 that keep the connection open, counting the POSTs they receive."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agentbatch.agent.replies import AgentReply
from agentbatch.agent.sse import StreamEnd, parse_sse, stream_ended

from .loopback import ANSWER, Serve, posts, run_rows, serve_app

__all__ = ["serve_app"]  # the fixture, used by name

ITEM = ANSWER["output"][0]


def data(payload: dict[str, Any] | str, *, spaced: bool = True) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data:{' ' if spaced else ''}{text}\n\n".encode()


def event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def delta(text: str) -> dict[str, Any]:
    return {"type": "response.output_text.delta", "delta": text}


ITEM_DONE = {"type": "response.output_item.done", "item": ITEM}
COMPLETED = {
    "type": "response.completed",
    "response": {"status": "completed", "output": [ITEM], "error": None, "pad": "p" * 300},
}
# Text an answer may hold that looks like an end: inside a JSON string, quotes are escaped and
# a line break is `\n`, so none of it is at the start of an SSE line.
LOOKALIKES = [
    delta("data: [DONE]"),
    delta('\n\ndata: [DONE]\n\nevent: response.completed\n\ndata: {"type":"response.completed"}'),
    delta('{"type": "response.completed"} {"error": "x"}'),
    {"type": "response.created", "response": {"status": "in_progress", "error": None}},
    {"type": "response.output_text.done", "text": "event: error"},
]
BODY = b"".join(event(e) for e in LOOKALIKES)
# Longer than the chunks StreamEnd copies (4 KiB): its large chunks are read in place.
LONG = BODY * 8

# (name, stream, where its end is complete: the stream's first bytes that hold it)
ENDED = [
    ("mlflow [DONE]", LONG + data(ITEM_DONE) + data("[DONE]"), None),
    ("compact [DONE]", LONG + data(ITEM_DONE) + data("[DONE]", spaced=False), None),
    ("openai completed", LONG + event(ITEM_DONE) + event(COMPLETED), None),
    ("data-only completed", LONG + data(ITEM_DONE) + data(COMPLETED), None),
    ("done then pings", LONG + data(ITEM_DONE) + b"data: [DONE]\n\n: ping\n\n: ping\n\n", -18),
    ("completed then pings", LONG + event(COMPLETED) + b": ping\n\n" * 3, -24),
    (
        "crlf completed",
        (LONG + event(ITEM_DONE) + event(COMPLETED)).replace(b"\n", b"\r\n"),
        None,
    ),
    ("long completed", LONG + event(ITEM_DONE) + event({**COMPLETED, "pad": "p" * 6000}), None),
    ("failed", LONG + event({"type": "response.failed", "response": {"error": {}}}), None),
    ("error event", LONG + event({"type": "error", "message": "boom"}), None),
    ("mlflow error", LONG + data({"error": "boom"}), None),
]


def end_of(stream: bytes, cut: int | None) -> int:
    """How many bytes of `stream` hold its end."""
    if cut is not None:
        return len(stream) + cut
    if stream.rstrip().endswith(b"[DONE]"):
        return len(stream.rstrip())
    return len(stream)


def chunkings(stream: bytes) -> Iterator[list[bytes]]:
    for size in (1, 2, 7, 31, 64, 65, 100, 257, 4096, 4097, 5000):
        yield [stream[i : i + size] for i in range(0, len(stream), size)]
    for cut in range(1, len(stream)):
        yield [stream[:cut], stream[cut:]]


@pytest.mark.parametrize(("name", "stream", "cut"), ENDED, ids=[e[0] for e in ENDED])
def test_the_end_is_found_wherever_the_chunks_fall(name: str, stream: bytes, cut: int) -> None:
    end = end_of(stream, cut)
    assert stream_ended(stream[:end]) and not stream_ended(BODY)
    for chunks in chunkings(stream):
        tracker = StreamEnd()
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            if tracker.feed(chunk):
                break
        assert seen >= end, f"ended early at {seen} of {end}: {[len(c) for c in chunks][:6]}"
        # Found in the chunk that completed it.
        assert seen - len(chunk) < end, f"ended late at {seen} of {end}"
    # One byte short of its end, however cut, it has not ended.
    for chunks in chunkings(stream[: end - 1]):
        tracker = StreamEnd()
        assert not any(tracker.feed(chunk) for chunk in chunks), [len(c) for c in chunks][:6]


def test_an_answer_that_only_looks_like_an_end_is_read_on() -> None:
    stream = LONG + data(ITEM_DONE)
    assert not stream_ended(stream)
    for chunks in chunkings(stream):
        tracker = StreamEnd()
        assert not any(tracker.feed(chunk) for chunk in chunks)


def test_an_end_event_not_at_the_start_of_its_data_is_an_end_when_parsed() -> None:
    # StreamEnd looks only at where an event starts; parsing a stream cut at the deadline
    # finds this end too.
    late = {"sequence_number": 9, **COMPLETED}
    stream = BODY + event(ITEM_DONE) + data(late)
    assert stream_ended(stream) and isinstance(parse_sse(stream), AgentReply)
    assert not stream_ended(stream[:-30])  # cut inside the event


async def lingering(
    serve_app: Serve, frames: list[bytes], *, pause_s: float = 0.05, then_abort: bool = False
) -> tuple[str, web.Application]:
    """A server that writes `frames` one by one, then keeps the connection open (sending SSE
    comments now and then), or drops it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for frame in frames:
            await response.write(frame)
            await asyncio.sleep(pause_s)
        if then_abort:
            assert request.transport is not None
            request.transport.abort()
            return response
        for _ in range(200):
            await asyncio.sleep(0.1)
            await response.write(b": ping\n\n")
        return response

    app = web.Application()
    app.router.add_post("/responses", handler)
    return await serve_app(app), app


STREAMS = {
    "done split over two writes": [data(delta("fi")), data(ITEM_DONE), b"data: [DO", b"NE]\n\n"],
    "completed without done": [event(delta("fi")), event(ITEM_DONE), event(COMPLETED)],
    "completed split mid-marker": [
        event(ITEM_DONE) + b"event: response.comp",
        b"leted\ndata: " + json.dumps(COMPLETED).encode()[:50],
        json.dumps(COMPLETED).encode()[50:] + b"\n",
        b"\n",
    ],
    "done then a comment": [data(ITEM_DONE) + b"data: [DONE]\n\n: ping\n\n"],
}


@pytest.mark.parametrize("name", list(STREAMS))
async def test_a_whole_stream_is_answered_while_the_connection_stays_open(
    serve_app: Serve, tmp_path: Path, name: str
) -> None:
    url, app = await lingering(serve_app, STREAMS[name])
    started = time.monotonic()
    rows, _ = await run_rows(url, tmp_path, stream=True, timeout_s=4, max_retries=1)
    # It was `[transient] no complete reply within 4s`, then sent again.
    assert rows[0]["response"] == "fine" and rows[0]["error"] is None
    assert rows[0]["attempts"] == 1 and posts(app) == 1
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("then_abort", [False, True], ids=["kept open", "dropped"])
async def test_a_stream_holding_its_end_is_parsed_at_the_deadline_or_a_drop(
    serve_app: Serve, tmp_path: Path, then_abort: bool
) -> None:
    # The end event does not start its data with its type: only parsing finds it.
    late = {"sequence_number": 9, **COMPLETED}
    url, app = await lingering(serve_app, [data(ITEM_DONE), data(late)], then_abort=then_abort)
    rows, _ = await run_rows(url, tmp_path, stream=True, timeout_s=1, max_retries=2)
    assert rows[0]["response"] == "fine" and rows[0]["error"] is None
    assert rows[0]["attempts"] == 1 and posts(app) == 1


async def test_a_stream_without_its_end_still_times_out_and_is_sent_again(
    serve_app: Serve, tmp_path: Path
) -> None:
    # A guard (it passed before too): lookalikes and comments are no end.
    url, app = await lingering(serve_app, [BODY, data(ITEM_DONE)])
    rows, _ = await run_rows(url, tmp_path, stream=True, timeout_s=0.5, max_retries=1)
    assert rows[0]["error"] == "[transient] no complete reply within 0.5s"
    assert rows[0]["attempts"] == 2 and posts(app) == 2
