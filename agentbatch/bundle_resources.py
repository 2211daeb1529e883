"""The Databricks job resource of one agentbatch job, as plain data (what `resources/<job>.job.yml`
holds). Pure: no file is read or written here.

- A REST-fallback job runs `agentbatch run` as a `python_wheel_task` on serverless compute, with the
  job's `vars:` as job parameters that flow into `--var` (so "Run now with different parameters"
  works).
- A push-down job runs its compiled SQL file as a `sql_task` on a SQL warehouse: no Python at all.
  Its variables are fixed when it is compiled (a target whose values differ gets its own file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PACKAGE_NAME = "agentbatch"
# The wheel's job entry point: unlike the `agentbatch` console script it raises SystemExit on a
# non-zero exit code, because Databricks ignores an entry point's return value.
ENTRY_POINT = "agentbatch-job"
ENVIRONMENT_KEY = "agentbatch"
TASK_KEY = "run"
WHEEL_GLOB = "../dist/*.whl"


@dataclass(frozen=True)
class BundleJob:
    """What the resource generator needs to know about one job file."""

    name: str
    job_file: str  # relative to the project root, e.g. "jobs/ticket_triage.yml"
    description: str
    strategy: str  # "push-down" or "rest-fallback"
    reason: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    # push-down: the compiled SQL file relative to resources/, and per bundle target overrides.
    sql_file: str | None = None
    target_sql_files: Mapping[str, str] = field(default_factory=dict)


def job_resource_document(job: BundleJob, bundle_variables: Mapping[str, Any]) -> dict[str, Any]:
    """The whole resource file: `resources.jobs.<name>`, plus target overrides of the SQL file."""
    resource = (
        sql_job_resource(job)
        if job.strategy == "push-down"
        else wheel_job_resource(job, bundle_variables)
    )
    document: dict[str, Any] = {"resources": {"jobs": {job.name: resource}}}
    if job.target_sql_files:
        document["targets"] = {
            target: {
                "resources": {
                    "jobs": {
                        job.name: {"tasks": [{"task_key": TASK_KEY, "sql_task": _sql_task(path)}]}
                    }
                }
            }
            for target, path in sorted(job.target_sql_files.items())
        }
    return document


def wheel_job_resource(job: BundleJob, bundle_variables: Mapping[str, Any]) -> dict[str, Any]:
    parameters = [
        {"name": name, "default": _parameter_default(name, value, bundle_variables)}
        for name, value in sorted(job.vars.items())
    ]
    task = {
        "task_key": TASK_KEY,
        "description": f"agentbatch run {job.job_file}",
        "environment_key": ENVIRONMENT_KEY,
        "python_wheel_task": {
            "package_name": PACKAGE_NAME,
            "entry_point": ENTRY_POINT,
            "parameters": wheel_parameters(job),
        },
        **_task_policy(),
    }
    resource = _job_header(job)
    if parameters:
        resource["parameters"] = parameters
    resource["environments"] = [
        {
            "environment_key": ENVIRONMENT_KEY,
            "spec": {
                "environment_version": "${var.serverless_environment_version}",
                "dependencies": [WHEEL_GLOB],
            },
        }
    ]
    resource["tasks"] = [task]
    return resource


def wheel_parameters(job: BundleJob) -> list[str]:
    """The `agentbatch` command line the task runs; job parameters arrive as `--var`."""
    params = [
        "run",
        "${workspace.file_path}/" + job.job_file,
        "--target",
        "${var.run_target}",
        "--state-dir",
        "${var.state_dir}",
    ]
    for name in sorted(job.vars):
        params += ["--var", f"{name}={{{{job.parameters.{name}}}}}"]
    return [*params, "--no-progress", "--json"]


def sql_job_resource(job: BundleJob) -> dict[str, Any]:
    if job.sql_file is None:
        raise ValueError(f"push-down job {job.name} has no compiled SQL file")
    resource = _job_header(job)
    resource["tasks"] = [
        {
            "task_key": TASK_KEY,
            "description": f"compiled from {job.job_file} by agentbatch",
            "sql_task": _sql_task(job.sql_file),
            **_task_policy(),
        }
    ]
    return resource


def _sql_task(path: str) -> dict[str, Any]:
    return {"warehouse_id": "${var.warehouse_id}", "file": {"path": path, "source": "WORKSPACE"}}


def _job_header(job: BundleJob) -> dict[str, Any]:
    description = job.description or f"agentbatch job {job.name}"
    return {
        "name": job.name,
        "description": f"{description} ({job.strategy}: {job.reason})",
        "tags": {"agentbatch_job": job.name, "agentbatch_strategy": job.strategy},
        # Two overlapping runs would send the same rows twice: queue the second one instead.
        "max_concurrent_runs": 1,
        "queue": {"enabled": True},
        "schedule": {
            "quartz_cron_expression": "${var.schedule_cron}",
            "timezone_id": "${var.schedule_timezone}",
            "pause_status": "${var.schedule_pause_status}",
        },
        "email_notifications": {"on_failure": "${var.notification_emails}"},
        "webhook_notifications": {"on_failure": "${var.failure_webhooks}"},
    }


def _task_policy() -> dict[str, Any]:
    # A timed-out run would time out again on retry and pay for the same calls twice.
    return {
        "max_retries": "${var.task_max_retries}",
        "min_retry_interval_millis": "${var.task_min_retry_interval_millis}",
        "retry_on_timeout": False,
        "timeout_seconds": "${var.task_timeout_seconds}",
    }


def _parameter_default(name: str, value: Any, bundle_variables: Mapping[str, Any]) -> str:
    """A bundle variable of the same name wins (so targets can set it), else the job file's value."""
    if name in bundle_variables:
        return "${var." + name + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
