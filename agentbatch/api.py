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

from agentbatch.execution.result import RunResult
from agentbatch.execution.runner import plan as _plan
from agentbatch.execution.runner import project_dir_of, resolve_job
from agentbatch.execution.runner import run as _run
from agentbatch.planning.builder import Plan, RunOptions
from agentbatch.planning.explain import render_sql
from agentbatch.planning.targets import Target, resolve_target
from agentbatch.spec.loader import load_job as _load_job
from agentbatch.spec.models import Job

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.evaluation import compare, evaluate
    from agentbatch.execution.estimation import Estimate

__all__ = [
    "Job",
    "Plan",
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
    """Load and validate a job file (SpecError names file:line on any problem)."""
    root = project_dir_of(path, project_dir)
    return _load_job(path, vars, template_dirs=[root / "sqltemplates"])


def plan(
    job: Job | str | Path,
    target: str | Target = "local",
    *,
    vars: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
    project_dir: str | Path | None = None,
) -> Plan:
    """The steps a run would take on `target`, with their SQL. Nothing runs."""
    return _plan(job, target, vars=vars, options=options, project_dir=project_dir)


def render(
    job: Job | str | Path,
    target: str | Target = "local",
    *,
    vars: Mapping[str, Any] | None = None,
    project_dir: str | Path | None = None,
) -> str:
    """The job's SQL statements for `target` (Databricks SQL, each ending in `;`)."""
    return render_sql(plan(job, target, vars=vars, project_dir=project_dir))


def run(
    job: Job | str | Path,
    target: str | Target = "local",
    *,
    vars: Mapping[str, Any] | None = None,
    tables: Mapping[str, Any] | None = None,
    endpoints: Mapping[str, str] | None = None,
    project_dir: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    **options: Any,
) -> RunResult:
    """Run one job on a target (see `agentbatch.execution.runner.run` for every option).

    Before anything is sent: every `tables` / `endpoints` mapping must name a table or endpoint of
    the job, and on the local target the source must exist and every SQL value of the spec must
    bind against its columns (errors name the spec key and list the columns)."""
    from agentbatch.errors import UsageError
    from agentbatch.execution.preflight import check_local_source, check_mappings

    limit = options.get("limit")
    if limit is not None and limit <= 0:
        raise UsageError("limit must be a positive number of rows")
    root = project_dir_of(job, project_dir)
    the_job = resolve_job(job, vars, [root / "sqltemplates"])
    check_mappings(the_job, tables or {}, endpoints or {})
    chosen = target if isinstance(target, Target) else resolve_target(target, root)
    if settings:
        chosen = chosen.with_settings(**settings)
    origin = str(job) if isinstance(job, (str, Path)) else ""
    check_local_source(plan(the_job, chosen, project_dir=root), tables or {}, root, origin=origin)
    return _run(
        the_job,
        chosen,
        tables=tables,
        endpoints=endpoints,
        project_dir=root,
        **options,
    )


def estimate(
    job: Job | str | Path,
    target: str | Target = "local",
    *,
    vars: Mapping[str, Any] | None = None,
    tables: Mapping[str, Any] | None = None,
    endpoints: Mapping[str, str] | None = None,
    project_dir: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    **options: Any,
) -> Estimate:
    """What the next run would send, and what it would cost: counts the rows, sends a random
    sample of them for real (`sample`, default 20; its answers are kept, as a run's) and projects
    tokens, wall time and cost (see `agentbatch.execution.estimation`). Takes `run`'s options too."""
    from agentbatch.errors import UsageError
    from agentbatch.execution.estimation import estimate as _estimate
    from agentbatch.execution.preflight import check_local_source, check_mappings

    limit = options.get("limit")
    if limit is not None and limit <= 0:
        raise UsageError("limit must be a positive number of rows")
    root = project_dir_of(job, project_dir)
    the_job = resolve_job(job, vars, [root / "sqltemplates"])
    check_mappings(the_job, tables or {}, endpoints or {})
    chosen = target if isinstance(target, Target) else resolve_target(target, root)
    if settings:
        chosen = chosen.with_settings(**settings)
    if options.get("state_dir") is not None:
        chosen = chosen.with_settings(state_dir=str(options["state_dir"]))
    origin = str(job) if isinstance(job, (str, Path)) else ""
    check_local_source(plan(the_job, chosen, project_dir=root), tables or {}, root, origin=origin)
    return _estimate(
        the_job, chosen, tables=tables, endpoints=endpoints, project_dir=root, **options
    )
