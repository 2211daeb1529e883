"""The plan: a pure decision, per job and target, of what runs where. No I/O happens here.

- push-down: `ai_query` runs inside the engine; the plan is a list of SQL statements.
- rest-fallback: the engine selects the rows still to do, agentbatch calls the agent over REST
  (checkpointing every answer), and the engine writes the answers into the target by key.

Fallback is chosen for agents on Databricks Apps, URLs and built-in agents, endpoints mapped to a
URL for this run, and engines without `ai_query`. Running a plan and explaining it are two readers
of the same data (`agentbatch.execution.runner`, `agentbatch.planning.explain`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from agentbatch.agent.calls import CallSpec, call_fingerprint
from agentbatch.agent.content import FileInput
from agentbatch.agent.redact import register_environment_value, safe_url
from agentbatch.agent.response_format import parse_response_format
from agentbatch.engines.base import WriteRequest
from agentbatch.engines.registry import engine_class
from agentbatch.errors import JobValueError, SpecError
from agentbatch.planning.answers import plain_field_name
from agentbatch.planning.definition import (
    Guards,
    Plan,
    Preflight,
    PushDown,
    RestFallback,
    RunOptions,
    Scored,
    Statement,
    Strategy,
)
from agentbatch.planning.render import (
    Renderer,
    RenderOptions,
    job_context,
    uses_agent_body,
    utc_timestamp,
)
from agentbatch.planning.targets import Target
from agentbatch.spec.loader import where_in_file
from agentbatch.spec.models import Job

_PUSH_DOWN_TEMPLATES = {
    "overwrite": "create_or_replace.sql",
    "merge": "merge.sql",
    "append": "append.sql",
}


def call_spec(job: Job) -> CallSpec:
    agent = job.agent
    return CallSpec(
        endpoint=agent.endpoint,
        api=agent.api,
        stream=agent.stream,
        custom_inputs=agent.custom_inputs,
        databricks_options=agent.databricks_options,
        model_parameters=agent.model_parameters.as_dict(),
        response_format=agent.response_format,
        request_is_json=isinstance(job.request, dict),
        timeout_s=agent.timeout_seconds,
        max_retries=agent.max_retries,
        max_concurrency=agent.max_concurrency,
        requests_per_second=agent.requests_per_second,
        files=file_input(job),
    )


def file_input(job: Job) -> FileInput | None:
    files = job.files
    return None if files is None else FileInput(files.max_bytes, files.media_type)


def choose_strategy(job: Job, target: Target, options: RunOptions) -> tuple[Strategy, str]:
    endpoint = job.agent.endpoint
    engine = engine_class(target.engine)
    if options.force_fallback:
        return "rest-fallback", "REST fallback requested for this run"
    if job.agent.is_app:
        return "rest-fallback", "ai_query cannot reach agents on Databricks Apps"
    if endpoint.startswith(("http://", "https://", "builtin:")):
        return (
            "rest-fallback",
            "the endpoint is a URL or built-in agent, not a Model Serving endpoint",
        )
    if endpoint in options.endpoints:
        return (
            "rest-fallback",
            f"the endpoint is mapped to {safe_url(options.endpoints[endpoint])!r} for this run",
        )
    if not engine.native_ai_query:
        return "rest-fallback", f"the {target.engine} engine has no ai_query"
    if uses_agent_body(job):
        # A request body (a `request` mapping, custom_inputs, databricks_options) is for a custom
        # model: an agent on Model Serving. ai_query types its answer by the model signature (a
        # struct of output[] or messages[], not text); REST reads the text, custom_outputs, trace.
        return (
            "rest-fallback",
            "the request is a body for an agent on Model Serving: ai_query would return the "
            "struct of its signature, REST reads the answer, custom_outputs and trace id",
        )
    nested = nested_answer_fields(job)
    if nested:
        # ai_query's answer is read into a nested type with from_json, which fills a part that
        # does not fit with NULL (PERMISSIVE) instead of failing: a wrong answer would be stored as
        # a good one. REST checks every value, as for any field.
        return (
            "rest-fallback",
            f"response_format field(s) {', '.join(nested)} are nested (STRUCT, ARRAY or MAP): "
            "SQL cannot check every value of an ai_query answer for them, REST does",
        )
    unread = fields_sql_cannot_read(job)
    if unread:
        return (
            "rest-fallback",
            f"response_format field(s) {', '.join(map(repr, unread))} are not plain names "
            "(letters, digits, _): SQL reads an ai_query answer's fields by JSON path, REST by "
            "name",
        )
    return "push-down", f"ai_query runs inside the {target.engine} engine"


def fields_sql_cannot_read(job: Job) -> list[str]:
    """The response format's top-level fields whose names a JSON path cannot spell plainly."""
    fmt = job.agent.response_format
    if fmt is None:
        return []
    return [f.name for f in parse_response_format(fmt).fields if not plain_field_name(f.name)]


