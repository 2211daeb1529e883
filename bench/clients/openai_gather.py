"""`asyncio.gather` over the AsyncOpenAI client, bounded by a semaphore."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.clients.base import MODEL, ClientConfig, Counts, Job
from bench.data import read_requests


def prepare(config: ClientConfig) -> Job:
    # Imports and the client are set-up, untimed, as for every client.
    import openai

    requests = read_requests(config.requests_path, config.rows)
    client = openai.AsyncOpenAI(
        base_url=config.url, api_key="bench", max_retries=config.max_retries
    )
    return lambda: asyncio.run(_run(config, client, requests))


async def _run(config: ClientConfig, client: Any, requests: list[tuple[int, str]]) -> Counts:
    import openai

    semaphore = asyncio.Semaphore(config.concurrency or 64)

    async def one(text: str) -> str | None:
        async with semaphore:
            try:
                return await _ask(client, text, config.stream)
            except openai.OpenAIError:
                return None

    async with client:
        answers = await asyncio.gather(*(one(text) for _, text in requests))
    ok = sum(1 for answer in answers if answer is not None)
    return Counts(rows=len(requests), ok=ok, failed=len(requests) - ok)


async def _ask(client: Any, text: str, stream: bool) -> str:
    messages = [{"role": "user", "content": text}]
    if not stream:
        response = await client.responses.create(model=MODEL, input=messages)
        return str(response.output_text)
    events = await client.responses.create(model=MODEL, input=messages, stream=True)
    return "".join([e.delta async for e in events if e.type == "response.output_text.delta"])
