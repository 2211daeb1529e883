"""The databricks-sql clients (`agentbatch.run dbsql`, `... volume`) on a few rows, not under
callgrind: the set-up starts the loopback warehouse in a process of its own and loads the source
table there; the run writes every answer to the warehouse's output table; closing stops the
warehouse."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from bench import warehouse
from bench.agents import prepare_inputs
from bench.clients.agentbatch_run import OUTPUT_TABLE
from bench.clients.agentbatch_run_dbsql import prepare
from bench.clients.base import Counts
from bench.scenarios import AGENT_SCENARIOS
from bench.server import agent_process
from bench.setups import setups

ROWS = 40


@pytest.mark.parametrize("client", ["agentbatch.run dbsql", "agentbatch.run dbsql volume"])
def test_the_answers_are_written_to_the_warehouse_table(
    client: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client sets the run's environment in its own process; here, set back afterwards.
    for name, value in warehouse.environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    s6 = next(s for s in AGENT_SCENARIOS if s.id == "S6")
    scenario = dataclasses.replace(s6, rows=ROWS, clients=(client,))
    inputs = prepare_inputs(scenario, tmp_path)
    [setup] = setups(scenario, (client,))
    workdir = tmp_path / "client"
    workdir.mkdir()
    with agent_process(scenario) as agent:
        job = prepare(setup.config(agent.url, str(inputs), str(workdir), scenario))
        try:
            counts = job()
            with warehouse.connect(job.host) as cur:
                cur.execute(f"SELECT ticket_id, response, error FROM {OUTPUT_TABLE}")
                written = sorted(tuple(row) for row in cur.fetchall())
            requests = agent.stats()["requests_total"]
        finally:
            job.close()
    assert counts == Counts(rows=ROWS, ok=ROWS, failed=0)
    assert [key for key, _, _ in written] == list(range(1, ROWS + 1))
    assert all(response and error is None for _, response, error in written), written[:3]
    assert requests == ROWS
    # Nothing was written by a local engine in the client's folder.
    assert not list(workdir.rglob("*.duckdb"))
    # Staged through the volume (its write's folder is left, emptied) only when asked.
    staged = workdir / "volumes" / "main" / "bench" / "staging" / "agentbatch"
    assert staged.is_dir() == client.endswith(" volume")
    # The warehouse is stopped: nothing listens on its port (the connector would retry for
    # minutes, so a plain socket asks).
    address, port = job.host.removeprefix("http://").rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, int(port)), timeout=5).close()
