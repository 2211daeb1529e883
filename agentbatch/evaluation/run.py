"""The evaluation facade: run the job (or reuse its answers), run the judges, score, aggregate,
write the scores and metrics tables through the engine, and write the report.

`evaluate` scores one job; `compare` scores two variants on the same rows - the same job sent to
two endpoints, or two job files - and compares them. The CLI's `eval` and `compare` call these.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.agent.redact import safe_url
from agentbatch.errors import EngineError, UsageError
from agentbatch.evaluation.checks import check_evaluation
from agentbatch.evaluation.comparison import compare_scores
from agentbatch.evaluation.judge import judge_job, judge_table_name, run_judge
from agentbatch.evaluation.metrics import MetricOptions, compute_metrics
from agentbatch.evaluation.results import CompareResult, Coverage, EvalResult
from agentbatch.evaluation.scorers import JudgeReply
from agentbatch.evaluation.scoring import score_table
from agentbatch.evaluation.tables import (
    coverage,
    derived_table,
    evaluated_rows_sql,
    read_evaluated_rows,
    write_table,
)
from agentbatch.execution.preflight import check_local_source
from agentbatch.execution.runner import open_engine
from agentbatch.planning.definition import RunOptions
from agentbatch.planning.targets import Target
from agentbatch.spec.evaluation import Evaluation, LlmJudge
from agentbatch.spec.models import Agent, Job, Output
from agentbatch.spec.project import template_dirs
from agentbatch.spec.variables import check_given
from agentbatch.sql import quoting

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.engines.base import Engine
    from agentbatch.planning.definition import Plan
    from agentbatch.planning.targets import Target

log = logging.getLogger(__name__)

_VARIANT = re.compile(r"^[a-z][a-z0-9_]{0,29}$")


@dataclass(frozen=True)
class _Context:
    target: Target
    options: RunOptions  # the caller's, with the project folder resolved
    skip_run: bool
    # Tables some step of this evaluation writes: a `--table` mapping for one of them is an
    # output of that step only, never an input another step must find on disk.
    written: frozenset[tuple[str, ...]] = frozenset()

    def mapped(self, *keep: str) -> dict[str, Any]:
        """The `--table` mappings for one step: plain inputs, and `keep` (its inputs/outputs)."""
        kept = {_canonical(name) for name in keep}
        return {
            name: source
            for name, source in self.options.tables.items()
            if _canonical(name) not in self.written or _canonical(name) in kept
        }


@dataclass(frozen=True)
class _Tables:
    """The tables one variant reads and writes."""

    answers: str
    scores: str
    metrics: str
    judges: Mapping[str, str]

    def names(self) -> list[str]:
        return [self.answers, self.scores, self.metrics, *self.judges.values()]


def _tables_of(job: Job, variant: str) -> _Tables:
    evaluation = job.evaluation
    assert evaluation is not None  # checked when the job was prepared
    answers = job.output.table
    judges = {
        entry.name: judge_table_name(answers, entry.name, entry.options, variant)
        for entry in evaluation.scorers
        if isinstance(entry.options, LlmJudge)
    }
    return _Tables(
        answers=answers,
        scores=evaluation.scores_table or derived_table(answers, "_scores"),
        metrics=evaluation.metrics_table or derived_table(answers, "_metrics"),
        judges=judges,
    )


@dataclass(frozen=True)
class _TablesOf:
    """A variant's job, for naming the tables it reads and writes in a refusal."""

    job: Job
    variant: str
    file: str | Path | None
    suffixed: bool = False  # its output and named tables carry `_<variant>`


@dataclass(frozen=True)
class _Named:
    name: str
    what: str  # the spec key (or how the name is derived from one)
    where: str  # `file:line`, or the job's name


