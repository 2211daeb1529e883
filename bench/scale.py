"""S4: many rows through the local engine with the builtin instant agent (no HTTP), one process
per size, so each size's peak RSS is its own."""

from __future__ import annotations

from pathlib import Path

from bench.clients.base import ClientConfig
from bench.console import Log, describe, to_stderr
from bench.data import write_table
from bench.measure import Measurement, run_worker

INSTANT = "builtin:instant"
WORKER_TIMEOUT_S = 400.0


def run_scale(sizes: tuple[int, ...], root: Path, *, log: Log = to_stderr) -> list[Measurement]:
    results: list[Measurement] = []
    for size in sizes:
        inputs = root / f"S4-{size}"
        workdir = inputs / "run"
        workdir.mkdir(parents=True)
        write_table(inputs / "tickets.parquet", size)
        config = ClientConfig(
            url=INSTANT, inputs=str(inputs), workdir=str(workdir), rows=size, concurrency=None
        )
        measured = run_worker(
            "S4", "agentbatch.run", f"{size:,} rows, {INSTANT}", config, WORKER_TIMEOUT_S
        )
        log(describe(measured))
        results.append(measured)
    return results
