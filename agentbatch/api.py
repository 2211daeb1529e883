"""The Python API, mirroring the CLI, for notebooks and tests.

import agentbatch
job = agentbatch.load_job("jobs/triage.yml", vars={"team": "billing"})
print(agentbatch.render(job, target="databricks-sql"))
result = agentbatch.run(job, tables={"main.support.tickets": df},
                        endpoints={"apps/triage-agent": "http://127.0.0.1:8000"})
result.summary, result.to_pandas()
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.execution import runner
from agentbatch.execution.result import RunResult
from agentbatch.planning.definition import Plan, RunOptions
from agentbatch.planning.explain import render_sql
from agentbatch.planning.targets import Target
from agentbatch.spec.models import Job
from agentbatch.spec.project import load_in_project

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.evaluation import compare, evaluate
    from agentbatch.execution.estimation import Estimate

__all__ = [
    "Job",
    "Plan",
    "RunOptions",
    "RunResult",
    "compare",
    "estimate",
    "evaluate",
    "load_job",
    "plan",
    "read_table",
    "render",
    "run",
]


def __getattr__(name: str) -> Any:
    # Evaluation loads on first use: it is not needed to run jobs.
    if name in ("evaluate", "compare"):
        from agentbatch import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'agentbatch.api' has no attribute {name!r}")


def read_table(
    table: str,
    target: str | Target = "local",
    *,
    limit: int | None = None,
    tables: Mapping[str, Any] | None = None,
    project_dir: str | Path | None = None,
) -> pa.Table:
    """Every row (or the first `limit`) of a table on a target, as `agentbatch show` prints it.

    Local tables live in `<project_dir>/.agentbatch/warehouse/` unless `tables` maps them to files;
    `project_dir` defaults to the current folder."""
    from agentbatch.execution.show import read_table as _read

    return _read(table, target, limit=limit, tables=tables, project_dir=project_dir)


def load_job(
    path: str | Path,
    vars: Mapping[str, Any] | None = None,
    *,
    project_dir: str | Path | None = None,
) -> Job:
    """Load and validate a job file (SpecError names file:line on any problem). The job
    remembers its project (`project_dir`, else the folder holding its `jobs/` folder), so
    `plan`, `run`, ... of the loaded job use the same one as of its path. A variable in `vars`
    the job neither declares nor reads is refused (UsageError), as `run(path, vars=...)` does."""
    return load_in_project(path, vars, project_dir)


def plan(
    job: Job | str | Path,
    target: str | Target = "local",
    *,
    options: RunOptions | None = None,
    **run_options: Any,
) -> Plan:
    """The steps a run would take on `target`, with their SQL. Nothing runs.

    `run_options` are the fields of `RunOptions` (`vars`, `project_dir`, `endpoints`, ...)."""
    return runner.plan(job, target, RunOptions.of(options, **run_options))


def render(job: Job | str | Path, target: str | Target = "local", **run_options: Any) -> str:
    """The job's SQL statements for `target` (Databricks SQL, each ending in `;`)."""
    return render_sql(plan(job, target, **run_options))


def run(
    job: Job | str | Path,
    target: str | Target = "local",
    *,
    options: RunOptions | None = None,
    **run_options: Any,
) -> RunResult:
    """Run one job on a target. `run_options` are the fields of `RunOptions`: `vars`, `tables`,
    `endpoints`, `settings`, `project_dir`, `state_dir`, `limit`, `retry_errors`,
    `full_refresh`, `dry_run`, `progress`.

    Before anything is sent: every `tables` / `endpoints` mapping must name a table or endpoint of
    the job, and on the local target the source must exist and every SQL value of the spec must
    bind against its columns (errors name the spec key and list the columns)."""
    from agentbatch.execution.preflight import check_local_source, check_mappings

    the_plan = runner.plan(job, target, RunOptions.of(options, **run_options).started())
    check_mappings(the_plan.job, the_plan.options.tables, the_plan.options.endpoints)
    # A run refused for its endpoint (no workspace credentials) is refused before the engine
    # opens and locks the output: it leaves nothing on disk.
    endpoint = runner.endpoint_before_opening(the_plan)
    # The checks of the source run on the run's own engine: one engine (and its start-up) a run.
    engine = runner.open_engine(the_plan, the_plan.options.tables, [the_plan.job.output.table])
    try:
        check_local_source(the_plan, origin=_origin(job), engine=engine)
    except BaseException:
        engine.close()
        raise
    return runner.run_plan(the_plan, engine, endpoint=endpoint)


def estimate(
    job: Job | str | Path,
    target: str | Target = "local",
    *,
    sample: int | None = None,
    seed: int | None = None,
    options: RunOptions | None = None,
    **run_options: Any,
) -> Estimate:
    """What the next run would send, and what it would cost: counts the rows, sends a random
    sample of them for real (`sample`, default 20; its answers are kept, as a run's) and projects
    tokens, wall time and cost (see `agentbatch.execution.estimation`). Takes `run`'s options."""
    from agentbatch.execution.estimation import DEFAULT_SAMPLE
    from agentbatch.execution.estimation import estimate as _estimate

    the_plan = checked_plan(job, target, RunOptions.of(options, **run_options))
    return _estimate(the_plan, sample=DEFAULT_SAMPLE if sample is None else sample, seed=seed)


def checked_plan(job: Job | str | Path, target: str | Target, options: RunOptions) -> Plan:
    """The plan of one execution, after the checks made before anything is sent."""
    from agentbatch.execution.preflight import check_plan

    the_plan = runner.plan(job, target, options.started())
    check_plan(the_plan, origin=_origin(job))
    return the_plan


def _origin(job: Job | str | Path) -> str:
    """The job file, to start the checks' errors with (nothing for a Job object)."""
    return str(job) if isinstance(job, (str, Path)) else ""
