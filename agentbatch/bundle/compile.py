"""`agentbatch compile`: each push-down job's SQL as a file a Databricks `sql_task` runs without
Python (like `dbt compile`). REST-fallback jobs need Python and are refused with the reason.

The file holds the plan's statements with its guards (`PushDown.compiled`): the checks
`agentbatch run` makes before any call, as statements that fail the task with the run's message
(`raise_error`) before the statement that calls ai_query and writes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agentbatch.errors import NotSupportedError
from agentbatch.execution.runner import plan
from agentbatch.planning.definition import Plan, PushDown, RunOptions
from agentbatch.planning.explain import render_sql
from agentbatch.spec.project import refuse_environment


def compile_jobs(
    paths: Iterable[str | Path],
    out: Path,
    *,
    target: str = "databricks-sql",
    options: RunOptions | None = None,
) -> list[Path]:
    written: list[Path] = []
    for path in paths:
        the_plan = plan(path, target, options)
        refuse_environment(the_plan.job, "agentbatch compile")
        if the_plan.strategy != "push-down":
            raise NotSupportedError(
                f"{path}: cannot compile to SQL alone: {the_plan.reason}; run it with `agentbatch run`"
            )
        out.mkdir(parents=True, exist_ok=True)
        destination = out / f"{the_plan.job.name}.sql"
        header = f"-- agentbatch compile: job {the_plan.job.name}, target {the_plan.target.name}\n"
        destination.write_text(header + compiled_sql(the_plan), encoding="utf-8")
        written.append(destination)
    return written


def compiled_sql(plan: Plan) -> str:
    """Every statement a SQL file task runs for the push-down plan, guards included."""
    assert isinstance(plan.steps, PushDown)
    return render_sql(plan, plan.steps.compiled)
