"""`agentbatch bundle`: generate the Databricks Asset Bundle's job resources from `jobs/*.yml`, so
adding a job file is enough to schedule it with `databricks bundle deploy`.

For every job file it writes `resources/<job>.job.yml` and, for push-down jobs, the compiled SQL
under `resources/sql/` (exactly what `agentbatch compile` writes). Which task a job gets is the
planner's decision for the `databricks-sql` target:

- push-down (a Model Serving endpoint `ai_query` can reach): a `sql_task` on a SQL warehouse;
- REST fallback (agents on Databricks Apps, ...): a `python_wheel_task` running `agentbatch run`.

`--check` writes nothing and exits 1 when a generated file is missing, different or orphaned.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agentbatch.bundle_config import (
    COMMON_VARIABLES,
    SQL_VARIABLES,
    WHEEL_VARIABLES,
    BundleConfig,
    BundleTarget,
    load_bundle_config,
)
from agentbatch.bundle_resources import BundleJob, job_resource_document
from agentbatch.bundle_yaml import dump_generated, is_generated
from agentbatch.errors import ConfigError, SpecError

JOBS_DIR = "jobs"
RESOURCES_DIR = "resources"
SQL_DIR = f"{RESOURCES_DIR}/sql"  # wholly generated: every .sql file in it belongs to a job
PLAN_TARGET = "databricks-sql"


@dataclass(frozen=True)
class GeneratedFile:
    path: str  # relative to the project root, with forward slashes
    text: str


def generate(project_dir: Path) -> list[GeneratedFile]:
    """Every generated file of the bundle, in a stable order. Reads files, writes nothing."""
    from agentbatch.api import load_job

    config = load_bundle_config(project_dir)
    job_paths = sorted((project_dir / JOBS_DIR).glob("*.yml"))
    if not job_paths:
        raise ConfigError(f"{project_dir / JOBS_DIR}: no job files (*.yml) to schedule")
    files: list[GeneratedFile] = []
    owners: dict[str, str] = {}
    needed = set(COMMON_VARIABLES)
    for path in job_paths:
        relative = path.relative_to(project_dir).as_posix()
        job = load_job(path, project_dir=project_dir)
        if job.name in owners:
            raise SpecError(
                f"{relative}: name: {job.name!r} is also the name of {owners[job.name]}"
            )
        owners[job.name] = relative
        # Lenient here: a REST-fallback job receives its variables at run time, so they need not be
        # literals; only the planner's choice of strategy must see the literal ones.
        plan_vars = _compile_vars(job.vars, config, config.default_target, relative, strict=False)
        the_plan = _plan(path, plan_vars, project_dir)
        bundle_job = BundleJob(
            name=job.name,
            job_file=relative,
            description=job.description,
            strategy=the_plan.strategy,
            reason=the_plan.reason,
            vars=dict(job.vars),
        )
        if the_plan.strategy == "push-down":
            needed.update(SQL_VARIABLES)
            sql_files, target_files = _compiled_sql(path, job.name, job.vars, config, project_dir)
            files += sql_files
            bundle_job = replace(
                bundle_job, sql_file=f"./sql/{job.name}.sql", target_sql_files=target_files
            )
        else:
            needed.update(WHEEL_VARIABLES)
        document = job_resource_document(bundle_job, config.variables)
        files.append(
            GeneratedFile(f"{RESOURCES_DIR}/{job.name}.job.yml", dump_generated(document, relative))
        )
    config.require(tuple(sorted(needed)))
    return sorted(files, key=lambda f: f.path)


def stale_files(project_dir: Path, files: Sequence[GeneratedFile]) -> list[str]:
    """Generated paths whose file is missing or different, and orphaned generated files."""
    stale = [
        f.path
        for f in files
        if not (project_dir / f.path).is_file()
        or (project_dir / f.path).read_text(encoding="utf-8") != f.text
    ]
    return stale + orphaned_files(project_dir, files)


def orphaned_files(project_dir: Path, files: Sequence[GeneratedFile]) -> list[str]:
    """Generated files no job produces any more (a job file was removed or renamed)."""
    wanted = {f.path for f in files}
    found = [
        p
        for p in (project_dir / RESOURCES_DIR).glob("*.yml")
        if is_generated(p.read_text(encoding="utf-8"))
    ]
    found += (project_dir / SQL_DIR).rglob("*.sql")
    return sorted(
        rel for rel in (p.relative_to(project_dir).as_posix() for p in found) if rel not in wanted
    )


def write(project_dir: Path, files: Sequence[GeneratedFile]) -> list[str]:
    """Write what changed and delete orphans; returns the paths touched."""
    touched: list[str] = []
    for orphan in orphaned_files(project_dir, files):
        (project_dir / orphan).unlink()
        touched.append(orphan)
    for f in files:
        destination = project_dir / f.path
        if destination.is_file() and destination.read_text(encoding="utf-8") == f.text:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(f.text, encoding="utf-8")
        touched.append(f.path)
    return sorted(touched)


def bundle_command(project_dir: Path | None, *, check: bool) -> int:
    """What `agentbatch bundle [--check]` does; returns the exit code."""
    root = Path(project_dir) if project_dir is not None else Path.cwd()
    files = generate(root)
    if check:
        stale = stale_files(root, files)
        for path in stale:
            sys.stderr.write(f"stale: {path}\n")
        if stale:
            sys.stderr.write(
                "the bundle's generated files are out of date; run `agentbatch bundle`\n"
            )
            return 1
        sys.stdout.write(f"up to date: {len(files)} generated file(s)\n")
        return 0
    touched = write(root, files)
    for path in touched:
        sys.stdout.write(f"{'wrote' if (root / path).exists() else 'removed'} {path}\n")
    if not touched:
        sys.stdout.write(f"up to date: {len(files)} generated file(s)\n")
    return 0


def _plan(path: Path, vars: Mapping[str, Any], project_dir: Path) -> Any:
    from agentbatch.runner import plan

    return plan(path, PLAN_TARGET, vars=vars, project_dir=project_dir)


def _compiled_sql(
    path: Path,
    name: str,
    job_vars: Mapping[str, Any],
    config: BundleConfig,
    project_dir: Path,
) -> tuple[list[GeneratedFile], dict[str, str]]:
    """The SQL for the default target, plus a file per target whose variables change the SQL."""
    relative = path.relative_to(project_dir).as_posix()
    base_vars = _compile_vars(job_vars, config, config.default_target, relative)
    base = _compile(path, base_vars, project_dir)
    files = [GeneratedFile(f"{SQL_DIR}/{name}.sql", base)]
    overrides: dict[str, str] = {}
    for target in config.targets:
        target_vars = _compile_vars(job_vars, config, target, relative)
        if target == config.default_target or target_vars == base_vars:
            continue
        text = _compile(path, target_vars, project_dir)
        if text != base:
            files.append(GeneratedFile(f"{SQL_DIR}/{target.name}/{name}.sql", text))
            overrides[target.name] = f"./sql/{target.name}/{name}.sql"
    return files, overrides


def _compile(path: Path, vars: Mapping[str, Any], project_dir: Path) -> str:
    """Exactly what `agentbatch compile --target databricks-sql` writes for this job."""
    from agentbatch.compile import compile_jobs

    with tempfile.TemporaryDirectory(prefix="agentbatch-bundle-") as out:
        [written] = compile_jobs(
            [path], Path(out), target=PLAN_TARGET, vars=vars, project_dir=project_dir
        )
        return written.read_text(encoding="utf-8")


def _compile_vars(
    job_vars: Mapping[str, Any],
    config: BundleConfig,
    target: BundleTarget,
    job_file: str,
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """The job's variables that the bundle sets, with their value in `target`.

    Compiled SQL is static, so those values must be literals known before deployment (`strict`);
    otherwise values that are not literals are left to the job file's defaults.
    """
    values = config.values_for(target)
    chosen: dict[str, Any] = {}
    for name in sorted(job_vars):
        if name not in values:
            continue
        value = values[name]
        literal = isinstance(value, (str, int, float, bool)) and "${" not in str(value)
        if not literal and not strict:
            continue
        if value is None:
            raise ConfigError(
                f"{config.file}: variables.{name}: {job_file} needs a value in target {target.name}; "
                "give the variable a default"
            )
        if not literal:
            raise ConfigError(
                f"{config.file}: variables.{name} in target {target.name}: {job_file} compiles to "
                f"static SQL, so the value must be a literal, not {value!r}"
            )
        chosen[name] = value
    return chosen