def _refuse_collisions(
    variants: list[_TablesOf], comparison: tuple[str, str | Path | None, Job] | None = None
) -> None:
    """Refuse, before anything is sent, tables of an evaluation that are one table: two it
    writes (the output, scores, metrics, judge and comparison tables), or one it writes and a
    source it reads. One would replace the other (paid answers replaced by scores, scores by
    metrics, a variant's answers by the comparison)."""
    from agentbatch.evaluation.checks import _Locator

    written: list[_Named] = []
    read: list[_Named] = []
    for entry in variants:
        job, evaluation = entry.job, entry.job.evaluation
        assert evaluation is not None
        at = _Locator(job, entry.file).at
        of = f"variant {entry.variant}'s " if entry.variant else ""
        suffix = f" + _{entry.variant}" if entry.suffixed else ""
        output = at(("output", "table"))
        tables = _tables_of(job, entry.variant)
        written.append(_Named(tables.answers, f"{of}output.table{suffix}", output))
        for attribute in ("scores_table", "metrics_table"):
            name = getattr(tables, attribute.removesuffix("_table"))
            if getattr(evaluation, attribute) is not None:
                what = f"{of}evaluation.{attribute}{suffix}"
                written.append(_Named(name, what, at(("evaluation", attribute))))
            else:
                kind = attribute.removesuffix("_table")
                what = f"{of}{kind} table (output.table{suffix} + _{kind})"
                written.append(_Named(name, what, output))
        for number, scorer in enumerate(evaluation.scorers):
            options = scorer.options
            if not isinstance(options, LlmJudge):
                continue
            name = tables.judges[scorer.name]
            if options.table is not None:
                path = ("evaluation", "scorers", number, scorer.kind, "table")
                judged = f" + _{entry.variant}" if entry.variant else ""
                what = f"{of}evaluation.scorers[{number}].{scorer.kind}.table{judged}"
                written.append(_Named(name, what, at(path)))
            else:
                what = f"{of}judge table (output.table{suffix} + _judge_{scorer.name})"
                written.append(_Named(name, what, output))
        source = job.source
        if source.table is not None:
            read.append(_Named(source.table, f"{of}source.table", at(("source", "table"))))
        for name in _query_tables(source.query):
            what = f"{of}source.query (reads {name})"
            read.append(_Named(name, what, at(("source", "query"))))
    if comparison is not None:
        name, file, job = comparison
        where = _Locator(job, file).at(("output", "table"))
        written.append(_Named(name, "the comparison table (output.table + _comparison)", where))
    problems: list[str] = []
    seen: dict[tuple[str, ...], _Named] = {}
    for table in written:
        first = seen.setdefault(_canonical(table.name), table)
        if first is not table and first != table:
            problems.append(_collision(table, first, "write one over the other"))
    sources = {_canonical(t.name): t for t in read}
    for table in written:
        if _canonical(table.name) in sources:
            reads = sources[_canonical(table.name)]
            problems.append(_collision(table, reads, "replace a table it reads"))
    if problems:
        raise UsageError("\n".join(dict.fromkeys(problems)))


def _collision(table: _Named, other: _Named, harm: str) -> str:
    return (
        f"{table.where}: {table.what} is {table.name}, as is {other.what} ({other.where}): "
        f"the evaluation would {harm}; name another table"
    )


def _query_tables(query: str | None) -> list[str]:
    """The tables a source query reads (not its own CTEs); none when it does not parse."""
    from sqlglot import exp

    from agentbatch.sql import parsing

    try:
        tree = parsing.statements(query or "")
    except Exception:  # the run reports a query that does not parse
        return []
    names: list[str] = []
    for statement in tree:
        ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
        for table in statement.find_all(exp.Table):
            if table.name and table.name.lower() not in ctes:
                names.append(".".join(part.name for part in table.parts))
    return names


def _canonical(name: str) -> tuple[str, ...]:
    try:
        return tuple(part.lower() for part in quoting.table_parts(name))
    except quoting.SqlValueError:
        return (name.lower(),)


