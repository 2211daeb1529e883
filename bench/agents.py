"""S1, S2, S3, S5: one agent server process per scenario, every client in turn against it."""

from __future__ import annotations

import re
from pathlib import Path

from bench.console import Log, describe, to_stderr
from bench.data import write_requests, write_table
from bench.measure import Measurement, median_run, run_worker
from bench.scenarios import Scenario
from bench.server import agent_process
from bench.setups import setups

# Every client runs in every round on the same rows (the median run is reported), except the
# sequential loop: its rate is steady after a few rows, and it would take many minutes.
ONCE = frozenset({"openai loop"})
WORKER_TIMEOUT_S = 300.0


def run_agent_scenario(
    scenario: Scenario,
    clients: tuple[str, ...],
    root: Path,
    *,
    rounds: int | None = None,
    log: Log = to_stderr,
) -> list[Measurement]:
    """Measure every client on `scenario`; all but the ONCE ones in each of `rounds` rounds
    (default: the scenario's), interleaved so they share the machine's conditions."""
    inputs = prepare_inputs(scenario, root)
    runs: dict[str, list[Measurement]] = {}
    with agent_process(scenario) as agent:
        for round_ in range(rounds or scenario.rounds):
            for setup in setups(scenario, clients):
                if round_ > 0 and setup.client in ONCE:
                    continue
                workdir = inputs / f"{_slug(setup.client)}-{round_}"
                workdir.mkdir()
                config = setup.config(agent.url, str(inputs), str(workdir), scenario)
                agent.reset()
                cpu_before = agent.cpu_seconds()
                measured = run_worker(
                    scenario.id, setup.client, setup.note, config, WORKER_TIMEOUT_S
                )
                cpu_after = agent.cpu_seconds()
                stats = agent.stats()
                measured.requests = int(stats["requests_total"])
                measured.http_429 = int(stats["status_counts"].get("429", 0))
                if not measured.error:
                    measured.agent_busy_s = float(stats.get("busy_s") or 0.0) or None
                if cpu_before is not None and cpu_after is not None:
                    measured.server_cpu_s = cpu_after - cpu_before
                log(describe(measured))
                runs.setdefault(setup.client, []).append(measured)
    return [median_run(client_runs) for client_runs in runs.values()]


def prepare_inputs(scenario: Scenario, root: Path) -> Path:
    """The scenario's folder with its rows as Parquet and as JSON lines."""
    inputs = root / scenario.id
    inputs.mkdir(parents=True, exist_ok=True)
    write_table(inputs / "tickets.parquet", scenario.rows)
    write_requests(inputs / "requests.jsonl", scenario.rows)
    return inputs


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
