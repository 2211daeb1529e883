"""`agentbatch bundle`: generate the Databricks Asset Bundle's job resources from `jobs/*.yml`
(and `*.yaml`), so adding a job file is enough to schedule it with `databricks bundle deploy`.

For every job file it writes `resources/<job>.job.yml` and, for push-down jobs, the compiled SQL
under `resources/sql/` (exactly what `agentbatch compile` writes). Which task a job gets is the
planner's decision for the `databricks-sql` target:

- push-down (a Model Serving endpoint `ai_query` can reach): a `sql_task` on a SQL warehouse;
- REST fallback (agents on Databricks Apps, ...): a `python_wheel_task` running `agentbatch run`
  (`agentbatch eval` for jobs with an `evaluation:` block).

`--check` writes nothing and exits 1 when a generated file is missing, different or orphaned.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agentbatch.bundle.config import (
    COMMON_VARIABLES,
    SQL_VARIABLES,
    WHEEL_VARIABLES,
    BundleConfig,
    BundleTarget,
    load_bundle_config,
)
from agentbatch.bundle.resources import BundleJob, job_resource_document
from agentbatch.bundle.yaml_writer import dump_generated, is_generated
from agentbatch.errors import ConfigError, SpecError
from agentbatch.spec.project import refuse_environment
from agentbatch.spec.yaml_source import load_yaml

JOBS_DIR = "jobs"
JOB_SUFFIXES = (".yml", ".yaml")
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
    job_paths = job_files(project_dir)
    if not job_paths:
        raise ConfigError(f"{project_dir / JOBS_DIR}: no job files (*.yml, *.yaml) to schedule")
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
        refuse_environment(job, "agentbatch bundle")
        _check_parameters(job.vars, path, relative, config)
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
            schedule=job.schedule.model_dump(exclude_none=True) if job.schedule else None,
            evaluation=job.evaluation is not None,
        )
        if the_plan.strategy == "push-down":
            needed.update(SQL_VARIABLES)
            sql_files, parameters = _compiled_sql(path, job.name, job.vars, config, project_dir)
            files += sql_files
            bundle_job = replace(
                bundle_job, sql_file=f"./sql/{job.name}.sql", sql_parameters=parameters
            )
        else:
            needed.update(WHEEL_VARIABLES)
            if job.evaluation is not None:
                needed.add("report_dir")
        document = job_resource_document(bundle_job, config.variables)
        files.append(
            GeneratedFile(f"{RESOURCES_DIR}/{job.name}.job.yml", dump_generated(document, relative))
        )
    config.require(tuple(sorted(needed)))
    return sorted(files, key=lambda f: f.path)


# Job parameter names the generated `{{job.parameters.NAME}}` references reach unescaped.
_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _check_parameters(
    job_vars: Mapping[str, Any], path: Path, relative: str, config: BundleConfig
) -> None:
    """Each variable becomes a job parameter: a name a reference can name, and a default the
    Databricks CLI will not substitute (`${...}`) at deploy time."""
    for name, value in job_vars.items():
        if not _PARAMETER_NAME.match(name):
            problem = (
                "not a job parameter name (letters, digits and _): the bundle passes each "
                "variable as a job parameter"
            )
        elif name not in config.variables and "${" in str(value):
            problem = (
                "a default holding `${` would be substituted by the Databricks CLI when the "
                "bundle is deployed; write it without `${`, or give the value with --var"
            )
        else:
            continue
        where = load_yaml(path.read_text(encoding="utf-8"), relative).where(("vars", name))
        raise SpecError(f"{where}: vars.{name}: {problem}")


def job_files(project_dir: Path) -> list[Path]:
    """The project's job files: `jobs/*.yml` and `jobs/*.yaml`, as `validate jobs/*` takes them."""
    folder = project_dir / JOBS_DIR
    return sorted(p for p in folder.glob("*") if p.suffix in JOB_SUFFIXES and p.is_file())


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
    from agentbatch.execution.runner import plan
    from agentbatch.planning.definition import RunOptions

    return plan(path, PLAN_TARGET, RunOptions(vars=vars, project_dir=project_dir))