def evaluate(
    job_or_path: Job | str | Path,
    target: str | Target = "local",
    *,
    skip_run: bool = False,
    report_dir: str | Path | None = None,
    mlflow: bool | None = None,
    experiment: str | None = None,
    options: RunOptions | None = None,
    **run_options: Any,
) -> EvalResult:
    """Run an evaluation job and score it: for each key of the current selection, its answer to
    the current request, with the current source's expected values. `skip_run` sends nothing: it
    scores the answers to the current request the output already holds (a key holding only
    answers to another request is counted in `EvalResult.coverage`, never scored).

    `run_options` are the fields of `RunOptions` (`vars`, `tables`, `endpoints`, `limit`, ...).
    `mlflow`: None logs when mlflow is installed and a tracking URI is set; True requires it.
    """
    run = RunOptions.of(options, **run_options)
    context, job = _prepare(job_or_path, target, run, skip_run)
    check_evaluation(job, _file_of(job_or_path))
    _refuse_collisions([_TablesOf(job, "", _file_of(job_or_path))])
    written = {_canonical(name) for name in _tables_of(job, "").names()}
    context = replace(context, written=frozenset(written))
    # --skip-run reads the source too: it decides the rows scored and their expected values.
    _check_source(job, context, _origin(job_or_path))
    _check_before_writing([job], context, [_tables_of(job, "")])
    # The scores and metrics an earlier eval left describe its answers: they are dropped before
    # this eval writes anything (its run, once its checks passed; with --skip-run, its first
    # judge, or its own write), and written again at the end, the metrics last. An eval that
    # fails partway leaves none beside the tables it changed; one refused before writing (a dead
    # agent, its budget, --skip-run without current answers) leaves them as they were.
    derived = _tables_of(job, "")
    drop_stale = _DropOnce(job, context, [derived.scores, derived.metrics], "eval")
    answered = _answer_variant(job, "", context, drop_stale)
    result = _score_variant(answered, context, drop_stale)
    drop_stale()
    _write_tables(job, context, _scored_tables(result))
    if report_dir is not None:
        from agentbatch.evaluation.report.files import write_eval_report

        result.report_files = write_eval_report(result, Path(report_dir))
    result.mlflow_run_id = _log_mlflow(result, mlflow, experiment or _experiment(job))
    return result


