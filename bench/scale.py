"""S4: many rows through the local engine with the builtin instant agent (no HTTP), one process
per size, so each size's peak RSS is its own.

S4r: a scheduled job's second run. A first run answers the rows (set-up, in its own process);
the second, in another process over the same workdir and output, has the request edited, so it
answers every row again and its MERGE replaces every row of the output. Its peak RSS is its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.clients.agentbatch_run import DELTA, EDITED
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


def import_baseline(
    root: Path, *, scenario: str = "S4", variant: str = "", log: Log = to_stderr
) -> Measurement:
    """Peak RSS of a process that only imports what a run imports: S4's memory is judged above
    it (the fixed footprint of Python, Arrow, DuckDB and agentbatch is not the rows' cost).
    `variant` as the run's (`delta`: deltalake too)."""
    workdir = root / "-".join(filter(None, (scenario, "import-only", variant)))
    workdir.mkdir(parents=True)
    config = ClientConfig(
        url=INSTANT,
        inputs=str(workdir),
        workdir=str(workdir),
        rows=0,
        concurrency=None,
        variant=variant,
    )
    note = "imports only" + (f" ({variant})" if variant else "")
    measured = run_worker(scenario, IMPORT_ONLY, note, config, WORKER_TIMEOUT_S)
    log(describe(measured))
    return measured


SECOND_RUN = "S4r"
# How each output kind is asked of the client (ClientConfig.variant).
OUTPUT_VARIANTS = {"warehouse": "", "delta": DELTA}
OUTPUT_TITLES = {"warehouse": "warehouse table", "delta": "Delta folder"}


@dataclass
class SecondRun:
    output: str
    rows: int
    # The first run (set-up: its figures are shown, not judged) and the second, measured.
    setup: Measurement
    second: Measurement


@dataclass
class SecondRuns:
    # Per output kind: the import-only baseline of a run writing it.
    baselines: dict[str, Measurement] = field(default_factory=dict)
    runs: list[SecondRun] = field(default_factory=list)


def run_second_runs(
    sizes: tuple[int, ...], outputs: tuple[str, ...], root: Path, *, log: Log = to_stderr
) -> SecondRuns:
    """For every output kind its import-only baseline, then every size: a first run answering
    every row (set-up, its own process), then the second run with the request edited (measured,
    its own process). A failed set-up, a failed second run or a second run that did not answer
    every row again is a Measurement with `error`: the report shows it failed."""
    found = SecondRuns()
    for output in outputs:
        found.baselines[output] = import_baseline(
            root, scenario=SECOND_RUN, variant=OUTPUT_VARIANTS[output], log=log
        )
    for size in sizes:
        inputs = root / f"{SECOND_RUN}-{size}"
        inputs.mkdir(parents=True)
        write_table(inputs / "tickets.parquet", size)
        for output in outputs:
            found.runs.append(_second_run(inputs, output, size, log=log))
    return found


def _second_run(inputs: Path, output: str, size: int, *, log: Log) -> SecondRun:
    workdir = inputs / output
    workdir.mkdir()
    variant = OUTPUT_VARIANTS[output]
    title = OUTPUT_TITLES[output]

    def config(*words: str) -> ClientConfig:
        return ClientConfig(
            url=INSTANT,
            inputs=str(inputs),
            workdir=str(workdir),
            rows=size,
            concurrency=None,
            variant=",".join(filter(None, (variant, *words))),
        )

    client = "agentbatch.run"
    setup = run_worker(
        SECOND_RUN, client, f"{size:,} rows, first run, {title}", config(), WORKER_TIMEOUT_S
    )
    log(describe(setup))
    note = f"{size:,} rows, second run (request edited), {title}"
    if setup.error or setup.ok != size:
        why = setup.error or f"answered {setup.ok:,} of {size:,} rows ({setup.failed} failed)"
        second = Measurement(SECOND_RUN, client, note, error=f"set-up run failed: {why}")
    else:
        second = run_worker(SECOND_RUN, client, note, config(EDITED), WORKER_TIMEOUT_S)
        if not second.error and second.ok != size:
            second.error = f"answered {second.ok:,} of {size:,} rows again ({second.failed} failed)"
    log(describe(second))
    return SecondRun(output, size, setup, second)