def _compiled_sql(
    path: Path,
    name: str,
    job_vars: Mapping[str, Any],
    config: BundleConfig,
    project_dir: Path,
) -> tuple[list[GeneratedFile], tuple[str, ...]]:
    """The job's SQL with the bundle's variables as named parameter markers, and their names.

    The job is compiled with a placeholder value for every variable the bundle declares too; each
    placeholder inside a table name becomes `IDENTIFIER(... || :name || ...)` and inside a string
    literal `(... || :name || ...)` (Databricks SQL: named parameter markers, and the IDENTIFIER
    clause for object names). So `--var catalog=x` at deploy time, or a job parameter at run time,
    reaches the SQL task as a parameter value, never as baked-in text."""
    relative = path.relative_to(project_dir).as_posix()
    names = tuple(sorted(n for n in job_vars if n in config.variables))
    placeholders = {n: _placeholder(n) for n in names}
    text = _compile(path, {**job_vars, **placeholders}, project_dir)
    text = parameterize(text, placeholders)
    left = [n for n, p in placeholders.items() if p in text]
    if left:
        raise ConfigError(
            f"{relative}: var {left[0]!r} is set by the bundle but used where a SQL parameter "
            "cannot go (only table names and string values can be parameters); give it another "
            "name than the bundle variable, or use it in a table name or a string"
        )
    return [GeneratedFile(f"{SQL_DIR}/{name}.sql", text)], names


def _placeholder(name: str) -> str:
    return f"agentbatchparam{re.sub(r'[^a-z0-9]', '', name.lower())}x"


_QUOTED_NAME = re.compile(r"`(?:[^`]|``)*`(?:\.`(?:[^`]|``)*`)*")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")


def parameterize(sql: str, placeholders: Mapping[str, str]) -> str:
    """Replace placeholder values in quoted names and string literals by parameter markers."""

    def pieces(text: str) -> list[str]:
        parts = [text]
        for name, placeholder in placeholders.items():
            split: list[str] = []
            for part in parts:
                if part.startswith(":"):
                    split.append(part)
                    continue
                chunks = part.split(placeholder)
                for i, chunk in enumerate(chunks):
                    if i:
                        split.append(":" + name)
                    split.append(chunk)
            parts = split
        return [p for p in parts if p]

    def concat(text: str, *, escaped: bool) -> str:
        """`text` as literals joined with markers; its quotes escaped unless they already are
        (the inside of a string literal)."""
        out = [
            p if p.startswith(":") else "'" + (p if escaped else p.replace("'", "\\'")) + "'"
            for p in pieces(text)
        ]
        return " || ".join(out)

    def name(match: re.Match[str]) -> str:
        text = match.group(0)
        if not any(p in text for p in placeholders.values()):
            return text
        return f"IDENTIFIER({concat(text, escaped=False)})"

    def string(match: re.Match[str]) -> str:
        text = match.group(0)
        if not any(p in text for p in placeholders.values()):
            return text
        return f"({concat(text[1:-1], escaped=True)})"

    # Strings first (a quoted name never holds a quote), then names outside them.
    out: list[str] = []
    last = 0
    for match in _STRING.finditer(sql):
        out.append(_QUOTED_NAME.sub(name, sql[last : match.start()]))
        out.append(string(match))
        last = match.end()
    out.append(_QUOTED_NAME.sub(name, sql[last:]))
    return "".join(out)


def _compile(path: Path, vars: Mapping[str, Any], project_dir: Path) -> str:
    """Exactly what `agentbatch compile --target databricks-sql` writes for this job."""
    from agentbatch.bundle.compile import compile_jobs
    from agentbatch.planning.definition import RunOptions

    options = RunOptions(vars=vars, project_dir=project_dir)
    with tempfile.TemporaryDirectory(prefix="agentbatch-bundle-") as out:
        [written] = compile_jobs([path], Path(out), target=PLAN_TARGET, options=options)
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
