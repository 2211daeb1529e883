"""A minimal, fast agent for load tests: `python -m tests.support.fast_agent` (or run the file)
serves one canned Responses answer on 127.0.0.1 and prints its URL first. No parsing, no faults:
the client is what is measured.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import web

from agentbatch.testing.background import bind_loopback, start_site

ANSWER = json.dumps(
    {
        "object": "response",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok"}],
            }
        ],
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
).encode()


async def answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def serve() -> None:
    app = web.Application()
    app.router.add_post("/responses", answer)
    sock = bind_loopback(0)
    runner = await start_site(app, sock)
    sys.stdout.write(f"http://127.0.0.1:{sock.getsockname()[1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
