"""A push-down `--full-refresh` is continued as the REST fallback's is: after `estimate
--full-refresh`, or a refresh killed midway, the next `--full-refresh` skips the keys whose target
row answers the current request since the refresh began, so each key is paid once per refresh.
Through the unmodified connector and the loopback warehouse (in any session time zone); on local
Spark in tests/engines/spark/test_spark_push_down_refresh_continued.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import agentbatch
from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig
from tests.support.warehouse.server import Warehouse

from . import test_databricks_sql_run as runs
from .test_databricks_sql_run import ALL_TICKETS, ROOT, SUMMARISE, target_settings

# The loopback warehouse with the tickets, the demo agent, no ambient Databricks credentials.
warehouse = runs.warehouse
agent = runs.agent
isolated_auth = runs.isolated_auth
run_job = runs.run_job

SUMMARIES = "main.support.ticket_summaries"


def paid(agent: AgentServer) -> int:
    """The agent's calls so far (several tickets share a text: calls are counted, not keyed)."""
    return agent.stats().requests_total


def estimate_refresh(warehouse: Warehouse, tmp_path: Path, sample: int, **options: Any) -> Any:
    """`estimate --full-refresh` of the summaries job: it starts the refresh it samples."""
    return agentbatch.estimate(
        SUMMARISE,
        target="databricks-sql",
        sample=sample,
        full_refresh=True,
        settings=target_settings(warehouse),
        project_dir=tmp_path,
        state_dir=tmp_path / "state",
        progress=False,
        **options,
    )


def own_route(agent: AgentServer) -> dict[str, str]:
    """The endpoint's own Model Serving route (the loopback workspace serves none), for a REST
    fallback run: the same agent, so the same requests and fingerprints as ai_query's."""
    endpoint = "databricks-meta-llama-3-3-70b-instruct"
    return {endpoint: f"{agent.url}/serving-endpoints/{endpoint}/invocations"}


def answered_at(result: Any) -> list[datetime]:
    return [r["answered_at"] for r in result.engine.read_table(SUMMARIES).to_pylist()]


