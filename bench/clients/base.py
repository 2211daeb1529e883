"""What every client is given, what it reports, and the registry of clients."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Display name -> module under bench.clients. Order is the order of the results table.
CLIENT_MODULES: dict[str, str] = {
    "raw aiohttp": "raw_aiohttp",
    "openai loop": "openai_loop",
    "openai gather": "openai_gather",
    "cookbook processor": "cookbook",
    "agentbatch.run": "agentbatch_run",
    "agentbatch run_bulk": "agentbatch_bulk",
    # agentbatch.run on the databricks-sql target, the loopback warehouse in its own process;
    # staging the answers as JSON parameters (the default) or through a volume. In no scenario's
    # clients: `python -m bench.instructions --clients` names them.
    "agentbatch.run dbsql": "agentbatch_run_dbsql",
    "agentbatch.run dbsql volume": "agentbatch_run_dbsql",
    # The spark target (scenarios that name them: S1, S3, S7): where the fallback runs, and slots.
    "spark driver": "agentbatch_spark",
    "spark executors x1": "agentbatch_spark",
    "spark executors x2": "agentbatch_spark",
    "spark executors x4": "agentbatch_spark",
}
CLIENT_NAMES: tuple[str, ...] = tuple(CLIENT_MODULES)
# What the spark clients are told (ClientConfig.variant): where the fallback runs, how many slots.
SPARK_VARIANTS: dict[str, str] = {
    "spark driver": "driver:2",
    "spark executors x1": "executors:1",
    "spark executors x2": "executors:2",
    "spark executors x4": "executors:4",
}
# Not a client of the agent scenarios: S4's memory baseline (agentbatch.run's imports only).
IMPORT_ONLY = "import only"
CLIENT_MODULES[IMPORT_ONLY] = "import_only"
# Responses requests name a model; the demo agent ignores it, Databricks Apps do too.
MODEL = "bench-agent"


@dataclass(frozen=True)
class ClientConfig:
    # The agent's base URL, or `builtin:instant` (S4).
    url: str
    # The scenario's folder: `tickets.parquet`, `requests.jsonl`; each client gets its own `workdir`.
    inputs: str
    workdir: str
    rows: int
    # None: the client's own default (agentbatch: adaptive).
    concurrency: int | None
    stream: bool = False
    # Attempts after the first, for clients that retry.
    max_retries: int = 8
    # Requests per second, for the cookbook processor's request bucket.
    requests_per_s: float | None = None
    # Stop starting rows after this long (clients that would otherwise run for many minutes).
    time_budget_s: float | None = None
    # A client's variant (the spark clients: `executors:2`, `driver:2`).
    variant: str = ""

    @property
    def table_path(self) -> Path:
        return Path(self.inputs) / "tickets.parquet"

    @property
    def requests_path(self) -> Path:
        return Path(self.inputs) / "requests.jsonl"


@dataclass
class Counts:
    rows: int
    ok: int
    failed: int
    # Rows started but neither answered nor failed when a time budget ran out.
    unfinished: int = 0


Job = Callable[[], Counts]


class ClientModule(Protocol):
    def prepare(self, config: ClientConfig) -> Job: ...


def load_client(name: str) -> ClientModule:
    if name not in CLIENT_MODULES:
        raise ValueError(f"unknown client {name!r}; one of: {', '.join(CLIENT_NAMES)}")
    module: ClientModule = importlib.import_module(f"bench.clients.{CLIENT_MODULES[name]}")
    return module
