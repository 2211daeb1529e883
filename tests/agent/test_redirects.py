"""Redirects of an agent's POST (the agent server is untrusted; every POST may be paid): only a
307/308 within the agent's origin is followed, at most MAX_REDIRECTS a call, never in a loop;
anything else is a permanent row error naming the redirect, never re-sent and never a GET.

Real servers on 127.0.0.1 count the requests they receive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from agentbatch.agent.transport import MAX_REDIRECTS, AiohttpTransport, TransportError

from .loopback import ANSWER, HITS, Serve, posts, run_rows, serve_app

__all__ = ["serve_app"]  # the fixture, used by name


async def test_a_redirect_to_itself_costs_one_post_per_row(
    serve_app: Serve, tmp_path: Path
) -> None:
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/responses")

    app = web.Application()
    app.router.add_post("/responses", loop)
    url = await serve_app(app)
    rows, stats = await run_rows(url + "/responses", tmp_path, n=3)
    # aiohttp followed it 10 times per attempt, and the row was re-sent: 90 POSTs for 3 rows.
    assert posts(app) == 3
    assert stats.requests == 3 and stats.retries == 0
    for row in rows:
        assert row["error"].startswith("[permanent] HTTP 307 redirect to ")
        assert "redirect loop" in row["error"]
        assert row["http_status"] == 307 and row["attempts"] == 1


async def test_a_redirect_chain_is_cut_after_max_redirects(
    serve_app: Serve, tmp_path: Path
) -> None:
    async def onward(request: web.Request) -> web.Response:
        step = int(request.match_info["step"])
        raise web.HTTPPermanentRedirect(f"/r/{step + 1}/responses")

    app = web.Application()
    app.router.add_post("/r/{step}/responses", onward)
    url = await serve_app(app)
    rows, stats = await run_rows(url + "/r/0/responses", tmp_path, n=2)
    assert posts(app) == 2 * (MAX_REDIRECTS + 1)
    assert stats.requests == posts(app)  # each hop followed is a request of the summary
    for row in rows:
        assert row["error"].startswith("[permanent] HTTP 308 redirect to ")
        assert f"more than {MAX_REDIRECTS} redirects" in row["error"]
        assert row["attempts"] == 1


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_a_redirect_that_would_turn_the_post_into_a_get_is_not_followed(
    serve_app: Serve, tmp_path: Path, status: int
) -> None:
    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": "/login?next=x"})

    async def login(request: web.Request) -> web.Response:
        return web.json_response(ANSWER)  # a GET must never be taken for the answer

    app = web.Application()
    app.router.add_post("/responses", moved)
    app.router.add_route("*", "/login", login)
    url = await serve_app(app)
    rows, _ = await run_rows(url + "/responses", tmp_path, n=1)
    (row,) = rows
    # It became `[permanent] HTTP 405` (the GET on /responses), with no word of the redirect.
    assert row["error"].startswith(f"[permanent] HTTP {status} redirect to http://127.0.0.1:")
    assert "/login?next=***" in row["error"] and "POST into a GET" in row["error"]
    assert row["http_status"] == status and row["attempts"] == 1
    assert app[HITS]["GET /login"] == 0 and app[HITS]["POST /login"] == 0


async def test_a_redirect_to_another_origin_is_not_followed(
    serve_app: Serve, tmp_path: Path
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(ANSWER)

    elsewhere = web.Application()
    elsewhere.router.add_post("/responses", answer)
    other = await serve_app(elsewhere)

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(other + "/responses")

    app = web.Application()
    app.router.add_post("/responses", away)
    url = await serve_app(app)
    rows, _ = await run_rows(url + "/responses", tmp_path, n=2, max_retries=3)
    # The request and the headers sent with it go to the agent's origin only.
    assert posts(elsewhere) == 0 and posts(app) == 2
    for row in rows:
        assert row["error"].startswith(f"[permanent] HTTP 307 redirect to {other}/responses")
        assert "another origin" in row["error"]


@pytest.mark.parametrize("redirect", [web.HTTPTemporaryRedirect, web.HTTPPermanentRedirect])
async def test_a_redirect_within_the_origin_is_followed_with_the_same_post(
    serve_app: Serve, redirect: type[web.HTTPMove]
) -> None:
    bodies: list[bytes] = []
    authorizations: list[str | None] = []

    async def moved(request: web.Request) -> web.Response:
        raise redirect("/v2/responses")

    async def answer(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        authorizations.append(request.headers.get("Authorization"))
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/responses", moved)
    app.router.add_post("/v2/responses", answer)
    url = await serve_app(app)
    transport = AiohttpTransport()
    try:
        # The URL's user and password (sent as Basic auth) go along within the origin.
        with_user = url.replace("http://", "http://bob:pw@") + "/responses"
        reply = await transport.post(with_user, b'{"input": "hi"}', {}, stream=False, timeout_s=5)
    finally:
        await transport.close()
    assert reply.status == 200 and json.loads(reply.body) == ANSWER
    # The hop is one more POST: the reply says so, for the stats.
    assert reply.redirects == 1
    assert posts(app, "/responses") == 1 and posts(app, "/v2/responses") == 1
    assert bodies == [b'{"input": "hi"}']
    assert authorizations == ["Basic Ym9iOnB3"]


async def test_a_refused_redirect_reports_the_hops_followed_before_it(serve_app: Serve) -> None:
    async def first(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/second")

    async def second(request: web.Request) -> web.Response:
        raise web.HTTPFound("/third")

    app = web.Application()
    app.router.add_post("/first", first)
    app.router.add_post("/second", second)
    url = await serve_app(app)
    transport = AiohttpTransport()
    try:
        with pytest.raises(TransportError) as info:
            await transport.post(url + "/first", b"{}", {}, stream=False, timeout_s=5)
    finally:
        await transport.close()
    assert not info.value.retryable and info.value.status == 302
    assert info.value.redirects == 1 and posts(app) == 2
