"""Small aiohttp apps on 127.0.0.1 for the transport's tests, and a bulk run of a few rows
against one (rows and stats), as test_transport.py does for one row."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiohttp import web

from agentbatch.agent.bulk import run_bulk
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.ledger import Ledger
from agentbatch.agent.stats import BulkStats
from agentbatch.agent.transport import AiohttpTransport

from .conftest import input_batches

ANSWER = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "fine"}]}]}

Serve = Callable[[web.Application], Awaitable[str]]
# Requests an app received, by method and path (`"POST /responses"`).
HITS = web.AppKey("hits", Counter[str])


@pytest.fixture
async def serve_app() -> AsyncIterator[Serve]:
    """Start an app on 127.0.0.1; its base URL. Every request is counted in app[HITS]."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        hits: Counter[str] = Counter()
        app[HITS] = hits

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            hits[f"{request.method} {request.path}"] += 1
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.append(count)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def posts(app: web.Application, path: str | None = None) -> int:
    hits = app[HITS]
    return sum(n for hit, n in hits.items() if hit.startswith("POST ") and path in (None, hit[5:]))


async def run_rows(
    url: str, tmp_path: Path, n: int = 1, **spec: Any
) -> tuple[list[dict[str, Any]], BulkStats]:
    """`n` rows sent to `url` through a fresh AiohttpTransport: the rows written, the stats."""
    call = CallSpec(endpoint=url, **spec)
    transport = AiohttpTransport()
    try:
        with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
            stats = await run_bulk(
                input_batches(call, [f"hello {i}" for i in range(n)]),
                call=call,
                key="id",
                ledger=ledger,
                transport=transport,
            )
            rows = pa.Table.from_batches(list(ledger.rows_of_run())).to_pylist()
    finally:
        await transport.close()
    assert len(rows) == n
    return sorted(rows, key=lambda r: r["id"]), stats
