"""Load job files: YAML with positions -> Jinja in string values -> strict models.

Every error is one line naming file, line and key path, e.g.
`jobs/triage.yml:12: agent.model_parameters.max_tokens: Input should be greater than 0`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentbatch.errors import SpecError, TemplateError
from agentbatch.spec import quoted_forms
from agentbatch.spec.models import EnvironmentRead, Job, JobOrigin, VariableUse
from agentbatch.spec.yaml_source import KeyPath, YamlDocument, dotted, load_yaml, printable
from agentbatch.sql import quoting
from agentbatch.sql.jinja import Helpers, make_environment, render_string

# Values that are SQL: Jinja output there is quoted as literals (see agentbatch.sql.jinja).
_SQL_FIELDS: tuple[KeyPath, ...] = (("request",), ("source", "where"), ("source", "query"))
# Values env() reads shorter than this are not masked in messages (as `redact` does not mask
# them): masking a `1` everywhere would garble the message.
_MASKED_CHARS = 6


def load_job(
    path: str | Path,
    vars: Mapping[str, Any] | None = None,
    *,
    template_dirs: Iterable[Path] = (),
    project_dir: str | Path | None = None,
) -> Job:
    """Load and validate one job file; `vars` override the file's `vars:`. The job remembers
    its file and project (`project_dir`, else the one the file is in: see `project_of_file`)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{file}: no such job file") from None
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise SpecError(f"{file}:{line}: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise SpecError(f"{file}: cannot read: {err.strerror}") from None
    job = load_job_text(text, file, vars, template_dirs=template_dirs)
    root = Path(project_dir) if project_dir is not None else project_of_file(path)
    if job._origin is not None:
        job._origin = dataclasses.replace(job._origin, project_dir=root.resolve())
    return job


def project_of_file(path: str | Path) -> Path:
    """A job file's project: the parent of the `jobs/` folder it is in, else its own folder."""
    parent = Path(path).resolve().parent
    return parent.parent if parent.name == "jobs" else parent


def where_in_file(file: str, path: KeyPath) -> str:
    """`file:line` of a key path of a job file, for errors found after loading (the job's SQL
    checked against its source); the file alone when it cannot be read again."""
    try:
        return load_yaml(Path(file).read_text(encoding="utf-8"), file).where(path)
    except (OSError, UnicodeDecodeError, SpecError):
        return file


def load_job_text(
    text: str,
    file: str,
    vars: Mapping[str, Any] | None = None,
    *,
    template_dirs: Iterable[Path] = (),
) -> Job:
    try:
        return _load(text, file, vars, template_dirs)
    except SpecError as err:
        # Messages quote keys and values: keep each problem on one printable line.
        raise type(err)("\n".join(printable(line) for line in str(err).split("\n"))) from None
    except RecursionError:
        raise SpecError(f"{file}:1: nested too deeply") from None


def _load(
    text: str, file: str, vars: Mapping[str, Any] | None, template_dirs: Iterable[Path]
) -> Job:
    doc = load_yaml(text, file)
    if not isinstance(doc.value, dict):
        raise SpecError(
            f"{file}:1: a job file is a mapping of keys (name, source, request, agent, output)"
        )
    raw = dict(doc.value)
    file_vars = raw.get("vars", {})
    if not isinstance(file_vars, dict):
        file_vars = {}
    _refuse_templates_in_defaults(file_vars, doc)
    merged_vars = {**file_vars, **(vars or {})}
    env_names = raw.get("env", [])
    helpers = _Helpers(merged_vars, env_names if isinstance(env_names, list) else [])
    template_dirs = tuple(template_dirs)
    environments = {
        "text": make_environment("text", helpers, template_dirs),
        "sql": make_environment("sql", helpers, template_dirs),
    }
    try:
        rendered = _render_values(raw, (), doc, environments, helpers)
        if vars:
            rendered["vars"] = merged_vars
        try:
            job = Job.model_validate(rendered)
        except ValidationError as err:
            raise SpecError(_format_validation_error(err, doc)) from None
        _refuse_source_as_output(job, doc)
    except SpecError as err:
        # A message quoting a value (`should be a mapping, not the text '...'`) must not show
        # what env() read: the run masks those values in its messages only once it plans.
        raise type(err)(helpers.masked(str(err))) from None
    job._variables = VariableUse(
        declared=frozenset(file_vars), read=frozenset(helpers.read), given=frozenset(vars or {})
    )
    job._origin = JobOrigin(
        file=file,
        env_line=doc.where(("env",)) if job.env else "",
        environment=tuple(helpers.environment),
    )
    return job


def _refuse_source_as_output(job: Job, doc: YamlDocument) -> None:
    """An output table that is the source table (`output.table` copied from `source.table`):
    each run would read the rows it writes, and an `overwrite` run would replace the source
    with its answers. Names are compared as Unity Catalog compares them (case-insensitive),
    when both have the same number of parts (`shop.t` may or may not be `main.shop.t`)."""
    source = job.source.table
    if source is None:
        return
    parts = [tuple(p.lower() for p in quoting.table_parts(t)) for t in (source, job.output.table)]
    if parts[0] != parts[1]:
        return
    raise SpecError(
        f"{doc.where(('output', 'table'))}: output.table: {job.output.table} is the job's source "
        f"table (source.table, {doc.where(('source', 'table'))}): a run would write its answers "
        "into the rows it reads (mode overwrite would replace them); name another table for "
        "the answers"
    )


class _Helpers(Helpers):
    """The templates' helpers, also noting which value read which environment variable (a job
    that reads this machine's environment cannot be compiled or scheduled elsewhere)."""

    def __init__(self, variables: Mapping[str, Any], allowed_env: Iterable[str]) -> None:
        super().__init__(variables, allowed_env)
        self.rendering = ""  # `file:line: key` of the value being rendered
        self.environment: list[EnvironmentRead] = []
        self._read: set[str] = set()  # values read from the environment

    def env(self, name: str, default: str | None = None) -> str:
        value = super().env(name, default)
        self.environment.append(EnvironmentRead(self.rendering, name))
        if os.environ.get(name) == value and len(value) >= _MASKED_CHARS:
            self._read.add(value)
        return value

    def masked(self, message: str) -> str:
        """`message` without the values env() read: as read, as a SQL literal or JSON string
        holds them, and as Python's repr() quotes them."""
        forms = {form for value in self._read for form in quoted_forms(value)}
        for form in sorted(forms, key=len, reverse=True):
            message = message.replace(form, "***")
        return message


def _refuse_templates_in_defaults(file_vars: Mapping[str, Any], doc: YamlDocument) -> None:
    """`vars:` values are data, used as they are: Jinja there would reach the prompt verbatim."""
    for name, value in file_vars.items():
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            path = ("vars", name)
            raise SpecError(
                f"{doc.where(path)}: {dotted(path)}: a variable's default is used as it is, "
                "without Jinja; write the value itself, or build it where the variable is read "
                "(e.g. \"{{ var('a') ~ var('b') }}\")"
            )


def _render_values(
    value: Any, path: KeyPath, doc: YamlDocument, envs: Mapping[str, Any], helpers: _Helpers
) -> Any:
    if isinstance(value, dict):
        return {k: _render_values(v, (*path, k), doc, envs, helpers) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_values(v, (*path, i), doc, envs, helpers) for i, v in enumerate(value)]
    if isinstance(value, str) and ("{{" in value or "{%" in value) and path[:1] != ("vars",):
        mode = "sql" if any(path[: len(f)] == f for f in _SQL_FIELDS) else "text"
        where = f"{doc.where(path)}: {dotted(path)}"
        helpers.rendering = where
        try:
            return render_string(envs[mode], value, {}, where)
        except TemplateError as err:
            raise SpecError(str(err)) from None
    return value


def _format_validation_error(err: ValidationError, doc: YamlDocument) -> str:
    """All problems, one line each, in the file's order (a problem's union branches merged,
    the most specific first)."""
    lines: list[tuple[int, str]] = []
    seen: set[str] = set()
    for problem in err.errors(include_url=False):
        path = _doc_path(problem["loc"], doc.value)
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(problem["loc"])
        elif problem["type"] in _YAML_KINDS:
            # pydantic names Python types ("a valid tuple", "an instance of Source").
            message = (
                f"should be {_YAML_KINDS[problem['type']]}, not {_yaml_kind(problem['input'])}"
            )
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        line = f"{doc.where(path)}: {dotted(path)}: {message}"
        key = f"{doc.where(path)}: {dotted(path)}"
        if key in seen:
            continue
        seen.add(key)
        lines.append((doc.line_of(path), line))
    # pydantic reports in the models' field order, not the file's (`timeout_seconds` on line 10
    # before `max_retries` on line 9): a stable sort keeps each line's own order.
    return "\n".join(line for _, line in sorted(lines, key=lambda numbered: numbered[0]))


_YAML_KINDS = {
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _yaml_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    return f"the {type(value).__name__ if not isinstance(value, str) else 'text'} {value!r}"


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """`; did you mean 'columns'?` for a misspelt key, from the keys the model at `loc` takes."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    allowed = _model_keys(loc[:-1])
    close = difflib.get_close_matches(loc[-1], sorted(allowed), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_keys(loc: tuple[int | str, ...]) -> set[str]:
    model: Any = Job
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields is None or not isinstance(part, str) or part not in fields:
            continue  # list indexes and union tags
        model = _model_in(fields[part].annotation)
        if model is None:
            return set()
    fields = getattr(model, "model_fields", None) or {}
    return {field.alias or name for name, field in fields.items()}


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _doc_path(loc: tuple[int | str, ...], value: Any) -> KeyPath:
    """Map a pydantic location onto the document, dropping union tags such as `str` or `dict[...]`."""
    path: list[str | int] = []
    node = value
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]  # type: ignore[index]
            path.append(part)
        elif (
            isinstance(node, dict)
            and not isinstance(part, int)
            and part not in node
            and len(loc)
            and part == loc[-1]
        ):
            path.append(part)  # a missing or unknown key: name it
    return tuple(path)


def parse_var_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """`--var k=v` values: `true`/`false` (any case), and a number written as Python writes it back (`5`,
    `-2`, `0.5`), become a bool or a number; any other value is kept as the text given. YAML's
    reading would change text a prompt quotes (`01234` is the octal 668, `12:30:00` 45000, `yes`
    true, `1_000` 1000, surrounding spaces dropped)."""
    result: dict[str, Any] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise SpecError(f"--var {item!r}: expected NAME=VALUE")
        result[name.strip()] = _var_value(text)
    return result


def _var_value(text: str) -> str | bool | int | float:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        if str(number) == text and math.isfinite(number):
            return number
    return text
