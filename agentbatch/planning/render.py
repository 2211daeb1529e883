"""Render a job's SQL statements from the templates, then parse each with the Databricks dialect.

The context handed to templates holds only `Sql` fragments from the quoting layer, plain flags and
numbers; templates never see the job object itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agentbatch.agent.bodies import NULL_REQUEST
from agentbatch.agent.calls import null_request_fingerprint
from agentbatch.agent.response_format import (
    ResponseFormat,
    ResponseFormatError,
    parse_response_format,
)
from agentbatch.errors import JobValueError, TemplateError
from agentbatch.planning.answers import AnswerChecks, answer_checks, error_sql
from agentbatch.results import RESULT_COLUMN_NAMES, TRANSIENT_ERROR
from agentbatch.spec.models import Job
from agentbatch.sql import parsing, quoting
from agentbatch.sql.jinja import Helpers, make_environment, render_template
from agentbatch.sql.quoting import Sql, SqlValueError
from agentbatch.sql.types import response_type


@dataclass(frozen=True)
class RenderOptions:
    """What varies per run, not per job."""

    incremental: bool = True
    keep_held: bool = True  # mode overwrite keeps the rows the target holds (`_kept.sql`)
    retry_errors: bool = False
    run_limit: int | None = None
    # A limited full refresh takes the rows whose answers are oldest (it reads the target).
    oldest_first: bool = False
    staged: str | None = None  # the staging relation for write_results
    run_started_at: str = "1970-01-01 00:00:00+00:00"
    # A continued full refresh: when it began (`utc_timestamp`); rows the target holds for the
    # current request, answered since then, are done (`_source.sql`).
    refresh_since: str | None = None
    # A full refresh (push-down: through the built-in templates, `PushDown.keeps_answers`): a
    # row whose new call fails transiently keeps the good answer the target holds to the same
    # request (`_answers.sql`; the REST fallback's write: `_staged_rows.sql`).
    keep_answers: bool = False
    # The sqlglot dialect the engine runs the SQL in (it transpiles from Databricks SQL itself);
    # a few statements take another shape where one engine handles it badly.
    dialect: str = "databricks"


def uses_agent_body(job: Job) -> bool:
    """Push-down sends a struct body (not a bare prompt) when the agent needs more than the text."""
    return isinstance(job.request, dict) or bool(
        job.agent.custom_inputs or job.agent.databricks_options
    )


def request_sql(job: Job) -> tuple[Sql, Sql]:
    """(value passed to ai_query, text that is sent over REST and fingerprinted)."""
    if isinstance(job.request, dict):
        args = ", ".join(
            f"{quoting.literal(name)}, {quoting.expression(expr)}"
            for name, expr in job.request.items()
        )
        struct = Sql(f"named_struct({args})")
        return struct, Sql(f"to_json({struct})")
    # Always text: a prompt is a string to every agent (a number column would go as a JSON
    # number, which agents refuse, and ai_query takes a STRING request).
    text = Sql(f"CAST({quoting.expression(job.request, what='request')} AS STRING)")
    if not uses_agent_body(job):
        return text, text
    message = Sql(f"named_struct('role', 'user', 'content', {text})")
    fields = [
        f"{quoting.literal('input' if job.agent.api == 'responses' else 'messages')}, array({message})"
    ]
    if job.agent.custom_inputs:
        fields.append(f"'custom_inputs', {quoting.literal(job.agent.custom_inputs)}")
    if job.agent.databricks_options:
        fields.append(f"'databricks_options', {quoting.literal(job.agent.databricks_options)}")
    return Sql(f"named_struct({', '.join(fields)})"), text


def ai_query_sql(job: Job) -> Sql:
    """`ai_query(<endpoint literal>, request, failOnError => false, ...)` as Databricks expects."""
    value, text = request_sql(job)
    column = Sql("`_request_value`" if value != text else "`_request`")
    args = [quoting.literal(job.agent.endpoint), column, Sql("failOnError => false")]
    params = job.agent.model_parameters.as_dict()
    if params:
        args.append(Sql(f"modelParameters => {quoting.literal(params)}"))
    if job.files is not None:
        # The bytes, as Databricks documents multimodal input (see docs/databricks-behaviour.md).
        args.append(Sql("files => `_file`"))
    fmt = job.agent.response_format
    if fmt is not None:
        # Always the JSON-schema form, the same schema the REST fallback asks for. A DDL string
        # would need exactly one top-level field wrapping the wanted struct
        # (AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT otherwise); the JSON-schema form has no such
        # rule, and the answer is the object itself (see docs/databricks-behaviour.md).
        schema = parse_format(fmt).chat_response_format()
        args.append(Sql(f"responseFormat => {quoting.json_literal(schema)}"))
    return Sql(f"ai_query({', '.join(args)})")


def _response_type(fmt: str | Mapping[str, Any] | None) -> str:
    """The SQL type of the `response` column for this format."""
    if fmt is not None:
        parse_format(fmt)  # a format that cannot be read is the job's error, named at its key
    try:
        return response_type(fmt)
    except SqlValueError as err:
        raise JobValueError(f"agent.response_format: {err}", ("agent", "response_format")) from None


def parse_format(fmt: str | Mapping[str, Any]) -> ResponseFormat:
    try:
        return parse_response_format(fmt)
    except (ResponseFormatError, SqlValueError) as err:
        key = ("agent", "response_format")
        raise JobValueError(f"agent.response_format: {err}", key) from None


class _NotPushable:
    """Stands for answer checks that cannot be written in SQL: using them (rendering a push-down
    statement) is the error, planning the REST fallback is not."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def __getattr__(self, name: str) -> Any:
        raise TemplateError(self._reason)


