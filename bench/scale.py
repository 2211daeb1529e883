"""S4: many rows through the local engine with the builtin instant agent (no HTTP), one process
per size, so each size's peak RSS is its own."""

from __future__ import annotations

from pathlib import Path

from bench.clients.base import IMPORT_ONLY, ClientConfig
from bench.console import Log, describe, to_stderr
from bench.data import write_table
from bench.measure import Measurement, run_worker

INSTANT = "builtin:instant"
WORKER_TIMEOUT_S = 400.0


def run_scale(sizes: tuple[int, ...], root: Path, *, log: Log = to_stderr) -> list[Measurement]:
    """The import-only baseline (rows 0), then every size."""
    results: list[Measurement] = [import_baseline(root, log=log)]
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


def import_baseline(root: Path, *, log: Log = to_stderr) -> Measurement:
    """Peak RSS of a process that only imports what a run imports: S4's memory is judged above
    it (the fixed footprint of Python, Arrow, DuckDB and agentbatch is not the rows' cost)."""
    workdir = root / "S4-import-only"
    workdir.mkdir(parents=True)
    config = ClientConfig(
        url=INSTANT, inputs=str(workdir), workdir=str(workdir), rows=0, concurrency=None
    )
    measured = run_worker("S4", IMPORT_ONLY, "imports only", config, WORKER_TIMEOUT_S)
    log(describe(measured))
    return measured