def compare(
    job_a: Job | str | Path,
    job_b: Job | str | Path | None = None,
    target: str | Target = "local",
    *,
    endpoint_a: str | None = None,
    endpoint_b: str | None = None,
    variant_a: str = "a",
    variant_b: str = "b",
    skip_run: bool = False,
    top: int = 10,
    report_dir: str | Path | None = None,
    mlflow: bool | None = None,
    experiment: str | None = None,
    options: RunOptions | None = None,
    **run_options: Any,
) -> CompareResult:
    """Score two variants on the same rows and compare them (B against A).

    One job with `endpoint_a` / `endpoint_b`: the job is sent to both endpoints (A defaults to the
    job's own), each variant writing `<output>_<variant>`. Two jobs: each runs as written (their
    outputs are suffixed with the variant only if both write the same table); the scorers of
    job A score both.

    The comparison table is written last; an earlier compare's is dropped before this one
    writes anything, so a compare that fails leaves none beside the variant tables it changed.
    """
    for variant in (variant_a, variant_b):
        if not _VARIANT.match(variant):
            raise UsageError(f"variant name {variant!r}: use lowercase letters, digits and _")
    if variant_a == variant_b:
        raise UsageError("the two variants need different names")
    if job_b is None and endpoint_b is None:
        raise UsageError("compare needs a second job or --endpoint-b")
    run = RunOptions.of(options, **run_options)
    context, first = _prepare(job_a, target, run, skip_run, alone=job_b is None)
    second = first
    if job_b is not None:
        context_b, second = _prepare(job_b, target, run, skip_run, alone=False)
        roots = {c.options.project_dir for c in (context, context_b) if c.options.project_dir}
        check_given([first, second], [d for root in roots for d in template_dirs(Path(root))])
    evaluation = check_evaluation(first, _file_of(job_a))
    if job_b is not None:
        second = second.model_copy(update={"evaluation": evaluation})
        if second.source.key.lower() != first.source.key.lower():
            raise UsageError(
                f"the jobs have different keys ({first.source.key}, {second.source.key})"
            )
        check_evaluation(second, None)
    same_output = job_b is None or first.output.table == second.output.table
    variants = []
    for job, endpoint, variant in ((first, endpoint_a, variant_a), (second, endpoint_b, variant_b)):
        variants.append(_variant_job(job, evaluation, endpoint, variant if same_output else ""))
    comparison_table = derived_table(first.output.table, "_comparison")
    _refuse_collisions(
        [
            _TablesOf(variants[0], variant_a, _file_of(job_a), suffixed=same_output),
            _TablesOf(variants[1], variant_b, _file_of(job_b or job_a), suffixed=same_output),
        ],
        comparison=(comparison_table, _file_of(job_a), first),
    )
    written = {_canonical(comparison_table)}
    for job, variant in zip(variants, (variant_a, variant_b), strict=True):
        written |= {_canonical(name) for name in _tables_of(job, variant).names()}
    context = replace(context, written=frozenset(written))
    # Both jobs checked before either is paid for (or, skipping the runs, read).
    _check_source(variants[0], context, _origin(job_a))
    _check_source(variants[1], context, _origin(job_b or job_a))
    # Both variants' runs, their judges and every table this compare writes, checked before
    # either variant is paid for: a compare refused by B's agent or budget left A paid for
    # and the earlier comparison dropped.
    _check_before_writing(
        variants,
        context,
        [
            _tables_of(job, variant)
            for job, variant in zip(variants, (variant_a, variant_b), strict=True)
        ],
        also=[comparison_table],
    )
    # An earlier compare's comparison, and its variants' scores and metrics, are dropped before
    # this one writes any table (the first variant run whose checks passed; with --skip-run, the
    # first judge, or the final write): they describe other answers than those written beside
    # them from then on. This one's are written last, the comparison after every variant table:
    # a compare that fails leaves none of them, never one that disagrees with the answers beside
    # it; one refused before writing leaves them as they were.
    stale = [comparison_table]
    for job, variant in zip(variants, (variant_a, variant_b), strict=True):
        stale += [_tables_of(job, variant).scores, _tables_of(job, variant).metrics]
    drop_stale = _DropOnce(variants[0], context, stale, "compare")
    # Nothing is written until both variants are scored and compared: a variant refused (no
    # answer to its current request) or rows that do not pair leave no scores, metrics or
    # comparison behind that could be read as this comparison's result. Both variants' answers
    # are read (and checked) before either's judges are paid.
    answered = [
        _answer_variant(job, variant, context, drop_stale)
        for job, variant in zip(variants, (variant_a, variant_b), strict=True)
    ]
    result_a, result_b = (_score_variant(each, context, drop_stale) for each in answered)
    comparison = compare_scores(
        result_a.scored,
        result_b.scored,
        variant_a=variant_a,
        variant_b=variant_b,
        options=_metric_options(evaluation),
        top=top,
    )
    drop_stale()
    # One engine writes them all, the comparison last.
    _write_tables(
        variants[0],
        context,
        {
            **_scored_tables(result_a),
            **_scored_tables(result_b),
            comparison_table: (comparison.summary, "scorer"),
        },
    )
    result = CompareResult(result_a, result_b, comparison, comparison_table)
    if report_dir is not None:
        from agentbatch.evaluation.report.files import write_compare_report

        result.report_files = write_compare_report(result, Path(report_dir))
    result.mlflow_run_id = _log_mlflow(result, mlflow, experiment or _experiment(first))
    return result


def _prepare(
    job_or_path: Job | str | Path,
    target: str | Target,
    options: RunOptions,
    skip_run: bool,
    *,
    alone: bool = True,
) -> tuple[_Context, Job]:
    from agentbatch.execution.runner import target_of
    from agentbatch.spec.project import project_dir_of, resolve_job

    root = project_dir_of(job_or_path, options.project_dir)
    job = resolve_job(job_or_path, options.vars, root, alone=alone)
    options = replace(options, project_dir=root, vars={})  # applied to the job once, here
    return _Context(target_of(target, options, root), options, skip_run), job


def _origin(job_or_path: Job | str | Path) -> str:
    file = _file_of(job_or_path)
    return "" if file is None else str(file)


def _file_of(job_or_path: Job | str | Path) -> str | Path | None:
    return None if isinstance(job_or_path, Job) else job_or_path


def _variant_job(job: Job, evaluation: Evaluation, endpoint: str | None, suffix: str) -> Job:
    """The job a variant runs: its endpoint swapped, its output suffixed, scored by `evaluation`."""
    agent = job.agent
    if endpoint is not None:
        agent = Agent.model_validate({**job.agent.model_dump(), "endpoint": endpoint})
    output = job.output
    if suffix:
        output = Output(table=derived_table(job.output.table, f"_{suffix}"), mode=job.output.mode)
    update = dict(
        scores_table=derived_table(evaluation.scores_table, f"_{suffix}")
        if suffix and evaluation.scores_table
        else evaluation.scores_table,
        metrics_table=derived_table(evaluation.metrics_table, f"_{suffix}")
        if suffix and evaluation.metrics_table
        else evaluation.metrics_table,
    )
    scored_by = evaluation.model_copy(update=update)
    return job.model_copy(update={"agent": agent, "output": output, "evaluation": scored_by})