def nested_answer_fields(job: Job) -> list[str]:
    """The response format's top-level fields of a STRUCT, ARRAY or MAP type."""
    fmt = job.agent.response_format
    if fmt is None:
        return []
    fields = parse_response_format(fmt).fields
    return [f.name for f in fields if f.sql_type.split("<")[0].strip().upper() in _NESTED_TYPES]


_NESTED_TYPES = {"STRUCT", "ARRAY", "MAP"}


def build_plan(
    job: Job,
    target: Target,
    options: RunOptions | None = None,
    template_dirs: Iterable[Path] = (),
) -> Plan:
    for name in job.env:
        # Masked in any message that quotes it (an engine error quoting a SQL literal).
        if os.environ.get(name):
            register_environment_value(os.environ[name])
    try:
        return _build_plan(job, target, options or RunOptions(), template_dirs)
    except JobValueError as err:
        raise _in_job_file(job, err) from None


def _in_job_file(job: Job, err: JobValueError) -> Exception:
    """A value found wrong when used, named by the line of the job file it came from."""
    origin = job._origin
    if origin is None:
        return err
    return SpecError(f"{where_in_file(origin.file, err.key_path)}: {err}")


def _build_plan(
    job: Job, target: Target, options: RunOptions, template_dirs: Iterable[Path]
) -> Plan:
    strategy, reason = choose_strategy(job, target, options)
    call = call_spec(job)
    fingerprint = call_fingerprint(call, route=options.endpoints.get(job.agent.endpoint))
    renderer = Renderer(job, template_dirs)
    mode = job.output.mode
    template = job.template or _PUSH_DOWN_TEMPLATES[mode]
    # Every mode skips what the target already holds, unless a full refresh asks to pay again.
    incremental = not options.full_refresh and not options.replace_target
    engine = engine_class(target.engine)
    render_options = RenderOptions(
        incremental=incremental,
        keep_held=not options.replace_target,
        retry_errors=options.retry_errors,
        run_limit=options.limit,
        # Not when replacing the target: nothing of it is read.
        oldest_first=options.full_refresh and not options.replace_target,
        staged=engine.staging_relation(job.output.table, options.run_id),
        run_started_at=utc_timestamp(options.started_at),
        refresh_since=_refresh_since(options),
        # A refresh's transient failure keeps the good answer the target holds to the same
        # request. Push-down through the built-in templates only: a job's own `template:`, or a
        # project's override of a template that carries the rule, is run as written
        # (`PushDown`). The REST fallback's write reads it again (`_staged_rows.sql`).
        keep_answers=options.full_refresh
        and not options.replace_target
        and (
            strategy != "push-down"
            or (
                job.template is None
                and not renderer.overridden(template, "_answers.sql", "_held_rows.sql")
            )
        ),
        dialect=engine.dialect,
    )
    context = job_context(job, fingerprint, render_options)

    def statement(purpose: str, template: str) -> Statement:
        return Statement(purpose, template, renderer.render(template, context))

    # Every mode reads the target (what is done), so it must exist, even before an overwrite.
    ensure = statement("create the target if missing", "ensure_target.sql")
    steps: PushDown | RestFallback
    if strategy == "push-down":
        main = statement(f"call ai_query and {mode} into the target", template)
        steps = PushDown(
            statements=(*((ensure,) if ensure else ()), main),
            inputs=statement("select the rows to send", "inputs.sql"),
            guards=_guards(renderer, context, job),
            keeps_answers=render_options.keep_answers,
        )
    else:
        write_sql = statement(f"{mode} the answers into the target", "write_results.sql")
        steps = RestFallback(
            ensure_target=ensure,
            inputs=statement("select the rows to send", "inputs.sql"),
            call=call,
            write=WriteRequest(
                table=job.output.table,
                key=job.source.key,
                mode=mode,
                staging_name=render_options.staged or "",
                write_sql=(write_sql.sql,),
            ),
            write_statements=(write_sql,),
            keep_only=statement("keep the rows the target holds for the selection", "keep_only.sql")
            if mode == "overwrite"
            else None,
        )
    summary = statement("summarise the target", "summary.sql")
    checks = Preflight(
        counts=statement("count the selected rows and repeated keys", "preflight.sql"),
        repeated_keys=statement("list repeated source keys", "repeated_keys.sql"),
        # Not incremental: nothing but the types is read, and no join on keys of two types.
        key_types=Statement(
            "read the key types",
            "key_types.sql",
            renderer.render(
                "key_types.sql", {**context, "incremental": False, "refresh_since": None}
            ),
        ),
    )
    return Plan(
        job,
        target,
        strategy,
        reason,
        steps,
        summary,
        fingerprint,
        options,
        checks,
    )


