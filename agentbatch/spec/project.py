"""Where a job's project is: its folder, its `sqltemplates/`, and the job resolved with `--var`s.

What a job reads from the environment (`env:`, `{{ env('NAME') }}`) belongs to the machine that
loads it, not to its project. Compiled SQL and the Databricks bundle leave that machine: the value
read here would be written into their files (often a secret), and a scheduled run, which loads the
job file again on job compute, has no such variable. So `compile` and `bundle` refuse a job that
declares any, and what `render` and `plan` print shows `***` in place of their values, while a
run still uses them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job, project_of_file
from agentbatch.spec.models import Job
from agentbatch.spec.variables import check_given, with_given
from agentbatch.sql import quoting

MASK = "***"


def project_dir_of(job_or_path: Job | str | Path, project_dir: str | Path | None) -> Path:
    """The project folder: given, or the parent of the `jobs/` folder the job file is in (for a
    loaded job, the project it was loaded in); the current folder for a job built in Python."""
    if project_dir is not None:
        return Path(project_dir)
    if isinstance(job_or_path, (str, Path)):
        return project_of_file(job_or_path)
    origin = job_or_path._origin
    if origin is not None and origin.project_dir is not None:
        return origin.project_dir
    return Path.cwd()


def load_in_project(
    path: str | Path, vars: Mapping[str, Any] | None, project_dir: str | Path | None
) -> Job:
    """A job file loaded in its project (or `project_dir`), its variables checked as a run
    checks them: one the job neither declares nor reads is refused."""
    return resolve_job(path, vars, project_dir_of(path, project_dir))


def template_dirs(root: Path) -> list[Path]:
    """A project's own SQL templates, which override the built-in ones by name."""
    return [root / "sqltemplates"]


def resolve_job(
    job_or_path: Job | str | Path, vars: Mapping[str, Any] | None, root: Path, *, alone: bool = True
) -> Job:
    """A loaded job with `vars` applied, or the job file at the path loaded with them.

    A variable the job neither declares nor reads is refused, unless the job is not `alone`
    (jobs compared side by side: the caller checks the variables against both)."""
    if isinstance(job_or_path, Job):
        job = with_given(job_or_path, vars) if vars else job_or_path
    else:
        job = load_job(job_or_path, vars, template_dirs=template_dirs(root), project_dir=root)
    if alone:
        check_given([job], template_dirs(root))
    return job


def refuse_environment(job: Job, command: str) -> None:
    """SpecError naming the value that read an environment variable (else the `env:` key)."""
    if not job.env:
        return
    origin = job._origin
    if origin is not None and origin.environment:
        first = origin.environment[0]
        where, problem = first.where, f"reads env({first.name!r})"
    else:
        line = origin.env_line if origin is not None else ""
        where = f"{line}: env" if line else "env"
        problem = f"declares environment variables ({', '.join(job.env)}) for templates"
    raise SpecError(
        f"{where}: {problem}, which {command} cannot carry: its files would hold this machine's "
        "value, and a scheduled run has no such variable; declare a variable under `vars:` and "
        "give it with --var (a job parameter in the bundle), or keep a secret in a secret scope"
    )


def mask_environment(text: str, job: Job) -> str:
    """`text` with the current values of the job's environment variables replaced by `***`, as
    they appear raw, in SQL string literals and in JSON."""
    values = {os.environ.get(name, "") for name in job.env} - {""}
    forms = {form for value in values for form in _forms(value)} - {""}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def _forms(value: str) -> tuple[str, ...]:
    return value, str(quoting.literal(value))[1:-1], json.dumps(value)[1:-1]
