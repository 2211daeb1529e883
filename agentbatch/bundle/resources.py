"""The Databricks job resource of one agentbatch job, as plain data (what `resources/<job>.job.yml`
holds). Pure: no file is read or written here.

- A REST-fallback job runs `agentbatch run` (`agentbatch eval` for a job with an `evaluation:`
  block: scores, metrics tables and a report in the bundle's volume) as a `python_wheel_task` on
  serverless compute, with the job's `vars:` as job parameters that flow into `--var` (so "Run now
  with different parameters" works), and the bundle's run settings as `--setting`s of the job
  entry point (the Apps secret scope, where the fallback runs, the checkpoint folder).
- A push-down job runs its compiled SQL file as a `sql_task` on a SQL warehouse: no Python at all.
  The job's variables the bundle declares are job parameters too, bound to the SQL's named
  parameter markers.
- The schedule is the job file's `schedule:` when it has one, else the bundle's variables.
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
    # push-down: the compiled SQL file relative to resources/, and its parameter names.
    sql_file: str | None = None
    sql_parameters: tuple[str, ...] = ()
    # The job file's `schedule:` (quartz_cron_expression, timezone_id, pause_status), if any.
    schedule: Mapping[str, Any] | None = None
    evaluation: bool = False


# Bundle variables handed to the job entry point as target settings (`--setting NAME=VALUE`).
WHEEL_SETTINGS = (
    ("apps_secret_scope", "apps_secret_scope"),
    ("apps_client_id_key", "apps_client_id_key"),
    ("apps_client_secret_key", "apps_client_secret_key"),
    ("rest_fallback_on", "rest_fallback_on"),
    ("checkpoint_dir", "checkpoint_dir"),
)


def job_resource_document(job: BundleJob, bundle_variables: Mapping[str, Any]) -> dict[str, Any]:
    """The whole resource file: `resources.jobs.<name>`."""
    resource = (
        sql_job_resource(job, bundle_variables)
        if job.strategy == "push-down"
        else wheel_job_resource(job, bundle_variables)
    )
    return {"resources": {"jobs": {job.name: resource}}}


def wheel_job_resource(job: BundleJob, bundle_variables: Mapping[str, Any]) -> dict[str, Any]:
    parameters = [
        {"name": name, "default": _parameter_default(name, value, bundle_variables)}
        for name, value in sorted(job.vars.items())
    ]
    command = "eval" if job.evaluation else "run"
    task = {
        "task_key": TASK_KEY,
        "description": f"agentbatch {command} {job.job_file}",
        "environment_key": ENVIRONMENT_KEY,
        "python_wheel_task": {
            "package_name": PACKAGE_NAME,
            "entry_point": ENTRY_POINT,
            "parameters": wheel_parameters(job, bundle_variables),
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


def wheel_parameters(
    job: BundleJob, bundle_variables: Mapping[str, Any] | None = None
) -> list[str]:
    """The `agentbatch` command line the task runs; job parameters arrive as `--var`."""
    params: list[str] = []
    for setting, variable in WHEEL_SETTINGS:
        if variable in (bundle_variables or {}):
            params += ["--setting", f"{setting}=${{var.{variable}}}"]
    params += [
        "eval" if job.evaluation else "run",
        "${workspace.file_path}/" + job.job_file,
        "--target",
        "${var.run_target}",
        "--state-dir",
        "${var.state_dir}",
    ]
    for name in sorted(job.vars):
        params += ["--var", f"{name}={{{{job.parameters.{name}}}}}"]
    if job.evaluation:
        params += ["--report", "${var.report_dir}/" + job.name]
    return [*params, "--no-progress", "--json"]


def sql_job_resource(job: BundleJob, bundle_variables: Mapping[str, Any]) -> dict[str, Any]:
    if job.sql_file is None:
        raise ValueError(f"push-down job {job.name} has no compiled SQL file")
    resource = _job_header(job)
    if job.sql_parameters:
        resource["parameters"] = [
            {
                "name": name,
                "default": _parameter_default(name, job.vars.get(name), bundle_variables),
            }
            for name in job.sql_parameters
        ]
    task: dict[str, Any] = {
        "task_key": TASK_KEY,
        "description": f"compiled from {job.job_file} by agentbatch",
        "sql_task": _sql_task(job.sql_file, job.sql_parameters),
        **_task_policy(),
    }
    resource["tasks"] = [task]
    return resource


def _sql_task(path: str, parameters: tuple[str, ...] = ()) -> dict[str, Any]:
    task: dict[str, Any] = {
        "warehouse_id": "${var.warehouse_id}",
        "file": {"path": path, "source": "WORKSPACE"},
    }
    if parameters:
        # The SQL file's named parameter markers (:name), from the job's parameters.
        task["parameters"] = {name: f"{{{{job.parameters.{name}}}}}" for name in parameters}
    return task


def _job_header(job: BundleJob) -> dict[str, Any]:
    description = job.description or f"agentbatch job {job.name}"
    schedule = dict(job.schedule or {})
    return {
        "name": job.name,
        "description": f"{description} ({job.strategy}: {job.reason})",
        "tags": {"agentbatch_job": job.name, "agentbatch_strategy": job.strategy},
        # Two overlapping runs would send the same rows twice: queue the second one instead.
        "max_concurrent_runs": 1,
        "queue": {"enabled": True},
        "schedule": {
            "quartz_cron_expression": schedule.get("quartz_cron_expression")
            or "${var.schedule_cron}",
            "timezone_id": schedule.get("timezone_id") or "${var.schedule_timezone}",
            "pause_status": schedule.get("pause_status") or "${var.schedule_pause_status}",
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