@dataclass(frozen=True)
class _Answered:
    """A variant's answers to score, read (and checked) before anything is judged or written."""

    job: Job  # the variant's job, with fail_on_error off
    variant: str
    tables: _Tables
    rows: pa.Table
    summary: dict[str, Any] | None
    rows_sql: str
    coverage: Coverage
    answers_kept: bool


def _answer_variant(job: Job, variant: str, context: _Context, drop: _DropOnce) -> _Answered:
    # Errors are what an evaluation measures: they are scored, never fatal here.
    job = job.model_copy(update={"agent": job.agent.model_copy(update={"fail_on_error": False})})
    rows, summary, rows_sql, covered, kept = _answers(job, context, drop)
    return _Answered(job, variant, _tables_of(job, variant), rows, summary, rows_sql, covered, kept)


def _score_variant(answered: _Answered, context: _Context, drop: _DropOnce) -> EvalResult:
    """Judge (when there are rows to judge) and score a variant's answers; nothing is written
    but the judges' tables (once `drop` dropped what it drops)."""
    job, tables = answered.job, answered.tables
    evaluation = job.evaluation
    assert evaluation is not None  # checked by _prepare
    replies = {
        name: _judge(job, name, table, answered.rows_sql, context, drop)
        for name, table in tables.judges.items()
        if answered.rows.num_rows  # no row to score, none to judge (and maybe no answers table)
    }
    scored = score_table(answered.rows, job, judge_replies=replies)
    endpoint = _display_endpoint(job.agent.endpoint, context.options.endpoints)
    when = datetime.now(timezone.utc)
    metrics = compute_metrics(
        scored,
        _metric_options(evaluation),
        variant=answered.variant,
        job=job.name,
        endpoint=endpoint,
        evaluated_at=when,
    )
    return EvalResult(
        job=job,
        variant=answered.variant,
        endpoint=endpoint,
        scored=scored,
        metrics=metrics,
        answers_table=tables.answers,
        scores_table=tables.scores,
        metrics_table=tables.metrics,
        judge_tables=dict(tables.judges),
        run_summary=answered.summary,
        coverage=answered.coverage,
        answers_kept=answered.answers_kept,
        target=_target_name(context.target),
        evaluated_at=when,
    )


def _scored_tables(result: EvalResult) -> dict[str, tuple[pa.Table, str]]:
    return {
        result.scores_table: (result.scored.table, result.scored.key),
        result.metrics_table: (result.metrics, "scorer"),
    }


class _ChecksPassed(Exception):
    """Raised by a rehearsed run once its checks passed: it stops before writing anything."""


def _stop_before_writing(engine: Engine) -> None:
    raise _ChecksPassed


def _check_before_writing(
    jobs: list[Job], context: _Context, tables: list[_Tables], also: Sequence[str] = ()
) -> None:
    """Everything that can refuse the whole evaluation, found before an earlier one's tables are
    dropped or any call is paid for: each job's run as it will run (agent reachable, selection,
    budget: its checks, stopped where it would first write), every table it writes writable (an
    engine opened with them all as outputs, closed having written nothing), and every judge's
    URL alive (one probe each, no paid call)."""
    from agentbatch.agent.probe import probe_call
    from agentbatch.execution import runner
    from agentbatch.planning.builder import call_spec

    outputs = list(dict.fromkeys([*(n for t in tables for n in t.names()), *also]))
    # Skipping the runs, one engine checks the tables it writes; else each run's does.
    for job in jobs[:1] if context.skip_run else jobs:
        options = context.options.started()
        the_plan = runner.plan(job, context.target, options)
        engine = open_engine(the_plan, options.tables, outputs)
        if context.skip_run:
            engine.close()
            continue
        try:
            result = runner.run_plan(the_plan, engine, before_writing=_stop_before_writing)
        except _ChecksPassed:
            continue  # the run closed its engine
        if result.engine is not None:  # pragma: no cover - only a dry run returns here
            result.engine.close()
    probed: set[str] = set()
    for job, of in zip(jobs, tables, strict=True):
        evaluation = job.evaluation
        assert evaluation is not None
        for entry in evaluation.scorers:
            options_ = entry.options
            if not isinstance(options_, LlmJudge) or options_.endpoint in probed:
                continue
            probed.add(options_.endpoint)
            judging = judge_job(
                job,
                entry.name,
                options_,
                answers_table=of.answers,
                judge_table=of.judges[entry.name],
                expected=evaluation.expected,
            )
            probe_call(call_spec(judging), context.options.endpoints)


