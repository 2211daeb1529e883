"""The load generator used to measure the demo agent (numbers only; no timing asserted)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.loadgen import sustained, wave


async def test_sustained_and_wave(agent: AgentServer) -> None:
    result = await sustained(f"{agent.url}/responses", concurrency=4, seconds=0.3)
    assert result.requests > 0
    assert result.statuses == {"200": result.requests}
    assert result.ok == result.requests
    burst = await wave(f"{agent.url}/responses", size=50, stream=True)
    assert burst.ok == 50
    # The server counts a stream complete after its last byte reached the client: wait for it.
    for _ in range(500):
        if agent.stats().in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert agent.stats().streams_completed == 50
    assert agent.stats().requests_total == result.requests + 50


async def test_errors_are_counted_not_raised() -> None:
    with serve_agent(FaultConfig(p_connection_reset=0.5, p_unavailable=0.5, seed=1)) as server:
        result = await wave(f"{server.url}/responses", size=40)
    assert result.ok == 0
    assert result.requests == 40
    assert "503" in result.statuses
    assert len(result.statuses) >= 2


def test_command_line_prints_one_json_line(agent: AgentServer) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentbatch.testing.loadgen", agent.url, "--wave", "5"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert json.loads(out)["ok"] == 5
