"""A run that starts from an empty ledger does not look its rows up (source keys are unique, so
none can be answered before it is sent); a run on a ledger with answers does, and skips them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agentbatch.agent.bulk import run_bulk
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.ledger import Ledger
from agentbatch.agent.transport import RawReply

from .conftest import input_batches

REPLY = json.dumps(
    {
        "object": "response",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok"}],
            }
        ],
    }
).encode()
# Never contacted: the transport below answers in-process.
URL = "http://127.0.0.1:9/agent"


class InstantTransport:
    def __init__(self) -> None:
        self.calls = 0

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, stream: bool, timeout_s: float
    ) -> RawReply:
        self.calls += 1
        return RawReply(200, {"content-type": "application/json"}, REPLY)

    async def close(self) -> None:
        pass


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every `Ledger.reuse` call."""
    seen: list[int] = []
    original = Ledger.reuse

    def counting(self: Ledger, batch: Any, response_type: Any, *, retry_errors: bool) -> Any:
        seen.append(batch.num_rows)
        return original(self, batch, response_type, retry_errors=retry_errors)

    monkeypatch.setattr(Ledger, "reuse", counting)
    return seen


@pytest.mark.parametrize("endpoint", [URL, "builtin:instant"])
async def test_only_a_ledger_with_earlier_answers_is_looked_up(
    tmp_path: Path, lookups: list[int], endpoint: str
) -> None:
    spec = CallSpec(endpoint=endpoint, max_concurrency=8)
    requests = [f"question {i}" for i in range(50)]
    with Ledger(tmp_path / "ledger.sqlite", key="id") as ledger:
        assert not ledger.has_answers
        first = InstantTransport()
        stats = await run_bulk(
            input_batches(spec, requests), call=spec, key="id", ledger=ledger, transport=first
        )
        assert (lookups, stats.ok, ledger.has_answers) == ([], 50, True)
        again = InstantTransport()
        stats = await run_bulk(
            input_batches(spec, requests), call=spec, key="id", ledger=ledger, transport=again
        )
    assert lookups == [50]
    assert (again.calls, stats.reused, stats.sent) == (0, 50, 0)
    if endpoint == URL:
        assert first.calls == 50


def test_has_answers_survives_reopening(tmp_path: Path) -> None:
    from .conftest import output_rows

    with Ledger(tmp_path / "ledger.sqlite", key="id") as ledger:
        ledger.append(output_rows([1, 2]))
    with Ledger(tmp_path / "ledger.sqlite", key="id") as ledger:
        assert ledger.has_answers
