"""LLM judges: each judge is itself a job, run by the same machinery as any other.

The judge job reads the source rows joined with the answers the evaluation scores (for each key
of the current selection, its answer to the current request: `evaluated_rows.sql`; rows the
agent failed on are left out), sends the prompt built from its placeholders to the judge endpoint, and merges the
replies into its own table by key. So the judge runs as `ai_query` push-down on Databricks and
over REST elsewhere, with the same retries, ledger and resume; and because the prompt holds the
answer, a re-run re-judges exactly the rows whose answer changed.

Placeholders: `{response}` (a structured answer as JSON), `{response.<field>}`, `{expected}`,
`{request}` (the prompt the agent got), and `{<column>}` for any column of the source table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from agentbatch.agent.redact import safe_url
from agentbatch.evaluation.scorers import JudgeReply
from agentbatch.evaluation.tables import derived_table
from agentbatch.spec import evaluation as spec
from agentbatch.spec.models import Job
from agentbatch.sql import quoting
from agentbatch.sql.quoting import Sql

if TYPE_CHECKING:
    from agentbatch.engines.base import Engine
    from agentbatch.planning.definition import RunOptions

log = logging.getLogger(__name__)

ANSWER_COLUMN = "agentbatch_answer"
_FIELD_COLUMN = "agentbatch_answer_field_{}"
_ROWS_ALIAS = "judged_rows"
_ANSWERS_ALIAS = "judged_answers"


def judge_table_name(
    answers_table: str, scorer: str, options: spec.LlmJudge, variant: str = ""
) -> str:
    """Where a judge's replies go: `table:` (suffixed per variant) or `<answers>_judge_<name>`."""
    suffix = f"_{variant}" if variant else ""
    if options.table is not None:
        return derived_table(options.table, suffix)
    return derived_table(answers_table, f"_judge_{scorer}")


def judge_job(
    job: Job,
    scorer: str,
    options: spec.LlmJudge,
    *,
    answers_table: str,
    judge_table: str,
    expected: str | None,
    answers_sql: str | None = None,
) -> Job:
    """The job that asks the judge about every answered row of `answers_sql`, the query of the
    rows the evaluation scores (one per key: `evaluated_rows.sql`), else of `answers_table`
    (which must then hold one row per key)."""
    prompt, fields = compile_prompt(options.prompt_template(), job, expected)
    answers = Sql(f"({answers_sql})") if answers_sql is not None else quoting.table(answers_table)
    definition: dict[str, Any] = {
        "name": f"{job.name}__judge_{scorer}"[:100],
        "description": f"LLM judge {scorer!r} of {job.name}",
        "source": {"query": _judged_rows_query(job, answers, fields), "key": job.source.key},
        "request": prompt,
        "agent": {
            "endpoint": options.endpoint,
            "api": options.api,
            "model_parameters": {
                "temperature": options.temperature,
                **({"max_tokens": options.max_tokens} if options.max_tokens else {}),
            },
            "timeout_seconds": options.timeout_seconds,
            "max_retries": options.max_retries,
            **({"max_concurrency": options.max_concurrency} if options.max_concurrency else {}),
        },
        "output": {"table": judge_table, "mode": "merge"},
    }
    return Job.model_validate(definition)


def compile_prompt(template: str, job: Job, expected: str | None) -> tuple[str, list[str]]:
    """The prompt as one SQL `concat(...)` expression, and the answer fields it reads."""
    parts: list[str] = []
    fields: list[str] = []
    position = 0
    for match in spec.PLACEHOLDER.finditer(template):
        if match.start() > position:
            parts.append(quoting.literal(template[position : match.start()]))
        parts.append(_placeholder_sql(match.group(1), job, expected, fields))
        position = match.end()
    if position < len(template):
        parts.append(quoting.literal(template[position:]))
    if not parts:
        parts.append(quoting.literal(""))
    return f"concat({', '.join(parts)})", fields


def _placeholder_sql(name: str, job: Job, expected: str | None, fields: list[str]) -> str:
    head, _, rest = name.partition(".")
    if head == "response" and rest:
        if rest not in fields:
            fields.append(rest)
        return _text(quoting.identifier(_FIELD_COLUMN.format(fields.index(rest))))
    if head == "response":
        answer = quoting.identifier(ANSWER_COLUMN)
        structured = job.agent.response_format is not None
        return f"coalesce(to_json({answer}), '')" if structured else _text(answer)
    if head == "expected":
        if expected is None:
            raise ValueError("{expected} needs an expected column")
        return _text(quoting.identifier(expected))
    if head == "request":
        return _text(_request_sql(job))
    return _text(quoting.identifier(name))


def _request_sql(job: Job) -> str:
    if isinstance(job.request, dict):
        args = ", ".join(
            f"{quoting.literal(name)}, {quoting.expression(expr)}"
            for name, expr in job.request.items()
        )
        return f"to_json(named_struct({args}))"
    return f"({quoting.expression(job.request, what='request')})"


def _text(sql: str) -> str:
    return f"coalesce(CAST({sql} AS STRING), '')"


def _judged_rows_query(job: Job, answers: Sql, fields: list[str]) -> str:
    """The source rows (every column, for the prompt's placeholders) joined with the answers
    to judge (`answers`: a table or a parenthesised query, one row per key)."""
    key = quoting.identifier(job.source.key)
    source = job.source
    rows = (
        quoting.table(source.table)
        if source.table is not None
        else Sql(f"({quoting.query(source.query or '')})")
    )
    answer = f"{_ANSWERS_ALIAS}.{quoting.identifier('response')}"
    selected = [f"{answer} AS {quoting.identifier(ANSWER_COLUMN)}"]
    for number, path in enumerate(fields):
        access = ".".join([answer, *(quoting.identifier(part) for part in path.split("."))])
        selected.append(f"{access} AS {quoting.identifier(_FIELD_COLUMN.format(number))}")
    return (
        f"SELECT {', '.join(selected)}, {_ROWS_ALIAS}.*\n"
        f"FROM {rows} AS {_ROWS_ALIAS}\n"
        f"JOIN {answers} AS {_ANSWERS_ALIAS}\n"
        f"  ON {_ROWS_ALIAS}.{key} = {_ANSWERS_ALIAS}.{key}\n"
        f"WHERE {_ANSWERS_ALIAS}.{quoting.identifier('error')} IS NULL"
    )


def run_judge(
    job: Job,
    target: Any,
    options: RunOptions,
    before_writing: Callable[[Engine], None],
    also_writes: Iterable[str],
) -> dict[Any, JudgeReply]:
    """Run a judge job and read its replies by key (the engine is closed before returning):
    for each row it judged, the reply to its current prompt (`evaluated_rows.sql`), never one
    its table holds for an earlier answer. `before_writing`, `also_writes`: as `runner.run_plan`'s."""
    from agentbatch.evaluation.tables import read_evaluated_rows
    from agentbatch.execution import runner

    log.info("judging with %s: %s", safe_url(job.agent.endpoint), job.output.table)
    result = runner.run(
        job, target, options, before_writing=before_writing, also_writes=also_writes
    )
    engine = result.engine
    if engine is None:  # pragma: no cover - only dry runs have no engine
        return {}
    try:
        table = read_evaluated_rows(engine, result.plan)
    finally:
        engine.close()
    key = next(c for c in table.column_names if c.lower() == job.source.key.lower())
    keys = table.column(key).to_pylist()
    texts = table.column("response").to_pylist()
    errors = table.column("error").to_pylist()
    return {k: JudgeReply(text=t, error=e) for k, t, e in zip(keys, texts, errors, strict=True)}
