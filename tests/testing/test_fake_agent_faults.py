"""Every fault kind as a client sees it, plus capacity, permanent faults and reproducibility."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.sse import STREAM_ERROR_MESSAGE

MakeAgent = Callable[..., AgentServer]


async def _post(url: str, body: Any, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.post(url, json=body) as response,
    ):
        return response.status, dict(response.headers), await response.read()


@pytest.mark.parametrize(
    ("kind", "status", "retry_after"),
    [
        ("rate_limit", 429, "2"),
        ("rate_limit_no_retry_after", 429, None),
        ("server_error", 500, None),
        ("unavailable", 503, None),
    ],
)
async def test_status_faults(
    make_agent: MakeAgent, kind: str, status: int, retry_after: str | None
) -> None:
    server = make_agent(FaultConfig(**{f"p_{kind}": 1.0, "retry_after_s": 2.0}))  # type: ignore[arg-type]
    got, headers, raw = await _post(f"{server.url}/responses", {"input": "x"})
    assert got == status
    assert headers.get("Retry-After") == retry_after
    assert json.loads(raw)["message"]
    stats = server.stats()
    assert stats.faults == {kind: 1}
    assert stats.status_counts == {status: 1}
    assert stats.rate_limited == (1 if status == 429 else 0)


async def test_connection_reset(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(p_connection_reset=1.0))
    with pytest.raises(aiohttp.ClientError):
        await _post(f"{server.url}/responses", {"input": "x"})
    assert server.stats().faults == {"connection_reset": 1}


async def test_hang_outlasts_the_client_timeout(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(p_hang=1.0, hang_s=60))
    with pytest.raises(asyncio.TimeoutError):
        await _post(f"{server.url}/responses", {"input": "x"}, timeout=0.3)
    assert server.stats().faults == {"hang": 1}


async def test_malformed_json(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(p_malformed_json=1.0))
    status, headers, raw = await _post(f"{server.url}/responses", {"input": "x"})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


@pytest.mark.parametrize("stream", [True, False])
async def test_truncated_body(make_agent: MakeAgent, stream: bool) -> None:
    server = make_agent(FaultConfig(p_truncated_stream=1.0))
    with pytest.raises(aiohttp.ClientPayloadError):
        await _post(f"{server.url}/responses", {"input": "one two three", "stream": stream})
    stats = server.stats()
    assert stats.streams_completed == 0


async def test_slow_stream_still_completes(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(p_slow_stream=1.0, slow_chunk_ms=5))
    status, _, raw = await _post(f"{server.url}/responses", {"input": "a b", "stream": True})
    assert status == 200
    assert b"event: response.completed" in raw
    # The server counts the stream once its handler returns, which may be just after the client
    # has read the last event.
    for _ in range(200):
        if server.stats().streams_completed:
            break
        await asyncio.sleep(0.01)
    assert server.stats().streams_completed == 1


@pytest.mark.parametrize(
    ("style", "marker"),
    [
        ("openai", b"event: error\n"),
        ("mlflow", json.dumps({"error": STREAM_ERROR_MESSAGE}).encode()),
    ],
)
async def test_in_stream_error(make_agent: MakeAgent, style: str, marker: bytes) -> None:
    server = make_agent(FaultConfig(p_stream_error=1.0), stream_style=style)
    status, _, raw = await _post(f"{server.url}/responses", {"input": "a b c", "stream": True})
    assert status == 200
    assert marker in raw
    assert b"response.output_item.done" not in raw


async def test_stream_error_without_stream_is_a_failed_response(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(p_stream_error=1.0))
    status, _, raw = await _post(f"{server.url}/responses", {"input": "x"})
    body = json.loads(raw)
    assert status == 200
    assert body["status"] == "failed" and body["error"]["code"] == "server_error"


async def test_fail_first_then_success(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(fail_first=2, fail_first_kind="unavailable"))
    body = {"input": "x", "custom_inputs": {"key": "row-7"}}
    statuses = [(await _post(f"{server.url}/responses", body))[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert server.stats().requests_for("row-7") == 3


async def test_permanent_marker_never_succeeds(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(permanent={"PERMANENT_ERROR": 422}))
    for _ in range(3):
        status, _, raw = await _post(f"{server.url}/responses", {"input": "a PERMANENT_ERROR b"})
        assert status == 422
        assert "PERMANENT_ERROR" in json.loads(raw)["message"]
    assert server.stats().faults == {"permanent": 3}


async def test_capacity_rejects_beyond_the_limit(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(capacity=2, p_hang=1.0, hang_s=60, capacity_retry_after_s=0.5))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        hanging = [
            asyncio.create_task(session.post(f"{server.url}/responses", json={"input": f"h{i}"}))
            for i in range(2)
        ]
        deadline = asyncio.get_running_loop().time() + 30
        while server.stats().in_flight < 2:  # wait until both hold a slot
            assert asyncio.get_running_loop().time() < deadline, "hanging requests never arrived"
            await asyncio.sleep(0.01)
        async with session.post(f"{server.url}/responses", json={"input": "third"}) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "0.5"
            assert "capacity" in (await response.json())["message"]
        for task in hanging:
            task.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
    stats = server.stats()
    assert stats.faults["capacity"] == 1
    assert stats.max_in_flight == 3


async def test_concurrency_is_counted(make_agent: MakeAgent) -> None:
    server = make_agent(FaultConfig(latency_ms=500))
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            async with session.post(f"{server.url}/responses", json={"input": str(i)}) as r:
                await r.read()
                return r.status

        assert await asyncio.gather(*(one(i) for i in range(20))) == [200] * 20
    stats = server.stats()
    assert 2 <= stats.max_in_flight <= 20
    assert stats.in_flight == 0


async def test_faults_are_reproducible_under_concurrency(make_agent: MakeAgent) -> None:
    config = FaultConfig(seed=11, p_server_error=0.3, p_unavailable=0.2)

    async def outcomes(server: AgentServer) -> dict[str, list[int]]:
        results: dict[str, list[int]] = {}
        async with aiohttp.ClientSession() as session:

            async def row(i: int) -> None:
                for _ in range(3):
                    body = {"input": "x", "custom_inputs": {"key": f"r{i}"}}
                    async with session.post(f"{server.url}/responses", json=body) as r:
                        results.setdefault(f"r{i}", []).append(r.status)

            await asyncio.gather(*(row(i) for i in range(40)))
        return results

    first = await outcomes(make_agent(config))
    second = await outcomes(make_agent(config))
    assert first == second
    flat = [s for statuses in first.values() for s in statuses]
    assert {200, 500, 503} <= set(flat)
