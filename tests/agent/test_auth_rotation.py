"""Credentials rotated under a run: a 401 forces one new token per generation, and only a token a
forced refresh minted that is refused before any call succeeded with it stops the run."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping

import pytest

from agentbatch.agent.auth import AuthHeaders
from agentbatch.agent.bodies import BodyBuilder
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.endpoints import Endpoint
from agentbatch.agent.limiter import Limiter
from agentbatch.agent.stats import BulkStats
from agentbatch.agent.transport import RawReply
from agentbatch.agent.worker import Caller
from agentbatch.errors import AgentError

ANSWER = json.dumps(
    {
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok"}],
            }
        ]
    }
).encode()


class MintingConfig:
    """Stands in for databricks-sdk's Config: each forced re-initialisation mints the next token."""

    auth_type = "oauth-m2m"

    def __init__(self) -> None:
        self.minted = 0

    def authenticate(self) -> dict[str, str]:
        return {"Authorization": f"Bearer t{self.minted}"}

    def init_auth(self) -> None:
        self.minted += 1


class RotatingApp:
    """Accepts tokens minted at or after `valid_from`. Row A's call with t1 waits until a call of
    row B succeeded with t1, then the workspace rotates (t1 revoked) and A is refused."""

    def __init__(self, auth: AuthHeaders, rotate_on_second_a: bool = True) -> None:
        self.auth = auth
        self.valid_from = 1  # t0 is already revoked when the run starts
        self.rotate_on_second_a = rotate_on_second_a
        self.calls: list[tuple[str, str]] = []

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, stream: bool, timeout_s: float
    ) -> RawReply:
        token = headers["Authorization"].split()[1]
        row = "A" if b"row A" in body else "B"
        self.calls.append((row, token))
        if row == "A" and token == "t1" and self.rotate_on_second_a:
            for _ in range(500):  # until B's success with t1 is recorded
                if self.auth.generation == 1 and not self.auth.refused_after_refresh(1):
                    break
                await asyncio.sleep(0.01)
            self.valid_from = 2
        if int(token[1:]) < self.valid_from:
            return RawReply(401, {}, b'{"error_code": "UNAUTHENTICATED", "message": "expired"}')
        return RawReply(200, {"content-type": "application/json"}, ANSWER)

    async def close(self) -> None:
        pass


def caller(app_auth: AuthHeaders, transport: RotatingApp) -> tuple[Caller, BodyBuilder]:
    call = CallSpec(endpoint="apps/triage", max_concurrency=2, max_retries=0)
    endpoint = Endpoint(
        kind="app", name="triage", url="http://127.0.0.1:9/responses", auth=app_auth
    )
    worker = Caller(
        call=call,
        endpoint=endpoint,
        fmt=None,
        limiter=Limiter(max_concurrency=2, initial=2),
        transport=transport,
        stats=BulkStats(),
        rng=random.Random(0),
        stop=asyncio.Event(),
    )
    return worker, BodyBuilder(call, model=None, response_format=None)


async def test_a_row_refused_again_after_its_own_refresh_refreshes_again() -> None:
    config = MintingConfig()
    auth = AuthHeaders(config)  # type: ignore[arg-type]
    app = RotatingApp(auth)
    worker, bodies = caller(auth, app)
    a, b = await asyncio.gather(worker.call(bodies, "row A"), worker.call(bodies, "row B"))
    assert a is not None and a.reply is not None and a.reply.text == "ok"
    assert b is not None and b.reply is not None
    # Row A: t0 refused, t1 refused after it had worked for B, t2 answered.
    assert [token for row, token in app.calls if row == "A"] == ["t0", "t1", "t2"]
    assert config.minted == 2  # one new token per generation, not per row that saw a 401


async def test_a_freshly_minted_token_refused_before_any_success_stops_the_run() -> None:
    config = MintingConfig()
    auth = AuthHeaders(config)  # type: ignore[arg-type]
    app = RotatingApp(auth, rotate_on_second_a=False)
    app.valid_from = 100  # the workspace refuses every token it mints: wrong principal
    worker, bodies = caller(auth, app)
    with pytest.raises(AgentError, match="401"):
        await worker.call(bodies, "row A")
    assert config.minted == 1  # one forced refresh, then the run stops
