"""Where a job's project is: its folder, its `sqltemplates/`, and the job resolved with `--var`s."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentbatch.spec.loader import load_job
from agentbatch.spec.models import Job
from agentbatch.spec.variables import check_given, with_given


def project_dir_of(job_or_path: Job | str | Path, project_dir: str | Path | None) -> Path:
    """The project folder: given, or the parent of the `jobs/` folder the job file is in."""
    if project_dir is not None:
        return Path(project_dir)
    if isinstance(job_or_path, (str, Path)):
        parent = Path(job_or_path).resolve().parent
        return parent.parent if parent.name == "jobs" else parent
    return Path.cwd()


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
        job = load_job(job_or_path, vars, template_dirs=template_dirs(root))
    if alone:
        check_given([job], template_dirs(root))
    return job
