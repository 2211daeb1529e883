"""Text an agent sends that UTF-8 cannot hold: UTF-16 surrogates. An agent written in a UTF-16
language (JavaScript, Java, C#) can split an emoji over two stream deltas, or cut a text between
the two halves of one; JSON escapes them as `\\ud83d`. Each row keeps its outcome; the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiohttp import web

from agentbatch.agent.bulk import run_bulk
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.ledger import Ledger
from agentbatch.testing.background import BackgroundServer
from agentbatch.testing.inbound import parse_body

from .conftest import input_batches


def _chunk(content: str | None, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [choice]}) + "\n\n"


def _message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


# json.dumps writes a lone surrogate as its `\uXXXX` escape, as such an agent's JSON does.
REPLIES: dict[str, tuple[int, str, str]] = {
    "split": (
        200,
        "text/event-stream",
        _chunk("smile \ud83d") + _chunk("\ude00") + _chunk(None, "stop") + "data: [DONE]\n\n",
    ),
    "cut": (
        200,
        "application/json",
        json.dumps({"output": [_message("cut \ud83d")], "metadata": {"trace_id": "tr-\udc00"}}),
    ),
    "refused": (400, "application/json", json.dumps({"error": {"message": "bad \ud800 input"}})),
    "plain": (200, "application/json", json.dumps({"output": [_message("fine")]})),
}


async def _reply(request: web.Request) -> web.Response:
    case = parse_body(await request.read()).text
    status, content_type, body = REPLIES[case]
    return web.Response(status=status, text=body, content_type=content_type)


@pytest.fixture
def url() -> Iterator[str]:
    def build() -> web.Application:
        app = web.Application()
        app.router.add_post("/{route:.*}", _reply)
        return app

    with BackgroundServer(build, name="utf16-agent") as server:
        yield server.url


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_surrogates_from_an_agent_are_mended_and_the_run_goes_on(
    url: str, tmp_path: Path, api: str
) -> None:
    """These crashed the write of every row of the commit (an encoding error, exit 2), and the
    next run paid for them all again."""
    cases = ["split", "plain"] if api == "chat" else ["cut", "refused", "plain"]
    spec = CallSpec(endpoint=url, api=api, stream=api == "chat", max_retries=0)
    with Ledger(tmp_path / "ledger.sqlite", key="id") as ledger:
        await run_bulk(input_batches(spec, cases), call=spec, key="id", ledger=ledger)
        rows = {cases[r["id"]]: r for r in pa.Table.from_batches(ledger.rows_of_run()).to_pylist()}
    assert rows["plain"]["response"] == "fine"
    if api == "chat":
        assert rows["split"]["response"] == "smile \U0001f600"  # the two halves, paired
        return
    assert rows["cut"]["response"] == "cut \ufffd"  # a lone half: the replacement character
    assert rows["cut"]["trace_id"] == "tr-\ufffd"
    assert rows["refused"]["error"].startswith("[permanent] HTTP 400")
    assert "bad \ufffd input" in rows["refused"]["error"]
