"""agentbatch through the public path a user takes: a job file, `agentbatch.run` on the local
engine, the source table a Parquet file, the endpoint mapped to the agent's URL."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from bench.clients.base import ClientConfig, Counts, Job
from bench.data import KEY, PROMPT_PREFIX, REQUEST_SQL, SOURCE_TABLE

ENDPOINT = "apps/bench-agent"
OUTPUT_TABLE = "main.bench.answers"
# ClientConfig.variant, comma-separated words (S4r, a scheduled job's second run): `delta` maps the
# output table to a Delta folder in the workdir (written by agentbatch with `deltalake`; without
# it, the local warehouse table); `edited` edits the request, so every row a run in the same
# workdir answered before is answered again and the MERGE replaces it.
DELTA = "delta"
EDITED = "edited"
DELTA_FOLDER = "answers"
# Within the first 64 characters: `builtin:instant` echoes them, so every answer changes too.
EDITED_REQUEST_SQL = f"concat('Edited: {PROMPT_PREFIX}', subject, ' ', body)"
# What a run writing a Delta output imports besides RUN_MODULES.
DELTA_MODULES = ("deltalake", "pyarrow.dataset")


def variant_words(config: ClientConfig) -> set[str]:
    return {word.strip() for word in config.variant.split(",") if word.strip()}


def output_tables(config: ClientConfig) -> dict[str, str]:
    """The `tables` mapping of a run: the source's Parquet file, and the output's Delta folder
    when the variant says `delta`."""
    tables = {SOURCE_TABLE: str(config.table_path)}
    if DELTA in variant_words(config):
        tables[OUTPUT_TABLE] = str(Path(config.workdir) / DELTA_FOLDER)
    return tables


def job_spec(config: ClientConfig) -> dict[str, Any]:
    agent: dict[str, Any] = {"endpoint": ENDPOINT, "api": "responses"}
    if config.stream:
        agent["stream"] = True
    if config.concurrency is not None:
        agent["max_concurrency"] = config.concurrency
    return {
        "name": "bench",
        "description": "Benchmark: classify tickets",
        "source": {"table": SOURCE_TABLE, "key": KEY, "columns": ["subject"]},
        "request": EDITED_REQUEST_SQL if EDITED in variant_words(config) else REQUEST_SQL,
        "agent": agent,
        "output": {"table": OUTPUT_TABLE, "mode": "merge"},
    }


# What a run imports on first use, whichever its target. Imports are set-up, untimed, for every
# client; a run's own fixed costs (engine start, SQL, reads and writes) are timed.
SHARED_RUN_MODULES = (
    "agentbatch.api",
    "agentbatch.execution.runner",
    "agentbatch.agent.bulk",
    "agentbatch.agent.ledger",
    "agentbatch.agent.progress",
    # What a run imports before its first statement: its checks, its budget, the agent's probe.
    "agentbatch.execution.budget",
    "agentbatch.execution.preflight",
    "agentbatch.execution.value_errors",
    "agentbatch.agent.probe",
    "aiohttp",
    "pandas",  # some pyarrow.compute kernels import it on first use
    "pyarrow.compute",
    "pyarrow.ipc",
    "sqlglot.dialects.databricks",
)
# ... and on the local engine (with where endpoints are looked up).
RUN_MODULES = (
    *SHARED_RUN_MODULES,
    "agentbatch.engines.local",
    "agentbatch.engines.databricks_sql.connect",
    "duckdb",
    "sqlglot.dialects.duckdb",
)


def run_modules(config: ClientConfig) -> tuple[str, ...]:
    return RUN_MODULES + (DELTA_MODULES if DELTA in variant_words(config) else ())


def prepare(config: ClientConfig) -> Job:
    import agentbatch

    for module in run_modules(config):
        importlib.import_module(module)

    workdir = Path(config.workdir)
    job_file = workdir / "jobs" / "bench.yml"
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(yaml.safe_dump(job_spec(config), sort_keys=False), encoding="utf-8")
    job = agentbatch.load_job(job_file)

    def run() -> Counts:
        result = agentbatch.run(
            job,
            target="local",
            tables=output_tables(config),
            endpoints={ENDPOINT: config.url},
            limit=config.rows,
            state_dir=workdir / "state",
            project_dir=workdir,
            progress=False,
        )
        summary = result.summary
        ok = int(summary.get("ok", 0))
        errors = int(summary.get("errors", 0))
        return Counts(rows=ok + errors, ok=ok, failed=errors)

    return run