def _refresh_since(options: RunOptions) -> str | None:
    """When the full refresh this run continues began, as SQL timestamp text (with its offset:
    compared with `answered_at` in the warehouse's session time zone). Not when replacing the
    target: nothing of it is read."""
    if not options.full_refresh or options.replace_target or options.refresh_since is None:
        return None
    return utc_timestamp(options.refresh_since)


def scored_statements(plan: Plan, template_dirs: Iterable[Path] = ()) -> Scored:
    """The statements an evaluation of the plan's job reads its rows with. Rendered only when
    asked: a run never reads them."""
    try:
        return _scored(plan, template_dirs)
    except JobValueError as err:
        raise _in_job_file(plan.job, err) from None


def _scored(plan: Plan, template_dirs: Iterable[Path]) -> Scored:
    job = plan.job
    renderer = Renderer(job, template_dirs)
    dialect = engine_class(plan.target.engine).dialect
    options = RenderOptions(incremental=False, dialect=dialect)
    context = job_context(job, plan.call_fingerprint, options)

    def rows(purpose: str, latest_otherwise: bool) -> Statement:
        sql = renderer.render(
            "evaluated_rows.sql", {**context, "latest_otherwise": latest_otherwise}
        )
        return Statement(purpose, "evaluated_rows.sql", sql)

    return Scored(
        current=rows("read the answers to the current requests", False),
        current_or_latest=rows("read the answers to the current requests, else the last", True),
    )


def _guards(renderer: Renderer, context: dict[str, object], job: Job) -> Guards:
    """The checks a run makes before any call (`execution/selection.py`), as statements that
    fail with its message (`guards.sql`), for SQL run without agentbatch (`compile`). Not
    incremental: they read the selection (`fingerprinted`), never what is done."""
    checks = {
        **context,
        "incremental": False,
        "refresh_since": None,
        "oldest_first": False,
        "key_name": repr(job.source.key),
        "output_name": job.output.table,
    }

    def guard(purpose: str, reads: str) -> Statement:
        sql = renderer.render("guards.sql", {**checks, "guard": reads})
        return Statement(purpose, "guards.sql", sql)

    return Guards(
        source=guard("refuse repeated source keys before anything is created or paid", "source"),
        target=guard(
            "refuse a target the job cannot write by key before anything is paid", "target"
        ),
    )