@pytest.mark.parametrize("warehouse", ["UTC", "America/Los_Angeles", "Asia/Tokyo"], indirect=True)
def test_a_refresh_after_estimate_full_refresh_pays_each_key_once(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """The refresh's start is compared with `answered_at` in the session's time zone: read
    without its offset, it would be hours off (Tokyo: every row refreshed already; Los Angeles:
    the sample paid again)."""
    before = max(answered_at(run_job(SUMMARISE)))
    found = estimate_refresh(warehouse, tmp_path, sample=5)
    assert found.sampled == 5 and found.to_send == ALL_TICKETS
    refresh = run_job(SUMMARISE, full_refresh=True)
    assert refresh.summary["skipped"] == 5 and refresh.summary["rows"] == ALL_TICKETS - 5
    assert paid(agent) == 2 * ALL_TICKETS  # the first run, then the refresh: sample and rest
    assert all(at > before for at in answered_at(refresh))  # every row refreshed
    # That refresh finished: the next one pays for every row again.
    assert run_job(SUMMARISE, full_refresh=True).summary["rows"] == ALL_TICKETS
    assert paid(agent) == 3 * ALL_TICKETS


def test_a_refresh_without_a_state_folder_still_runs(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Push-down needs no state but to continue a refresh: where the state folder cannot be
    made (a file stands there), a --full-refresh runs as before, with a warning."""
    run_job(SUMMARISE)
    state = tmp_path / "state"
    if state.is_dir():
        shutil.rmtree(state)
    state.write_text("not a folder\n")
    refresh = run_job(SUMMARISE, full_refresh=True)
    assert refresh.summary["rows"] == ALL_TICKETS
    assert paid(agent) == 2 * ALL_TICKETS
    assert "cannot record the full refresh" in caplog.text


CHILD = """
import json, sys
import agentbatch
config = json.loads(sys.argv[1])
agentbatch.run(
    config["job"], target="databricks-sql", settings=config["settings"],
    project_dir=config["project"], state_dir=config["state"], full_refresh=True, progress=False,
)
"""


def test_a_killed_refresh_is_continued_not_paid_again(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """SIGKILL a push-down `--full-refresh` while ai_query is calling the agent: the warehouse
    finishes the statement without its client (docs/databricks-behaviour.md, warehouse), so the
    refresh's rows are all in the target, and the next `--full-refresh` pays for none of them."""
    before = max(answered_at(run_job(SUMMARISE)))
    agent.configure(FaultConfig(latency_ms=20))  # 300 calls, 8 at a time: about a second
    config = {
        "job": str(SUMMARISE),
        "settings": target_settings(warehouse),
        "project": str(tmp_path),
        "state": str(tmp_path / "state"),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while agent.stats().requests_total < ALL_TICKETS + 20:
            assert child.poll() is None, "the refresh ended before it was killed"
            assert time.monotonic() < deadline, "the refresh never called the agent"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert warehouse.wait_until_idle(timeout_s=60)
    agent.configure(FaultConfig())
    assert paid(agent) == 2 * ALL_TICKETS  # the orphaned statement answered every row

    continued = run_job(SUMMARISE, full_refresh=True)
    assert continued.summary["skipped"] == ALL_TICKETS and continued.summary["rows"] == 0
    assert paid(agent) == 2 * ALL_TICKETS
    assert all(at > before for at in answered_at(continued))
    # A plain run finishes, so it gives the refresh up: the next one pays every row again.
    run_job(SUMMARISE)
    assert run_job(SUMMARISE, full_refresh=True).summary["rows"] == ALL_TICKETS


def test_a_rest_refresh_continues_a_push_down_one_from_the_target(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """The target is the record of a refresh on either path: a REST fallback run
    (`force_fallback`) continuing a refresh that push-down began skips the keys push-down
    answered since it began, as a push-down run would. Before, it paid them again."""
    run_job(SUMMARISE)
    estimate_refresh(warehouse, tmp_path, sample=5)
    route = own_route(agent)
    refresh = run_job(SUMMARISE, full_refresh=True, force_fallback=True, endpoints=route)
    assert refresh.plan.strategy == "rest-fallback"
    assert refresh.summary["skipped"] == 5 and refresh.summary["rows"] == ALL_TICKETS - 5
    assert paid(agent) == 2 * ALL_TICKETS  # the first run, then the sample and the rest
    # That refresh finished: the next one pays for every row again.
    again = run_job(SUMMARISE, full_refresh=True, force_fallback=True, endpoints=route)
    assert again.summary["rows"] == ALL_TICKETS


def test_a_rest_estimate_of_a_refresh_counts_and_samples_what_the_refresh_left(
    warehouse: Warehouse, agent: AgentServer, run_job: Any, tmp_path: Path
) -> None:
    """`estimate --full-refresh` on the REST path continues the unfinished refresh as the run
    does: the keys push-down answered since it began are neither counted nor sampled again.
    Before, it counted every row and its sample paid some of those keys a second time."""
    run_job(SUMMARISE)
    estimate_refresh(warehouse, tmp_path, sample=5)
    route = own_route(agent)
    calls = paid(agent)
    # Every row left is sampled: a sample of the refreshed ones would show here.
    found = estimate_refresh(
        warehouse, tmp_path, sample=ALL_TICKETS, force_fallback=True, endpoints=route
    )
    assert found.to_send == ALL_TICKETS - 5 and found.sampled == ALL_TICKETS - 5
    assert paid(agent) - calls == ALL_TICKETS - 5
    # Everything is answered for this refresh now: the run sends nothing and ends it.
    refresh = run_job(SUMMARISE, full_refresh=True, force_fallback=True, endpoints=route)
    assert refresh.summary["rows"] == 0 and refresh.summary["skipped"] == ALL_TICKETS
    assert paid(agent) - calls == ALL_TICKETS - 5
