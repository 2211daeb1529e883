"""The ceiling: a bare aiohttp loop with a semaphore. No parsing, no persistence; a 429 waits its
Retry-After and goes again. What this machine can do at all with Python and aiohttp."""

from __future__ import annotations

import asyncio
import json

from bench.clients.base import MODEL, ClientConfig, Counts, Job
from bench.data import read_requests


def prepare(config: ClientConfig) -> Job:
    import aiohttp  # noqa: F401  (imports are set-up, untimed, for every client)

    bodies = [
        json.dumps(
            {"model": MODEL, "input": [{"role": "user", "content": text}], "stream": config.stream}
        ).encode()
        for _, text in read_requests(config.requests_path, config.rows)
    ]
    return lambda: asyncio.run(_run(config, bodies))


async def _run(config: ClientConfig, bodies: list[bytes]) -> Counts:
    import aiohttp

    url = config.url + "/responses"
    headers = {"Content-Type": "application/json"}
    slots = asyncio.Semaphore(config.concurrency or 64)
    ok = 0
    # The semaphore bounds the connections; the pool must not add a second, smaller bound.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(body: bytes) -> None:
            nonlocal ok
            try:
                for _ in range(config.max_retries + 1):
                    async with session.post(url, data=body, headers=headers) as reply:
                        await reply.read()
                        if reply.status != 429:
                            ok += reply.status == 200
                            return
                        await asyncio.sleep(float(reply.headers.get("Retry-After", "1")))
            finally:
                slots.release()

        async with asyncio.TaskGroup() as group:
            for body in bodies:
                await slots.acquire()
                group.create_task(send(body))
    return Counts(rows=len(bodies), ok=ok, failed=len(bodies) - ok)
