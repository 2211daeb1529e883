"""agentbatch on the `spark` target: the same job file as `agentbatch.run`, a local Spark session
(`local[N]`: N executor slots), the REST fallback either spread over the executors' tasks
(`rest_fallback_on: executors`, their calls sharing one budget of the agent) or on the driver
(`rest_fallback_on: driver`, the serverless path).

The session starts in the set-up (untimed, like every client's imports); the run's own Spark work
(plans, the checkpoint, shuffles, the write) is timed. The variant says where and how many slots:
`executors:2`, `driver:2`; `driver:2:copies` sets `checkpoint_dir`, where the driver copies its
answers as they arrive."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from bench.clients.agentbatch_run import ENDPOINT, RUN_MODULES, job_spec
from bench.clients.base import ClientConfig, Counts, Job
from bench.data import SOURCE_TABLE


def prepare(config: ClientConfig) -> Job:
    import agentbatch
    from agentbatch.engines.spark.engine import session as spark_session

    for module in RUN_MODULES:
        importlib.import_module(module)
    importlib.import_module("agentbatch.engines.spark.engine")
    place, _, rest = (config.variant or "executors:2").partition(":")
    slots_text, _, extra = rest.partition(":")
    slots = int(slots_text or 2)
    workdir = Path(config.workdir)
    settings = {
        "master": f"local[{slots}]",
        "warehouse_dir": str(workdir / "warehouse"),
        "rest_fallback_on": place,
        "partitions": slots,
        "spark_conf": {
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": str(slots),
            "spark.default.parallelism": str(slots),
        },
    }
    if extra == "copies":  # a checkpoint folder: a run on the driver copies its answers there
        settings["checkpoint_dir"] = str(workdir / "volume")
    spark = spark_session.local_session(settings)
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1).count()  # the JVM and the Python workers are up before the timed part
    job_file = workdir / "jobs" / "bench.yml"
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(yaml.safe_dump(job_spec(config), sort_keys=False), encoding="utf-8")
    job = agentbatch.load_job(job_file)

    def run() -> Counts:
        result = agentbatch.run(
            job,
            target="spark",
            settings=settings,
            tables={SOURCE_TABLE: str(config.table_path)},
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
