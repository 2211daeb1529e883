"""The scenarios: what the agent does, how many rows, and what concurrency users ask for."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# The clients of most scenarios (bench/clients/base.py names them all).
STANDARD_CLIENTS: tuple[str, ...] = (
    "raw aiohttp",
    "openai loop",
    "openai gather",
    "cookbook processor",
    "agentbatch.run",
    "agentbatch run_bulk",
)
# S8: the REST fallback on the spark target's driver (the serverless path), beside the local one.
WITH_SPARK_DRIVER = (*STANDARD_CLIENTS, "spark driver")
SPARK_SLOTS = (1, 2, 4)
S7_CLIENTS: tuple[str, ...] = (
    "raw aiohttp",
    "agentbatch.run",
    *(f"spark executors x{n}" for n in SPARK_SLOTS),
)


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    rows: int
    latency_ms: float
    # What the user asks of every client (semaphore size, agentbatch max_concurrency).
    concurrency: int
    # The server admits this many requests at once and answers 429 + Retry-After beyond.
    capacity: int | None = None
    stream: bool = False
    # The sequential loop runs on this many rows only, so it finishes in a few seconds.
    sequential_rows: int = 60
    # agentbatch runs with default settings (no max_concurrency): it must find the rate itself.
    agentbatch_defaults: bool = False
    # Rounds of every client (the median is reported): more where a target compares clients,
    # since this machine's noise is larger than the gap being measured.
    rounds: int = 1
    clients: tuple[str, ...] = STANDARD_CLIENTS

    @property
    def ideal_rows_per_s(self) -> float:
        """Rows per second of a client that always has `min(concurrency, capacity)` in flight."""
        in_flight = (
            self.concurrency if self.capacity is None else min(self.concurrency, self.capacity)
        )
        return in_flight / (self.latency_ms / 1000.0)

    def with_rows(self, rows: int) -> Scenario:
        return dataclasses.replace(
            self,
            rows=rows,
            sequential_rows=min(self.sequential_rows, rows),
        )

    def quick(self) -> Scenario:
        """A small version for smoke runs: a tenth of the rows (at least 200), one round."""
        return dataclasses.replace(
            self,
            rows=max(200, self.rows // 10),
            sequential_rows=max(10, self.sequential_rows // 5),
            rounds=1,
        )


AGENT_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "S1",
        "fast agent",
        rows=5_000,
        latency_ms=50,
        concurrency=64,
        rounds=3,
        clients=WITH_SPARK_DRIVER,
    ),
    Scenario("S2", "slow agent", rows=3_000, latency_ms=500, concurrency=256, sequential_rows=8),
    Scenario(
        "S3",
        "rate-limited agent",
        rows=5_000,
        latency_ms=50,
        concurrency=64,
        capacity=32,
        agentbatch_defaults=True,
        clients=WITH_SPARK_DRIVER,
    ),
    Scenario("S5", "streaming", rows=5_000, latency_ms=50, concurrency=64, stream=True, rounds=3),
    # A fast agent at high concurrency: the client's CPU per row is what bounds it.
    # Only the clients its targets compare: the alternatives take minutes on 10,000 rows.
    Scenario(
        "S6",
        "fast agent, CPU-bound client",
        rows=10_000,
        latency_ms=5,
        concurrency=128,
        rounds=3,
        clients=("raw aiohttp", "agentbatch.run", "agentbatch run_bulk"),
    ),
    # The spark target's fallback on local executors, at an agent's capacity, default settings.
    Scenario(
        "S7",
        "spark executors at an agent's capacity",
        rows=6_000,
        latency_ms=50,
        concurrency=64,
        capacity=32,
        agentbatch_defaults=True,
        clients=S7_CLIENTS,
    ),
)

# S4: rows through the local engine with the builtin instant agent.
SCALE_SIZES: tuple[int, ...] = (100_000, 1_000_000, 3_000_000)
QUICK_SCALE_SIZES: tuple[int, ...] = (2_000, 20_000)

# S4r: a scheduled job's second run over the same rows, the request edited, so every row is
# answered again and the MERGE replaces every row of the output: the local warehouse table, and a
# Delta folder written with `deltalake`. Sizes as S4's options give them (--scale-sizes, --quick).
SECOND_RUN_SIZES: tuple[int, ...] = (1_000_000, 3_000_000)
SECOND_RUN_OUTPUTS: tuple[str, ...] = ("warehouse", "delta")

ALL_IDS: tuple[str, ...] = ("S1", "S2", "S3", "S4", "S4r", "S5", "S6", "S7")