def _answer_checks(fmt: str | Mapping[str, Any]) -> AnswerChecks | _NotPushable:
    try:
        return answer_checks(parse_format(fmt))
    except SqlValueError as err:
        return _NotPushable(f"agent.response_format: {err}")


@dataclass(frozen=True)
class FilesSql:
    """A job's per-row file: the bytes and the file name as SQL over the source rows."""

    content: Sql
    name: Sql
    # `files.max_bytes` and the mark a file over it adds to its row's fingerprint.
    max_bytes: Sql
    over_limit: Sql
    # Over `_file`: TRUE when the row's file is over files.max_bytes (NULL without a file), and
    # the row error such a file is instead of a call: the REST fallback's (`content.check_size`).
    too_large: Sql
    too_large_error: Sql


# The bytes of a file in SQL (`_file`, from the inputs CTEs of `_source.sql`).
_FILE_BYTES = Sql("octet_length(`_file`)")


def files_sql(job: Job) -> FilesSql | None:
    if job.files is None:
        return None
    name = job.files.name
    limit = int(job.files.max_bytes)
    # content.check_size's message, from the same size (a file over the limit has >= 1 byte).
    rest = f" bytes, over the limit of {limit} bytes (files.max_bytes); it was not sent"
    too_large_error = Sql(
        f"concat('file is ', CAST({_FILE_BYTES} AS STRING), {quoting.literal(rest)})"
    )
    return FilesSql(
        content=quoting.expression(job.files.content, what="files.content"),
        name=quoting.expression(name, what="files.name") if name else Sql("CAST(NULL AS STRING)"),
        max_bytes=Sql(str(limit)),
        over_limit=quoting.literal(f"over files.max_bytes {limit}"),
        too_large=Sql(f"{_FILE_BYTES} > {limit}"),
        too_large_error=too_large_error,
    )


def job_context(job: Job, call_fingerprint: str, options: RenderOptions) -> dict[str, Any]:
    source = job.source
    if source.table is not None:
        relation = quoting.table(source.table)
    else:
        relation = Sql(f"({quoting.query(source.query or '')}) AS source_query")
    value, text = request_sql(job)
    fmt = job.agent.response_format
    return {
        "job_name": job.name,
        "source": relation,
        "key": quoting.identifier(source.key),
        "columns": [quoting.identifier(c) for c in source.columns],
        "where": quoting.expression(source.where, what="where clause") if source.where else None,
        "limit": source.limit,
        "request_value": value,
        "request_text": text,
        "files": files_sql(job),
        "call_fingerprint": quoting.literal(call_fingerprint),
        "null_request_fingerprint": quoting.literal(null_request_fingerprint(call_fingerprint)),
        "null_request_error": quoting.literal(NULL_REQUEST),
        "ai_query": ai_query_sql(job),
        "response_format": quoting.literal(_response_type(fmt)) if fmt is not None else None,
        "checks": _answer_checks(fmt) if fmt is not None else None,
        "error": error_sql(Sql("`_failure`"), Sql("`_problem`") if fmt is not None else None),
        "response_type": Sql(_response_type(fmt)),
        "output": quoting.table(job.output.table),
        # As messages name them (rendered as SQL literals).
        "output_name": job.output.table,
        "key_name": repr(source.key),
        "mode": job.output.mode,
        "incremental": options.incremental,
        "keep_held": options.keep_held,
        "retry_errors": options.retry_errors,
        "run_limit": options.run_limit,
        "oldest_first": options.oldest_first and options.run_limit is not None,
        "dialect": options.dialect,
        "staged": Sql(options.staged) if options.staged else None,
        "run_started_at": quoting.literal(options.run_started_at),
        "refresh_since": None
        if options.refresh_since is None
        else quoting.literal(options.refresh_since),
        "result_columns": [quoting.identifier(c) for c in RESULT_COLUMN_NAMES],
        "transient_error_pattern": quoting.literal(TRANSIENT_ERROR.strip() + "%"),
        "keep_answers": options.keep_answers,
    }


class Renderer:
    """Renders one job's templates. Project templates in `template_dirs` override built-ins by name."""

    def __init__(self, job: Job, template_dirs: Iterable[Path] = ()) -> None:
        self.job = job
        self._dirs = [Path(d) for d in template_dirs]
        helpers = Helpers(job.vars, job.env)
        self._env = make_environment("sql", helpers, self._dirs)

    def overridden(self, *names: str) -> bool:
        """Whether the project overrides any of the built-in templates `names`."""
        return any((d / name).is_file() for d in self._dirs for name in names)

    def render(self, template: str, context: Mapping[str, Any]) -> str:
        sql = render_template(self._env, template, context).strip()
        check_sql(sql, template)
        return sql


def check_sql(sql: str, template: str) -> None:
    """Parse rendered SQL as Databricks SQL; a syntax error names the template that produced it."""
    try:
        statements = parsing.statements(sql)
    except quoting.UNREADABLE as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TemplateError(
            f"{template}: rendered SQL does not parse as Databricks SQL: {detail}"
        ) from None
    if len(statements) != 1:
        raise TemplateError(
            f"{template}: must render exactly one SQL statement, got {len(statements)}"
        )


def utc_timestamp(moment: datetime) -> str:
    """A moment as timestamp text for SQL: with its offset (a warehouse reads a timestamp literal
    without one in its session time zone, which an admin may set) and microseconds (a run
    started within the second of the last one's answers)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
