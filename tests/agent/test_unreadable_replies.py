"""A reply that came whole but cannot be read (a body its Content-Encoding does not decode, a
header over aiohttp's limit) is a permanent row error keeping its HTTP status: the agent ran, and
re-sending would pay again for the same reply. A reply cut short stays transient.

Real servers on 127.0.0.1 count the POSTs they receive."""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from agentbatch.agent.retry import should_retry

from .loopback import ANSWER, Serve, posts, run_rows, serve_app

__all__ = ["serve_app"]  # the fixture, used by name

BODY = json.dumps(ANSWER).encode()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def served(serve_app: Serve, handler: Handler) -> tuple[str, web.Application]:
    app = web.Application()
    app.router.add_post("/responses", handler)
    return await serve_app(app), app


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_body_that_is_not_gzip_is_a_permanent_error_with_its_status(
    serve_app: Serve, tmp_path: Path, stream: bool
) -> None:
    async def lying(request: web.Request) -> web.Response:
        return web.Response(
            body=BODY, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    url, app = await served(serve_app, lying)
    rows, stats = await run_rows(url, tmp_path, n=2, stream=stream)
    # It was `[transient] ClientPayloadError ...`, NULL status, and each row sent 9 times.
    assert posts(app) == 2 and stats.retries == 0
    for row in rows:
        assert row["error"].startswith("[permanent] HTTP 200 reply could not be read: ")
        assert "content-encoding: gzip" in row["error"]
        assert row["http_status"] == 200 and row["attempts"] == 1


async def test_a_chunked_body_that_does_not_decode_is_permanent(
    serve_app: Serve, tmp_path: Path
) -> None:
    async def lying(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Encoding": "deflate"}
        )
        await response.prepare(request)
        await response.write(BODY)
        await response.write_eof()
        return response

    url, app = await served(serve_app, lying)
    rows, _ = await run_rows(url, tmp_path)
    assert posts(app) == 1
    assert rows[0]["error"].startswith("[permanent] HTTP 200 reply could not be read: ")
    assert rows[0]["http_status"] == 200


async def test_an_encoding_aiohttp_cannot_decode_is_permanent(
    serve_app: Serve, tmp_path: Path
) -> None:
    async def brotli(request: web.Request) -> web.Response:
        headers = {"Content-Type": "application/json", "Content-Encoding": "br"}
        return web.Response(body=BODY, headers=headers)

    url, app = await served(serve_app, brotli)
    rows, _ = await run_rows(url, tmp_path)
    assert posts(app) == 1
    error = rows[0]["error"]
    # Without Brotli installed aiohttp refuses it with the headers (no status kept); with it,
    # the body does not decode (HTTP 200 kept).
    assert error.startswith("[permanent] ") and "content-encoding" in error.lower()
    assert rows[0]["attempts"] == 1


async def test_a_header_over_the_parsers_limit_is_permanent(
    serve_app: Serve, tmp_path: Path
) -> None:
    async def padded(request: web.Request) -> web.Response:
        return web.json_response(ANSWER, headers={"X-Trace": "t" * 9000})

    url, app = await served(serve_app, padded)
    rows, _ = await run_rows(url, tmp_path, n=2)
    assert posts(app) == 2
    for row in rows:
        assert row["error"].startswith("[permanent] the reply's headers could not be read: ")
        assert "Got more than 8190 bytes" in row["error"] and len(row["error"]) < 500
        assert row["attempts"] == 1


async def test_a_refusal_whose_body_does_not_decode_keeps_its_status_and_policy(
    serve_app: Serve, tmp_path: Path
) -> None:
    async def overloaded(request: web.Request) -> web.Response:
        if posts(app) == 1:
            return web.Response(
                status=503, body=b"busy", headers={"Content-Encoding": "gzip", "Retry-After": "0"}
            )
        return web.json_response(ANSWER)

    url, app = await served(serve_app, overloaded)
    rows, stats = await run_rows(url, tmp_path, max_retries=0)
    # A 503 is "not now" whatever its body: the policy for 503, and its status in the row.
    assert rows[0]["http_status"] == 503 and rows[0]["error"].startswith("[transient] HTTP 503")
    assert stats.requests == 1


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_a_body_cut_short_is_still_sent_again(
    serve_app: Serve, tmp_path: Path, encoding: str | None
) -> None:
    # A guard (it passed before too): a reply that did not complete is not a reply to keep.
    whole = gzip.compress(BODY * 50) if encoding else BODY * 50

    async def cut(request: web.Request) -> web.StreamResponse:
        if posts(app) == 1:
            headers = {"Content-Type": "application/json"}
            if encoding:
                headers["Content-Encoding"] = encoding
            response = web.StreamResponse(headers=headers)
            response.content_length = len(whole)
            await response.prepare(request)
            await response.write(whole[: len(whole) // 2])
            assert request.transport is not None
            request.transport.abort()
            return response
        return web.json_response(ANSWER)

    url, app = await served(serve_app, cut)
    rows, _ = await run_rows(url, tmp_path)
    assert rows[0]["response"] == "fine" and rows[0]["attempts"] == 2


def test_the_policy_tells_a_reply_that_does_not_decode_from_one_cut_short() -> None:
    from aiohttp import ClientPayloadError
    from aiohttp.http_exceptions import ContentEncodingError, ContentLengthError

    decode = ClientPayloadError("Can not decode content-encoding: gzip")
    decode.__cause__ = ContentEncodingError("Can not decode content-encoding: gzip")
    cut = ClientPayloadError("Response payload is not completed")
    cut.__cause__ = ContentLengthError("Not enough data to satisfy content length header.")
    assert not should_retry(decode)
    assert should_retry(cut)
