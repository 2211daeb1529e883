"""A distributed run longer than its tokens live: every executor keeps valid credentials.

Tokens of the loopback workspace expire after one second here and the agent refuses expired
ones (as the Apps proxy does); the run takes several seconds over two tasks. Executors sign in as
the service principal themselves (databricks-sdk oauth-m2m) and refresh, so every row is
answered; headers minted once on the driver would have expired a second into the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentbatch.engines.spark.calls import remote_call
from agentbatch.planning.definition import RunOptions
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.fake_workspace import serve_workspace
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.tokens import TokenAuthority
from tests.support.databricks_env import isolate

from .test_spark_fallback import triage_plan, write_tickets

CLIENT_ID, CLIENT_SECRET = "spark-runner", "spark-runner-secret-55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


def test_tokens_expiring_in_a_second_do_not_stop_a_long_distributed_run(
    make_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One-second tokens: Databricks' refusal of a token with 30 s or less left is off here.
    authority = TokenAuthority(
        clients={CLIENT_ID: CLIENT_SECRET}, pats={}, token_ttl_s=1.0, min_remaining_s=0
    )
    with (
        serve_agent(FaultConfig(seed=1, latency_ms=150), authority=authority) as agent,
        serve_workspace({"triage-agent": agent.url}, authority=authority) as ws,
    ):
        monkeypatch.setenv("DATABRICKS_HOST", ws.url)
        monkeypatch.setenv("DATABRICKS_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
        steps, _ = triage_plan(agent, concurrency=2)
        remote = remote_call(steps.call)
        assert remote.oauth is not None and not remote.headers.get("Authorization")
        assert CLIENT_SECRET not in repr(remote)
        tickets = write_tickets(tmp_path / "tickets.csv", 60)
        engine = make_engine(
            {"partitions": 2, "rest_fallback_on": "executors"},
            tables={"main.support.tickets": tickets, "main.support.triage": tmp_path / "out"},
            output_tables=["main.support.triage"],
        )
        stats = engine.run_distributed(steps.distributed(RunOptions(endpoints={})))
        issued = ws.authority.issued
    assert stats["ok"] == 60 and stats["errors"] == 0
    assert issued >= 3  # the run outlived several tokens
    rows = engine.read_table("main.support.triage").to_pylist()
    assert len(rows) == 60 and all(r["error"] is None for r in rows)
