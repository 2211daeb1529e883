"""The loop from the Databricks docs: `client.responses.create(...)` for one row after another."""

from __future__ import annotations

from typing import Any

from bench.clients.base import MODEL, ClientConfig, Counts, Job
from bench.data import read_requests


def prepare(config: ClientConfig) -> Job:
    from openai import OpenAI

    client = OpenAI(base_url=config.url, api_key="bench", max_retries=config.max_retries)
    requests = read_requests(config.requests_path, config.rows)

    def run() -> Counts:
        import openai

        answers: dict[int, str] = {}
        failed = 0
        for key, text in requests:
            try:
                answers[key] = _ask(client, text, config.stream)
            except openai.OpenAIError:
                failed += 1
        return Counts(rows=len(requests), ok=len(answers), failed=failed)

    return run


def _ask(client: Any, text: str, stream: bool) -> str:
    messages = [{"role": "user", "content": text}]
    if not stream:
        response = client.responses.create(model=MODEL, input=messages)
        return str(response.output_text)
    events = client.responses.create(model=MODEL, input=messages, stream=True)
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")
