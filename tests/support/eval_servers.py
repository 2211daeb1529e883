"""Scripted agents for evaluation tests: real HTTP servers on 127.0.0.1 whose answer is a chosen
function of the request text, so a test knows every answer (and so every score) in advance.

They speak the two shapes the REST client sends to a URL endpoint: the Responses API on
`/responses` and Chat Completions on `/invocations`.
"""

from __future__ import annotations

import csv
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from agentbatch.testing.background import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]
TICKETS_CSV = ROOT / "agentbatch" / "data" / "support_tickets.csv"

Answer = Callable[[str], str]


class ScriptedAgent:
    """Answers each request with `answer(user_text)`; counts and keeps what it was asked."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.texts: list[str] = []
        self._lock = threading.Lock()
        self._server = BackgroundServer(self._app, name="scripted-agent")

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.texts)

    def __enter__(self) -> ScriptedAgent:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/responses", self._responses)
        app.router.add_post("/invocations", self._chat)
        return app

    def _reply_text(self, text: str) -> str:
        with self._lock:
            self.texts.append(text)
        return self.answer(text)

    async def _responses(self, request: web.Request) -> web.Response:
        body = await request.json()
        answer = self._reply_text(_user_text(body.get("input")))
        return web.json_response(
            {
                "object": "response",
                "status": "completed",
                "output": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": answer}],
                    }
                ],
                "usage": {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12},
            }
        )

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        answer = self._reply_text(_user_text(body.get("messages") or body.get("input")))
        return web.json_response(
            {
                "object": "chat.completion",
                "id": "chatcmpl-1",
                "model": "scripted",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            }
        )


def _user_text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    texts = []
    for message in messages or []:
        if message.get("role") not in (None, "user"):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [part.get("text", "") for part in content if isinstance(part, dict)]
    return texts[-1] if texts else ""


def load_tickets() -> list[dict[str, str]]:
    with TICKETS_CSV.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# A request that names its ticket: the sample tickets repeat texts, so text alone is ambiguous.
ID_REQUEST = (
    "concat('Classify this support ticket #', ticket_id, '. Ticket: ', subject, '\\n\\n', body)"
)
_TICKET_ID = re.compile(r"ticket #(\d+)")


def ticket_id_of(text: str) -> int:
    match = _TICKET_ID.search(text)
    if match is None:
        raise LookupError(f"no ticket id in request {text[:60]!r}")
    return int(match.group(1))


def wrong_label(label: str) -> str:
    return "bug" if label == "other" else "other"


def labeller(right: Callable[[int], bool]) -> Answer:
    """A triage agent that is right exactly on the tickets whose id satisfies `right`."""
    labels = {int(t["ticket_id"]): t["label"] for t in load_tickets()}

    def answer(text: str) -> str:
        ticket_id = ticket_id_of(text)
        label = labels[ticket_id] if right(ticket_id) else wrong_label(labels[ticket_id])
        return json.dumps({"label": label, "urgency": 3})

    return answer


def write_id_job(project: Path, name: str = "eval_triage", output: str = "triage_eval") -> Path:
    """The example evaluation job, with requests that name their ticket id."""
    text = (ROOT / "jobs" / "eval_triage.yml").read_text()
    request = next(line for line in text.splitlines() if line.startswith("request:"))
    text = text.replace(request, f'request: "{ID_REQUEST}"')
    text = text.replace("name: eval_triage", f"name: {name}")
    text = text.replace("support.triage_eval", f"support.{output}")
    path = project / "jobs" / f"{name}.yml"
    path.write_text(text)
    return path
