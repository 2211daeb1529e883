"""`agentbatch.run` on the databricks-sql target, the path an Apps agent's job takes in production:
the source and output tables on a SQL warehouse, the agent called over REST from this process.

The warehouse is the loopback one (bench/warehouse.py, over tests/support/warehouse) in a process
of its own, started and given the source table in the untimed set-up. The SQL (building the
request, fingerprinting each row, the MERGE of the answers) runs there, as it does on Databricks;
what the client does is what is measured: the connector's calls, reading the rows as Arrow, the
REST calls, the checkpoint, staging the answers. Staging is the target's default (the answers
as JSON parameters), or with the variant `volume` through a staging volume (Parquet files the
connector uploads).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
from pathlib import Path

import yaml

from bench import warehouse
from bench.clients.agentbatch_run import ENDPOINT, SHARED_RUN_MODULES, job_spec, variant_words
from bench.clients.base import ClientConfig, Counts
from bench.data import SOURCE_TABLE

TARGET = "databricks-sql"
# ClientConfig.variant `volume`: the target's `staging_volume` set, to this volume.
VOLUME = "volume"
STAGING_VOLUME = "main.bench.staging"
# What a run imports on first use (set-up, untimed): agentbatch.run's on any target, with the
# databricks-sql engine, the connector and databricks-sdk.
RUN_MODULES = (
    *SHARED_RUN_MODULES,
    "agentbatch.engines.databricks_sql.engine",
    "agentbatch.engines.databricks_sql.staging",
    "databricks.sdk.core",
    "databricks.sql",
    "databricks.sql.client",
)


class WarehouseRun:
    """The timed part (a call runs the job once) and the warehouse it runs against, stopped by
    `close` (at the latest when this process exits)."""

    def __init__(self, config: ClientConfig) -> None:
        import agentbatch

        for module in RUN_MODULES:
            importlib.import_module(module)
        self.config = config
        workdir = Path(config.workdir)
        self._stack = contextlib.ExitStack()
        atexit.register(self.close)
        volumes = workdir / "volumes"
        self.host = self._stack.enter_context(
            warehouse.warehouse_process(volumes, log=workdir / "warehouse.log")
        )
        warehouse.load_table(self.host, volumes, SOURCE_TABLE, config.table_path)
        self.settings = warehouse.settings(self.host)
        if VOLUME in variant_words(config):
            with warehouse.connect(self.host) as cur:
                cur.execute(f"CREATE VOLUME IF NOT EXISTS {STAGING_VOLUME}")
            self.settings["staging_volume"] = STAGING_VOLUME
        os.environ.update(warehouse.environment(workdir))
        job_file = workdir / "jobs" / "bench.yml"
        job_file.parent.mkdir(parents=True, exist_ok=True)
        job_file.write_text(yaml.safe_dump(job_spec(config), sort_keys=False), encoding="utf-8")
        self.job = agentbatch.load_job(job_file)

    def __call__(self) -> Counts:
        import agentbatch

        workdir = Path(self.config.workdir)
        result = agentbatch.run(
            self.job,
            target=TARGET,
            settings=self.settings,
            endpoints={ENDPOINT: self.config.url},
            limit=self.config.rows,
            state_dir=workdir / "state",
            project_dir=workdir,
            progress=False,
        )
        if result.engine is not None:
            result.engine.close()
        summary = result.summary
        ok = int(summary.get("ok", 0))
        errors = int(summary.get("errors", 0))
        return Counts(rows=ok + errors, ok=ok, failed=errors)

    def close(self) -> None:
        self._stack.close()


def prepare(config: ClientConfig) -> WarehouseRun:
    return WarehouseRun(config)