def _check_source(job: Job, context: _Context, origin: str) -> None:
    """As `run` checks before sending: an unmapped source or a misspelt column is a usage error
    (exit 2) naming the file's line (`origin`), found before any job is paid for."""
    from agentbatch.execution import runner

    options = replace(context.options, tables=context.mapped(job.output.table))
    check_local_source(runner.plan(job, context.target, options), origin=origin)


def _answers(
    job: Job, context: _Context, drop: _DropOnce
) -> tuple[pa.Table, dict[str, Any] | None, str, Coverage, bool]:
    """Run the job (unless skipped) and read the rows it scores: for each key of the current
    selection, the output row with the current request fingerprint, with the current source
    columns (`evaluated_rows.sql`). Also the query that reads them (the judges read the same
    rows), how many selected keys are not scored, and whether the output table exists (a local
    run over a source with its header only keeps none)."""
    from agentbatch.execution import runner

    answers_table = job.output.table
    summary: dict[str, Any] | None = None
    if context.skip_run:  # reads the answers only: the stale tables are no input of it
        options = replace(context.options, tables=context.mapped(answers_table))
        the_plan = runner.plan(job, context.target, options)
        engine = open_engine(the_plan, options.tables, [])
    else:
        stale = drop.pending
        options = replace(context.options, tables=context.mapped(answers_table, *stale))
        run = runner.run(job, context.target, options, before_writing=drop, also_writes=stale)
        if run.engine is None:  # pragma: no cover - only dry runs have no engine
            raise EngineError("the run returned no engine to read the answers from")
        the_plan, engine, summary = run.plan, run.engine, run.summary
    try:
        kept = engine.table_exists(answers_table)
        if context.skip_run and not kept:
            raise UsageError(f"{answers_table} has no answers yet; run without --skip-run first")
        rows = read_evaluated_rows(engine, the_plan)
        if kept:
            covered = coverage(engine, the_plan, rows.num_rows)
        else:  # the run selected no row and kept no table: nothing answered
            selected = int((summary or {}).get("selected") or 0)
            covered = Coverage(selected=selected, scored=0, other_request=0)
    finally:
        engine.close()
    _check_coverage(answers_table, covered, context.skip_run)
    return rows, summary, evaluated_rows_sql(the_plan), covered, kept


def _check_coverage(table: str, covered: Coverage, skip_run: bool) -> None:
    """Say how many selected keys are not scored, or that no row is selected (nothing to score,
    as a run selecting none sends nothing); refuse to score none from earlier answers
    (`--skip-run` after the prompt, its parameters or the agent changed): an evaluation of
    another request's answers would misstate this job's."""
    if not covered.selected:
        log.warning("nothing to score: the job selects no row of its source")
        return
    if not covered.not_scored:
        return
    why = []
    if covered.other_request:
        why.append(
            f"{covered.other_request} hold only answers to another request (an edited prompt "
            "or parameters, or another agent: a run's --endpoint mapping is part of the request)"
        )
    if covered.unanswered:
        why.append(f"{covered.unanswered} have no answer (a run stopped or limited?)")
    detail = "; ".join(why)
    if skip_run and not covered.scored:
        raise UsageError(
            f"{table} holds no answer to the current request for any of the "
            f"{covered.selected} selected key(s): {detail}. Nothing was scored: run without "
            "--skip-run, or pass the --endpoint and --var values the run used"
        )
    log.warning(
        "%d of the %d selected key(s) are not scored, having no answer to the current request "
        "in %s: %s",
        covered.not_scored,
        covered.selected,
        table,
        detail,
    )


