"""Checks of the `evaluation:` block against the rest of its job (columns, fields, endpoints),
reported like every spec error: `jobs/eval.yml:17: evaluation.scorers[0].exact_match.expected: ...`.

The evaluation reads the job's *output* table, so the expected and group columns must be kept
there: the source key or one of `source.columns`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentbatch.errors import SpecError
from agentbatch.spec import evaluation as spec
from agentbatch.spec.models import Agent, Job
from agentbatch.spec.yaml_source import KeyPath, dotted, load_yaml
from agentbatch.sql import quoting

SCORES_FIXED_COLUMNS = ("response", "agent_error")
_NEEDS_EXPECTED = (spec.ExactMatch, spec.Numeric)
_JUDGE_BUILTINS = ("response", "expected", "request")


def check_evaluation(job: Job, file: str | Path | None = None) -> spec.Evaluation:
    """The job's evaluation, after checking it fits the job; SpecError (all problems) if not."""
    where = _Locator(job, file)
    evaluation = job.evaluation
    if evaluation is None:
        raise SpecError(f"{where.at(())}: the job has no `evaluation:` block; add one to score it")
    problems: list[str] = []
    kept = {job.source.key.lower(), *(c.lower() for c in job.source.columns)}
    kept_text = ", ".join([job.source.key, *job.source.columns])
    for attribute in ("expected", "group_by"):
        column = getattr(evaluation, attribute)
        if column is not None and column.lower() not in kept:
            problems.append(
                f"{where.at(('evaluation', attribute))}: evaluation.{attribute}: {column!r} is not "
                f"in the output; keep it with source.columns (kept: {kept_text})"
            )
    fields = struct_fields(job.agent.response_format)
    taken = {job.source.key.lower(), *SCORES_FIXED_COLUMNS}
    taken |= {c.lower() for c in (evaluation.expected, evaluation.group_by) if c}
    names = {entry.name for entry in evaluation.scorers}
    for number, entry in enumerate(evaluation.scorers):
        path: KeyPath = ("evaluation", "scorers", number, entry.kind)
        prefix = f"{where.at(path)}: {dotted(path)}"
        options = entry.options
        own_expected: str | None = getattr(options, "expected", None)
        expected = own_expected or evaluation.expected
        if own_expected is not None and own_expected.lower() not in kept:
            problems.append(
                f"{prefix}.expected: {own_expected!r} is not in the output (kept: {kept_text})"
            )
        needs_expected = isinstance(options, _NEEDS_EXPECTED) or (
            isinstance(options, spec.Contains) and options.value is None
        )
        if needs_expected and expected is None:
            problems.append(
                f"{prefix}: needs an expected column: set evaluation.expected or `expected:`"
            )
        field = getattr(options, "field", None)
        if field is not None and fields is not None and field.split(".")[0] not in fields:
            problems.append(
                f"{prefix}.field: the answer has no field {field.split('.')[0]!r} "
                f"(fields: {', '.join(sorted(fields))})"
            )
        if entry.name.lower() in taken or f"{entry.name}_error".lower() in taken:
            problems.append(
                f"{prefix}: the scorer name {entry.name!r} clashes with a column; set `name:`"
            )
        stem, _, bound = entry.name.rpartition("_ci_")
        if bound in ("low", "high") and stem in names:
            # MLflow logs a scorer's mean as `<name>` and its interval as `<name>_ci_low`,
            # `<name>_ci_high`: one metric would overwrite the other.
            problems.append(
                f"{prefix}: the scorer name {entry.name!r} is the MLflow metric of scorer "
                f"{stem!r}'s interval; set another `name:`"
            )
        if isinstance(options, spec.LlmJudge):
            problems += _judge_problems(options, prefix, expected, fields)
    if problems:
        raise SpecError("\n".join(problems))
    return evaluation


def _judge_problems(
    options: spec.LlmJudge, prefix: str, expected: str | None, fields: set[str] | None
) -> list[str]:
    problems: list[str] = []
    try:
        Agent(endpoint=options.endpoint)
    except ValidationError as err:
        message = err.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        problems.append(f"{prefix}.endpoint: {message}")
    for name in spec.PLACEHOLDER.findall(options.prompt_template()):
        head, _, rest = name.partition(".")
        if head == "expected" and expected is None:
            problems.append(f"{prefix}.prompt: {{expected}} needs an expected column")
        elif head == "response" and rest and fields is None:
            problems.append(
                f"{prefix}.prompt: {{{name}}} needs a structured answer (agent.response_format)"
            )
        elif (
            head == "response" and rest and fields is not None and rest.split(".")[0] not in fields
        ):
            problems.append(f"{prefix}.prompt: the answer has no field {rest.split('.')[0]!r}")
        elif head not in _JUDGE_BUILTINS and rest:
            problems.append(f"{prefix}.prompt: {{{name}}}: only {{response.<field>}} takes a field")
    return problems


def struct_fields(response_format: str | dict[str, Any] | None) -> set[str] | None:
    """Top-level field names of a structured answer; None for a text answer."""
    if response_format is None:
        return None
    if isinstance(response_format, dict):
        properties = response_format.get("properties")
        return set(properties) if isinstance(properties, dict) else set()
    from sqlglot import exp

    node = exp.DataType.build(quoting.data_type(response_format), dialect=quoting.DIALECT)
    return {child.name for child in node.expressions if isinstance(child, exp.ColumnDef)}


class _Locator:
    """`file:line` of a key path when the job came from a file, else the job's name."""

    def __init__(self, job: Job, file: str | Path | None) -> None:
        self.fallback = f"job {job.name!r}"
        self.doc = None
        if file is not None:
            try:
                self.doc = load_yaml(Path(file).read_text(encoding="utf-8"), str(file))
            except (OSError, SpecError):
                self.doc = None

    def at(self, path: KeyPath) -> str:
        return self.doc.where(path) if self.doc is not None else self.fallback
