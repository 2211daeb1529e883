"""How each client is configured in each scenario: as its users would configure it.

- every client is given the scenario's concurrency (a semaphore, `agent.max_concurrency`), except
  agentbatch in S3, which runs with defaults and must find the agent's rate itself;
- the raw baseline is the ceiling: in S3 it is told the agent's capacity (an oracle no user has);
- the cookbook processor has no concurrency setting, only request buckets: its rate is the
  concurrency over the latency (the same load), in S3 90% of the capacity's rate (the documented
  limit, with headroom); it gets a time budget, since its 15 s pause after any 429 would
  otherwise make S3 run for many minutes;
- clients that retry make up to 8 retries, agentbatch's default;
- every client gets the same rows, rounds and untimed set-up (imports, building its client),
  except the sequential loop: it runs once on the first rows only (see scenarios.py), its rate
  is steady long before, and the benchmark must stay short.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.clients.base import SPARK_VARIANTS, ClientConfig
from bench.scenarios import Scenario

COOKBOOK_TIME_BUDGET_S = 20.0
COOKBOOK_S3_HEADROOM = 0.9


@dataclass(frozen=True)
class Setup:
    client: str
    note: str
    rows: int
    concurrency: int | None
    requests_per_s: float | None = None
    time_budget_s: float | None = None
    variant: str = ""

    def config(self, url: str, inputs: str, workdir: str, scenario: Scenario) -> ClientConfig:
        return ClientConfig(
            url=url,
            inputs=inputs,
            workdir=workdir,
            rows=self.rows,
            concurrency=self.concurrency,
            stream=scenario.stream,
            requests_per_s=self.requests_per_s,
            time_budget_s=self.time_budget_s,
            variant=self.variant,
        )


def setups(scenario: Scenario, clients: tuple[str, ...]) -> list[Setup]:
    conc = scenario.concurrency
    latency_s = scenario.latency_ms / 1000.0
    limited = scenario.capacity is not None
    raw_conc = min(conc, scenario.capacity) if scenario.capacity is not None else conc
    cookbook_rate = (
        COOKBOOK_S3_HEADROOM * scenario.capacity / latency_s
        if scenario.capacity is not None
        else conc / latency_s
    )
    rows = scenario.rows
    agentbatch_conc = None if scenario.agentbatch_defaults else conc
    agentbatch_note = (
        "defaults (adaptive)" if agentbatch_conc is None else f"max_concurrency {conc}"
    )
    every = {
        "raw aiohttp": Setup(
            "raw aiohttp",
            f"semaphore {raw_conc}" + (" (told the capacity)" if limited else ""),
            scenario.rows,
            raw_conc,
        ),
        "openai loop": Setup(
            "openai loop",
            f"sequential, first {scenario.sequential_rows} rows",
            scenario.sequential_rows,
            1,
        ),
        "openai gather": Setup(
            "openai gather",
            f"semaphore {conc}",
            rows,
            conc,
        ),
        "cookbook processor": Setup(
            "cookbook processor",
            f"{cookbook_rate:.0f} requests/s bucket, {COOKBOOK_TIME_BUDGET_S:.0f}s budget",
            rows,
            None,
            requests_per_s=cookbook_rate,
            time_budget_s=COOKBOOK_TIME_BUDGET_S,
        ),
        "agentbatch.run": Setup("agentbatch.run", agentbatch_note, scenario.rows, agentbatch_conc),
        "agentbatch run_bulk": Setup(
            "agentbatch run_bulk", agentbatch_note, scenario.rows, agentbatch_conc
        ),
        "agentbatch.run dbsql": Setup(
            "agentbatch.run dbsql",
            f"{agentbatch_note}; databricks-sql target, loopback warehouse",
            scenario.rows,
            agentbatch_conc,
        ),
        "agentbatch.run dbsql volume": Setup(
            "agentbatch.run dbsql volume",
            f"{agentbatch_note}; databricks-sql target, loopback warehouse, staging volume",
            scenario.rows,
            agentbatch_conc,
            variant="volume",
        ),
    }
    for name, variant in SPARK_VARIANTS.items():
        place, _, slots = variant.partition(":")
        every[name] = Setup(
            name,
            f"{agentbatch_note}; fallback on the {'driver' if place == 'driver' else 'executors'}"
            f", local[{slots}]",
            scenario.rows,
            agentbatch_conc,
            variant=variant,
        )
    return [every[name] for name in clients if name in every and name in scenario.clients]