def _judge(
    job: Job,
    name: str,
    table: str,
    rows_sql: str,
    context: _Context,
    drop: _DropOnce,
) -> dict[Any, JudgeReply]:
    evaluation = job.evaluation
    assert evaluation is not None
    options = next(e.options for e in evaluation.scorers if e.name == name)
    assert isinstance(options, LlmJudge)
    judging = judge_job(
        job,
        name,
        options,
        answers_table=job.output.table,
        judge_table=table,
        expected=evaluation.expected,
        answers_sql=rows_sql,
    )
    # A judge answers every scored row: the run's --limit and --full-refresh are the job's.
    stale = drop.pending
    judge_options = replace(
        context.options,
        tables=context.mapped(job.output.table, table, *stale),
        limit=None,
        full_refresh=False,
    )
    return run_judge(judging, context.target, judge_options, drop, stale)


def _write_tables(job: Job, context: _Context, tables: Mapping[str, tuple[pa.Table, str]]) -> None:
    the_plan, engine = _engine_for(job, context, list(tables))
    with contextlib.closing(engine):
        for name, (data, key) in tables.items():
            write_table(engine, the_plan, name, data, key)
            log.info("wrote %d row(s) to %s", data.num_rows, name)


def _engine_for(job: Job, context: _Context, outputs: list[str]) -> tuple[Plan, Engine]:
    """An engine that writes `outputs` and reads nothing, with a run id of its own (engines that
    stage in real tables name them after it). Only `outputs` are mapped: a source with its
    header only would make the local engine drop the empty tables it creates."""
    from agentbatch.execution import runner

    written = {_canonical(name) for name in outputs}
    mapped = {n: s for n, s in context.options.tables.items() if _canonical(n) in written}
    options = replace(context.options, tables=mapped).started()
    the_plan = runner.plan(job, context.target, options)
    return the_plan, open_engine(the_plan, mapped, outputs)


class _DropOnce:
    """Drops the tables an earlier eval or compare (`step`) derived from its answers, the first
    time it is called: by the first run of this one whose checks passed, with that run's engine
    (which has `tables` among its outputs: a table mapped to a file goes with its file), or
    with an engine of its own before the final write."""

    def __init__(self, job: Job, context: _Context, tables: list[str], step: str) -> None:
        self._tables = list(tables)
        self._job, self._context, self._step = job, context, step
        self._done = False

    @property
    def pending(self) -> tuple[str, ...]:
        """The tables still to drop: outputs of the next run's engine, none once dropped."""
        return () if self._done else tuple(self._tables)

    def __call__(self, engine: Engine | None = None) -> None:
        if self._done:
            return
        if engine is not None:
            self._drop(engine)
        else:
            _, own = _engine_for(self._job, self._context, self._tables)
            with contextlib.closing(own):
                self._drop(own)
        self._done = True

    def _drop(self, engine: Engine) -> None:
        for table in self._tables:
            if engine.table_exists(table):
                engine.execute(f"DROP TABLE IF EXISTS {quoting.table(table)}")
                log.info(
                    "dropped %s of an earlier %s: it is written again at the end", table, self._step
                )


def _metric_options(evaluation: Evaluation) -> MetricOptions:
    return MetricOptions(
        confidence=evaluation.confidence,
        bootstrap_samples=evaluation.bootstrap_samples,
        seed=evaluation.seed,
    )


def _experiment(job: Job) -> str | None:
    return job.evaluation.mlflow_experiment if job.evaluation is not None else None


def _log_mlflow(
    result: EvalResult | CompareResult, mode: bool | None, experiment: str | None
) -> str | None:
    from agentbatch.evaluation.report.mlflow_log import log_to_mlflow

    return log_to_mlflow(result, mode=mode, experiment=experiment)


def _target_name(target: str | Target) -> str:
    return target if isinstance(target, str) else target.name


def _display_endpoint(endpoint: str, overrides: Mapping[str, str]) -> str:
    """The endpoint as a report may show it: URLs without credentials or query strings."""
    shown = safe_url(endpoint)
    if endpoint in overrides:
        shown += f" -> {safe_url(overrides[endpoint])}"
    return shown
