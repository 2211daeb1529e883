"""A purpose-built hostile agent: each request's text names how to misbehave.

The fault server misbehaves at random; this one misbehaves on demand, with replies the fault
server has no mode for (huge, endless, wrong shapes, header bombs, redirects). The request text is
`MODE` or `MODE anything`; an unknown mode gets a well-formed Responses answer.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from agentbatch.testing.background import BackgroundServer
from agentbatch.testing.inbound import BadRequest, parse_body

MB = 1024 * 1024
# Over the transport's 10 MB reply cap.
HUGE = 24 * MB


def answer(text: str) -> dict[str, Any]:
    return {
        "object": "response",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text}],
            }
        ],
    }


def sse(event: dict[str, Any] | str) -> bytes:
    data = event if isinstance(event, str) else json.dumps(event)
    return f"data: {data}\n\n".encode()


Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def _raw(data: bytes, content_type: str = "application/json", status: int = 200) -> web.Response:
    return web.Response(status=status, body=data, headers={"Content-Type": content_type})


async def _stream(
    request: web.Request, chunks: Any, content_type: str, pause_s: float = 0.0
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
        if pause_s:
            await asyncio.sleep(pause_s)
    await response.write_eof()
    return response


def _forever(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


async def huge_json(request: web.Request, text: str) -> web.StreamResponse:
    filler = "x" * HUGE
    return _json(answer(filler))


async def huge_chunked(request: web.Request, text: str) -> web.StreamResponse:
    block = b" " * MB
    return await _stream(
        request, [b'{"output": [], "pad": "', *[block] * 24, b'"}'], "application/json"
    )


async def huge_stream(request: web.Request, text: str) -> web.StreamResponse:
    delta = sse({"type": "response.output_text.delta", "delta": "x" * 65_536})
    return await _stream(request, [delta] * (HUGE // 65_536), "text/event-stream")


async def endless_stream(request: web.Request, text: str) -> web.StreamResponse:
    delta = sse({"type": "response.output_text.delta", "delta": "more "})
    return await _stream(request, _forever(delta), "text/event-stream", pause_s=0.01)


async def endless_body(request: web.Request, text: str) -> web.StreamResponse:
    return await _stream(request, _forever(b" "), "application/json", pause_s=0.01)


async def endless_comments(request: web.Request, text: str) -> web.StreamResponse:
    """Keep-alive comments forever: bytes keep coming, no event ever does."""
    return await _stream(request, _forever(b": keep-alive\n\n"), "text/event-stream", pause_s=0.01)


async def no_headers(request: web.Request, text: str) -> web.StreamResponse:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def html(request: web.Request, text: str) -> web.StreamResponse:
    return _raw(b"<html><body>502 Bad Gateway</body></html>", "text/html")


async def empty(request: web.Request, text: str) -> web.StreamResponse:
    return _raw(b"")


async def not_utf8(request: web.Request, text: str) -> web.StreamResponse:
    return _raw(
        b'{"output": [{"type": "message", "content": [{"type": "output_text", "text": "\xff\xfe"}]}]}'
    )


async def deep_json(request: web.Request, text: str) -> web.StreamResponse:
    return _raw(b"[" * 200_000 + b"]" * 200_000)


async def deep_object(request: web.Request, text: str) -> web.StreamResponse:
    body = b'{"output": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    return _raw(body)


async def deep_custom_outputs(request: web.Request, text: str) -> web.StreamResponse:
    body = answer("fine")
    nested: Any = 1
    for _ in range(900):
        nested = {"n": nested}
    body["custom_outputs"] = nested
    return _json(body)


async def huge_number(request: web.Request, text: str) -> web.StreamResponse:
    return _raw(b'{"output": [], "usage": {"input_tokens": 1' + b"0" * 100_000 + b"}}")


async def nan_usage(request: web.Request, text: str) -> web.StreamResponse:
    body = answer("fine")
    return _raw(
        json.dumps({**body, "usage": {"input_tokens": "NaN", "output_tokens": -1e308}}).encode()
    )


WRONG_SHAPES: dict[str, Any] = {
    "SHAPE_LIST": [],
    "SHAPE_NUMBER": 123,
    "SHAPE_NULL": None,
    "SHAPE_TRUE": True,
    "SHAPE_EMPTY_OBJECT": {},
    "SHAPE_OUTPUT_STRING": {"output": "not a list"},
    "SHAPE_OUTPUT_NUMBERS": {"output": [1, 2, 3]},
    "SHAPE_CONTENT_NUMBER": {"output": [{"type": "message", "content": 5}]},
    "SHAPE_CONTENT_NULLS": {"output": [{"type": "message", "content": [None, {"text": None}]}]},
    "SHAPE_CHOICES_EMPTY": {"choices": []},
    "SHAPE_CHOICES_NULL_MESSAGE": {"choices": [{"message": None}]},
    "SHAPE_CHOICES_CONTENT_DICT": {"choices": [{"message": {"content": {"a": 1}}}]},
    "SHAPE_ERROR_STRING": {"error": "boom"},
    "SHAPE_ERROR_NESTED": {"error": {"message": {"deeper": ["x"]}}},
    "SHAPE_PREDICTIONS_DICT": {"predictions": {"a": [1, {"b": None}]}},
    "SHAPE_USAGE_WRONG": {**answer("fine"), "usage": "lots"},
    "SHAPE_TRACE_WRONG": {**answer("fine"), "databricks_output": {"trace": 5}},
}

STREAM_SHAPES: dict[str, list[bytes]] = {
    "SSE_GARBAGE": [b"data: {not json\n\n", b"data: [DONE]\n\n"],
    "SSE_NO_DATA": [b"event: response.completed\n\n", b"data: [DONE]\n\n"],
    "SSE_LIST_EVENTS": [sse("[1, 2]"), sse("null"), b"data: [DONE]\n\n"],
    "SSE_WRONG_ITEM": [
        sse({"type": "response.output_item.done", "item": "string"}),
        sse({"type": "response.output_item.done", "item": {"content": 5}}),
        b"data: [DONE]\n\n",
    ],
    "SSE_WRONG_CHOICES": [sse({"choices": [None, 1, {"delta": "x"}]}), b"data: [DONE]\n\n"],
    "SSE_MANY_TINY": [sse({"type": "response.output_text.delta", "delta": "x"})] * 20_000
    + [b"data: [DONE]\n\n"],
    "SSE_BINARY": [b"data: \xff\xfe\x00\n\n", b"data: [DONE]\n\n"],
}


def _shape(value: Any) -> Handler:
    async def handle(request: web.Request, text: str) -> web.StreamResponse:
        return _json(value)

    return handle


def _stream_shape(chunks: list[bytes]) -> Handler:
    async def handle(request: web.Request, text: str) -> web.StreamResponse:
        return await _stream(request, chunks, "text/event-stream")

    return handle


async def header_bomb(request: web.Request, text: str) -> web.StreamResponse:
    return web.Response(status=200, text="{}", headers={"X-Pad": "p" * 200_000})


async def status_999(request: web.Request, text: str) -> web.StreamResponse:
    return _json(answer("odd status"), status=999)


async def retry_after_garbage(request: web.Request, text: str) -> web.StreamResponse:
    return web.Response(status=429, text="{}", headers={"Retry-After": "-5, soon, Thu 99 Foo"})


def _auth_of(request: web.Request) -> str:
    return request.headers.get("Authorization", "<none>")


async def echo_auth_400(request: web.Request, text: str) -> web.StreamResponse:
    return _json({"error": {"message": f"bad request from {_auth_of(request)}"}}, status=400)


async def echo_auth_500(request: web.Request, text: str) -> web.StreamResponse:
    return _raw(f"upstream failed; you sent {_auth_of(request)}".encode(), "text/plain", 500)


async def echo_auth_stream(request: web.Request, text: str) -> web.StreamResponse:
    event = {"type": "error", "error": {"message": f"token {_auth_of(request)} rejected"}}
    return await _stream(request, [sse(event)], "text/event-stream")


async def echo_auth_401(request: web.Request, text: str) -> web.StreamResponse:
    return _json({"error": {"message": f"invalid token {_auth_of(request)}"}}, status=401)


ECHO_MODES: dict[str, Handler] = {
    "ECHO_AUTH_400": echo_auth_400,
    "ECHO_AUTH_500": echo_auth_500,
    "ECHO_AUTH_STREAM": echo_auth_stream,
}

MODES: dict[str, Handler] = {
    "HUGE_JSON": huge_json,
    "HUGE_CHUNKED": huge_chunked,
    "HUGE_STREAM": huge_stream,
    "ENDLESS_STREAM": endless_stream,
    "ENDLESS_BODY": endless_body,
    "ENDLESS_COMMENTS": endless_comments,
    "NO_HEADERS": no_headers,
    "HTML": html,
    "EMPTY": empty,
    "NOT_UTF8": not_utf8,
    "DEEP_JSON": deep_json,
    "DEEP_OBJECT": deep_object,
    "DEEP_CUSTOM_OUTPUTS": deep_custom_outputs,
    "HUGE_NUMBER": huge_number,
    "NAN_USAGE": nan_usage,
    "HEADER_BOMB": header_bomb,
    "STATUS_999": status_999,
    "RETRY_AFTER_GARBAGE": retry_after_garbage,
    **{name: _shape(value) for name, value in WRONG_SHAPES.items()},
    **{name: _stream_shape(chunks) for name, chunks in STREAM_SHAPES.items()},
}
# Modes a run is only sent on purpose (they echo credentials or stop the run).
EXTRA_MODES: dict[str, Handler] = {**ECHO_MODES, "ECHO_AUTH_401": echo_auth_401}


class HostileAgent:
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * MB)
        app.router.add_post("/responses", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        try:
            call = parse_body(await request.read())
        except BadRequest as err:
            return _json({"error": {"message": str(err)}}, status=400)
        mode = call.text.split(" ", 1)[0]
        self.seen[mode] += 1
        handler = MODES.get(mode) or EXTRA_MODES.get(mode)
        if handler is None:
            return _json(answer(f"fine: {call.text[:50]}"))
        return await handler(request, call.text)


@contextmanager
def serve_hostile() -> Iterator[tuple[str, HostileAgent]]:
    agent = HostileAgent()
    with BackgroundServer(agent.build_app, name="hostile-agent") as server:
        yield server.url, agent
