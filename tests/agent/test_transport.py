"""The aiohttp transport and the caps on replies, against small loopback servers."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pyarrow as pa
import pytest
from aiohttp import web

from agentbatch.agent.bulk import run_bulk
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.ledger import Ledger
from agentbatch.agent.transport import AiohttpTransport, TransportError

from .conftest import input_batches

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OK_BODY = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "fine"}]}]}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/responses", handler)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def one_row(
    url: str, tmp_path: Path, transport: AiohttpTransport | None = None, **spec: object
) -> dict[str, object]:
    call = CallSpec(endpoint=url, **spec)  # type: ignore[arg-type]
    with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
        await run_bulk(
            input_batches(call, ["hello"]), call=call, key="id", ledger=ledger, transport=transport
        )
        rows = pa.Table.from_batches(list(ledger.rows_of_run())).to_pylist()
    if transport is not None:
        await transport.close()
    assert len(rows) == 1
    return rows[0]


async def test_a_huge_reply_is_a_row_error(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 200_000, content_type="application/json")

    row = await one_row(await serve(huge), tmp_path, AiohttpTransport(max_body_bytes=100_000))
    assert "larger than the 100000 byte cap" in str(row["error"])
    assert row["attempts"] == 1


async def test_a_compressed_reply_is_capped_at_its_decompressed_size(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    # 5 MB of JSON in about 5 KB of gzip: its Content-Length is small, what it unpacks to is not.
    unpacked = json.dumps({"output": "x" * 5_000_000}).encode()

    async def bomb(request: web.Request) -> web.Response:
        body = gzip.compress(unpacked)
        return web.Response(
            body=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    row = await one_row(await serve(bomb), tmp_path, AiohttpTransport(max_body_bytes=100_000))
    assert "larger than the 100000 byte cap" in str(row["error"])


async def test_a_compressed_reply_under_the_cap_is_read(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    async def small(request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps(OK_BODY).encode())
        return web.Response(
            body=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    row = await one_row(await serve(small), tmp_path)
    assert row["response"] == "fine" and row["error"] is None


async def test_an_endless_stream_is_cut_at_the_cap(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delta = b'data: {"type": "response.output_text.delta", "delta": "more "}\n\n'
        while True:
            await response.write(delta * 100)

    row = await one_row(
        await serve(endless), tmp_path, AiohttpTransport(max_body_bytes=50_000), stream=True
    )
    assert "byte cap" in str(row["error"]) and row["response"] is None


async def test_a_trickling_reply_times_out(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while True:
            await response.write(b": still here\n\n")
            await asyncio.sleep(0.05)

    row = await one_row(await serve(trickle), tmp_path, stream=True, timeout_s=0.3, max_retries=1)
    assert "no complete reply within 0.3s" in str(row["error"])
    assert row["attempts"] == 2


async def test_done_ends_the_stream_without_waiting_for_the_connection(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    async def lingering(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        item = {"type": "response.output_item.done", "item": OK_BODY["output"][0]}
        await response.write(f"data: {json.dumps(item)}\n\ndata: [DONE]\n\n".encode())
        await asyncio.sleep(30)  # the connection stays open
        return response

    # Waiting for the connection to close would hit the 10 s timeout instead of answering.
    row = await one_row(await serve(lingering), tmp_path, stream=True, timeout_s=10, max_retries=0)
    assert row["response"] == "fine"


async def test_retry_after_is_honoured(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    arrivals: list[float] = []

    async def limited(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return web.json_response(
                {"message": "slow down"}, status=429, headers={"Retry-After": "1"}
            )
        return web.json_response(OK_BODY)

    row = await one_row(await serve(limited), tmp_path)
    assert row["response"] == "fine" and row["attempts"] == 2
    assert arrivals[1] - arrivals[0] >= 1.0


async def test_a_reset_mid_body_is_retried(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    calls: list[int] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        if len(calls) == 1:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 1000
            await response.prepare(request)
            await response.write(b'{"output": [')
            assert request.transport is not None
            request.transport.abort()
            return response
        return web.json_response(OK_BODY)

    row = await one_row(await serve(flaky), tmp_path)
    assert row["response"] == "fine" and row["attempts"] == 2


async def test_transport_errors_carry_kind_and_retryability() -> None:
    transport = AiohttpTransport()
    try:
        with pytest.raises(TransportError) as info:
            await transport.post(
                "http://127.0.0.1:9/responses", b"{}", {}, stream=False, timeout_s=2
            )
        assert info.value.kind == "connection" and info.value.retryable
        with pytest.raises(TransportError) as info:
            await transport.post("not a url", b"{}", {}, stream=False, timeout_s=2)
        assert not info.value.retryable
    finally:
        await transport.close()


def test_turning_tls_verification_off_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        AiohttpTransport(verify_ssl=False)
    assert "verification is OFF" in caplog.text
