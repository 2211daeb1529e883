"""The facade: wires spec -> plan -> engine / agent -> sink. The CLI, the Python API and the
Databricks job entry point all call these functions, so every way in runs the same path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import itertools
import logging
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentbatch.agent.redact import safe_url
from agentbatch.engines.registry import engine_class
from agentbatch.errors import (
    AgentbatchError,
    ConfigError,
    EngineError,
    JobFailedError,
    Terminated,
    UsageError,
    attach_summary,
    run_summary,
)
from agentbatch.execution import termination
from agentbatch.execution.result import RunResult, table_figures
from agentbatch.execution.selection import check_passthrough, replacing_if_reshaped, selection_of
from agentbatch.planning.builder import build_plan
from agentbatch.planning.definition import Plan, PushDown, RestFallback, RunOptions
from agentbatch.planning.targets import Target, resolve_target
from agentbatch.results import REQUEST_COLUMN
from agentbatch.spec.models import Job
from agentbatch.spec.project import project_dir_of, resolve_job, template_dirs

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.agent.endpoints import ConfigFactory, Endpoint
    from agentbatch.agent.ledger import Ledger
    from agentbatch.engines.base import AnswerCopies, DistributedCalls, DistributedEngine, Engine
    from agentbatch.execution.budget import Budget

# Turns the rows to send into the rows sent (an estimate's sample); it may read the ledger.
RowSelector = Callable[[Iterable["pa.RecordBatch"], "Ledger"], Iterable["pa.RecordBatch"]]

log = logging.getLogger(__name__)

STATE_DIR = Path(".agentbatch") / "state"
WAREHOUSE_DIR = Path(".agentbatch") / "warehouse"


def default_state_dir(root: Path) -> Path:
    """The checkpoints' folder when no `state_dir` is given: the project's `.agentbatch/state`, and
    on Databricks compute the driver's local disk (as the bundle's wheel tasks keep it). There a
    notebook's project is a workspace folder: a FUSE mount that refuses a file over 256 MB written
    from a cluster, where SQLite's locking and random writes are not to be relied on."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return Path(tempfile.gettempdir()) / f"agentbatch-{_user_name()}" / "state"
    return root / STATE_DIR


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry: a container's bare uid
        return str(os.getuid())


def _nothing(engine: Engine) -> None:
    pass


def target_of(target: str | Target, options: RunOptions, root: Path) -> Target:
    """The target by name (or as given), with this run's settings and state folder folded in
    once, so every engine of the run sees the same ones."""
    chosen = target if isinstance(target, Target) else resolve_target(target, root)
    settings = dict(options.settings)
    if options.state_dir is not None:
        settings["state_dir"] = str(options.state_dir)
    return chosen.with_settings(**settings) if settings else chosen


def plan(
    job_or_path: Job | str | Path,
    target: str | Target = "local",
    options: RunOptions | None = None,
) -> Plan:
    """Build the plan for a job and target without running anything. The plan's options carry
    the project folder resolved."""
    options = options or RunOptions()
    root = project_dir_of(job_or_path, options.project_dir)
    options = dataclasses.replace(options, project_dir=root)
    job = resolve_job(job_or_path, options.vars, root)
    return build_plan(job, target_of(target, options, root), options, template_dirs(root))


def run(
    job_or_path: Job | str | Path,
    target: str | Target = "local",
    options: RunOptions | None = None,
    *,
    before_writing: Callable[[Engine], None] = _nothing,
    also_writes: Iterable[str] = (),
) -> RunResult:
    """Run one job on a target (`RunOptions` lists what a run may vary); `before_writing` and
    `also_writes` as `run_plan`'s."""
    the_plan = plan(job_or_path, target, (options or RunOptions()).started())
    return run_plan(the_plan, before_writing=before_writing, also_writes=also_writes)


def run_plan(
    the_plan: Plan,
    engine: Engine | None = None,
    *,
    before_writing: Callable[[Engine], None] = _nothing,
    also_writes: Iterable[str] = (),
    endpoint: Endpoint | None = None,
) -> RunResult:
    """Run a plan built for one execution (`RunOptions.started()`), on `engine` if given (one
    opened for the plan, which the run then owns; `endpoint`: `endpoint_before_opening`'s, taken
    before it was opened). `before_writing` is called with the engine
    once the run's checks passed (agent reachable, budget, selection), before it creates or
    writes anything: a run refused by them never calls it. `also_writes`: tables besides the
    output that it may change (their `--table` mappings are outputs of the engine opened here)."""
    if engine is None:
        endpoint = endpoint or endpoint_before_opening(the_plan)
        outputs = [the_plan.job.output.table, *also_writes]
        engine = open_engine(the_plan, the_plan.options.tables, outputs)
    try:
        if isinstance(the_plan.steps, PushDown):
            the_plan = where_ai_query_runs(the_plan, engine)
        the_plan = continued(the_plan)
        the_plan = replacing_if_reshaped(the_plan, engine)
    except BaseException:
        engine.close()
        raise
    if the_plan.options.dry_run:
        from agentbatch.execution.dryrun import dry_run as run_dry

        with contextlib.closing(engine):
            try:
                return run_dry(the_plan, engine)
            except EngineError as err:
                raise located_error(the_plan, engine, err) from None
    try:
        if isinstance(the_plan.steps, PushDown):
            summary = _run_push_down(
                the_plan, the_plan.steps, engine, before_writing=before_writing
            )
        else:
            summary = _run_fallback(
                the_plan, the_plan.steps, engine, before_writing=before_writing, endpoint=endpoint
            )
    except EngineError as err:
        located = located_error(the_plan, engine, err)
        engine.close()
        raise located from None
    except BaseException:
        engine.close()
        raise
    if the_plan.job.agent.fail_on_error:
        _fail_on_errors(the_plan, summary, engine)
    settle = getattr(engine, "settle", None)
    if settle is not None:
        settle()  # from now on it only reads the output, for the result
    return RunResult(plan=the_plan, summary=summary, engine=engine)


def located_error(the_plan: Plan, engine: Engine, err: EngineError) -> Exception:
    """`err`, raised by a run, dry run or estimate of the plan; a source value the job's SQL does
    not convert, named by the job file's key (the engines know statements, not jobs)."""
    from agentbatch.errors import SourceValueError
    from agentbatch.execution.value_errors import locate_value_error

    if not isinstance(err, SourceValueError):
        return err
    origin = the_plan.job._origin
    try:
        located = locate_value_error(the_plan.job, engine, err, origin.file if origin else "")
    except Exception:  # finding where is a courtesy: the run's own error stands
        return err
    attach_summary(located, run_summary(err))
    return located


def _fail_on_errors(the_plan: Plan, summary: dict[str, Any], engine: Engine) -> None:
    """agent.fail_on_error: the job fails while selected rows are failures, this run's or those
    the target holds from earlier runs (a scheduled retry that sends nothing must not pass; nor
    one limited to other rows, which leaves a transient failure it did not reach as it was)."""
    from agentbatch.execution.selection import failures_held

    now = int(summary.get("errors") or 0)
    before = int(summary.get("skipped_errors") or 0)
    held = failures_held(the_plan, engine)
    if held is not None:
        # The table after the write: this run's failures, and those it holds for the others.
        before = max(before, held - now)
    if not now + before:
        return
    message = (
        f"{now + before} selected row(s) failed ({now} this run, {before} held from earlier "
        "runs) and agent.fail_on_error is true; answered rows were written; --retry-errors "
        "sends the failures again"
    )
    engine.close()
    failed = JobFailedError(message)
    attach_summary(failed, {**summary, "failed": message.split(";")[0]})
    raise failed


def where_ai_query_runs(the_plan: Plan, engine: Engine) -> Plan:
    """The push-down plan, or the REST fallback's where the engine cannot run ai_query."""
    missing = engine.ai_query_missing()
    if missing is None:
        return the_plan
    log.warning(
        "%s: calling %s over REST from here", missing, safe_url(the_plan.job.agent.endpoint)
    )
    options = dataclasses.replace(the_plan.options, force_fallback=True)
    rest = build_plan(the_plan.job, the_plan.target, options, template_dirs(root_of(the_plan)))
    return dataclasses.replace(rest, reason=f"{missing}; the REST fallback calls the endpoint")


def _workspace_of(the_plan: Plan) -> ConfigFactory:
    """Where endpoints are looked up and with which credentials: the workspace the target names
    (its `host`, `profile`), the one whose tables the run reads and writes; else the
    environment's."""
    from agentbatch.agent.endpoints import default_config
    from agentbatch.engines.databricks_sql.connect import names_a_workspace, sdk_config

    settings = dict(the_plan.target.settings)
    if not names_a_workspace(settings):
        return default_config
    return lambda: sdk_config(settings)


def root_of(the_plan: Plan) -> Path:
    """The project folder the plan was built for."""
    return Path(the_plan.options.project_dir or Path.cwd())


def _check_tables(the_plan: Plan, tables: Mapping[str, Any]) -> None:
    if tables and the_plan.target.engine == "databricks-sql":
        raise UsageError(
            "--table maps tables to local files; it applies to the local and spark targets"
        )


def endpoint_before_opening(the_plan: Plan) -> Endpoint | None:
    """The REST fallback's endpoint, probed and resolved with its credentials before the engine
    opens: opening takes the output's lock (local: `.<name>.lock` beside the output, its folder
    made), so a run refused for a dead agent URL or missing workspace credentials leaves nothing
    on disk. None when the run resolves it later: a dry run (which calls nothing), a push-down
    plan (the engine decides whether it falls back), an engine whose workers call (spark: the
    driver may never resolve it)."""
    steps = the_plan.steps
    if (
        not isinstance(steps, RestFallback)
        or the_plan.options.dry_run
        or engine_class(the_plan.target.engine).distributed_calls
    ):
        return None
    from agentbatch.agent.bulk import resolve_call_endpoint
    from agentbatch.agent.probe import probe_call

    # A refusal of the run's own arguments comes first, as when the engine opened first.
    _check_tables(the_plan, the_plan.options.tables)
    probe_call(steps.call, the_plan.options.endpoints)
    return resolve_call_endpoint(
        steps.call, the_plan.options.endpoints, config_factory=_workspace_of(the_plan)
    )


def open_engine(the_plan: Plan, tables: Mapping[str, Any], outputs: Iterable[str]) -> Engine:
    """An engine for the plan's target that may write `outputs` (mapped files are saved back)."""
    root = root_of(the_plan)
    cls = engine_class(the_plan.target.engine)
    settings = dict(the_plan.target.settings)
    if the_plan.target.engine in ("local", "spark"):
        settings.setdefault("warehouse_dir", str(root / WAREHOUSE_DIR))
        settings.setdefault("state_dir", str(default_state_dir(root)))
    settings.setdefault("endpoint_overrides", dict(the_plan.options.endpoints))
    settings.setdefault("job_name", the_plan.job.name)
    settings.setdefault("run_id", the_plan.options.run_id)
    _check_tables(the_plan, tables)
    engine: Engine = cls(settings, tables=tables, output_tables=list(outputs))
    return engine


def prepare_selection(the_plan: Plan, engine: Engine) -> dict[str, int]:
    """Check and count the selection (`check_selection`), then create the target if missing."""
    counts = selection_of(the_plan, engine)[1]
    create_target(the_plan, engine)
    return counts


def create_target(the_plan: Plan, engine: Engine) -> None:
    """Create the target if missing: it decides what is done, and the run's statements read it.
    Only once the run's checks and budget let it go on: a refused run creates nothing."""
    ensure = (
        the_plan.steps.ensure_target
        if isinstance(the_plan.steps, RestFallback)
        else the_plan.steps.statements[0]
    )
    if ensure is not None:
        engine.execute(ensure.sql)


def _run_push_down(
    the_plan: Plan,
    steps: PushDown,
    engine: Engine,
    *,
    record: bool = True,
    before_writing: Callable[[Engine], None] = _nothing,
) -> dict[str, Any]:
    """Run the statements; `record`: a full refresh is recorded here (an estimate records the
    one its sample begins itself, and leaves it unfinished for the next run to continue)."""
    counts = selection_of(the_plan, engine)[1]
    budget = budget_for(the_plan)
    # One statement: the guard can only judge before it runs (rows exactly, tokens from the
    # last estimate); ai_query reports no usage per row.
    budget.check_before(rows_upper_bound(the_plan, counts))
    # A full refresh is recorded before any call, and ended once the statements ran (unless
    # rows kept their earlier answer: `_finish_refresh`).
    before_writing(engine)
    finished = RefreshRun(counts)
    with recorded(the_plan, finished) if record else contextlib.nullcontext():
        create_target(the_plan, engine)
        for statement in steps.statements[1:]:
            log.info("running: %s (%s)", statement.purpose, statement.template)
            engine.execute(statement.sql)
        if steps.keeps_answers:
            finished.kept = _kept_by_push_down(the_plan, engine, counts)
    return _summarise(the_plan, engine, {**counts, **_kept_figures(finished.kept)})


def _kept_by_push_down(the_plan: Plan, engine: Engine, counts: Mapping[str, int]) -> int:
    """After a push-down full refresh's write: its rows that kept their earlier answer. The
    statement called ai_query for every row it selected (`rows_upper_bound`, from the counts
    read before it) and wrote each, an answer or a failure, stamped with the statement's time,
    but those `_answers.sql` left out (a transient failure over a good answer to the same
    request): those are the selected rows not answered this run. Unknown (the target cannot be
    read): none, and the refresh ends as it did before the rule."""
    try:
        table = engine.fetch_one(the_plan.summary.sql)
    except AgentbatchError as err:
        log.warning("could not count the rows that kept their earlier answer: %s", err)
        return 0
    written = int((table or {}).get("answered_this_run") or 0)
    return max(rows_upper_bound(the_plan, counts) - written, 0)


def _run_fallback(
    the_plan: Plan,
    steps: RestFallback,
    engine: Engine,
    select: RowSelector | None = None,
    *,
    before_writing: Callable[[Engine], None] = _nothing,
    endpoint: Endpoint | None = None,
) -> dict[str, Any]:
    """The REST fallback's run; `endpoint`: `endpoint_before_opening`'s (probed and resolved
    already), else it is done here."""
    from agentbatch.agent.probe import probe_call

    # A dead agent URL stops the run here, in seconds, before anything is created or sent.
    if endpoint is None:
        probe_call(steps.call, the_plan.options.endpoints)
    selecting, counts = selection_of(the_plan, engine)
    check_passthrough(selecting, engine)
    budget = budget_for(the_plan)
    # Engines that call from their own workers (spark) run the whole fallback themselves, unless
    # those cannot reach the agent (spark on serverless): then it runs here, as everywhere else.
    if engine.distributed_calls and select is None:
        distributed = cast("DistributedEngine", engine)
        if distributed.calls_on_workers:
            # Workers answer on their own: the budget judges before sending only.
            budget.check_before(rows_upper_bound(the_plan, counts))
            before_writing(engine)
            create_target(the_plan, engine)
            # The ledger of runs on the driver is read beside the workers' checkpoint: a job
            # whose `rest_fallback_on` changed holds answers in both. A refresh is recorded
            # there too, as on every path (`_distributed_refresh`): one stopped on either side
            # is continued by the other.
            work = dataclasses.replace(
                steps.distributed(the_plan.options), ledger=ledger_path(the_plan)
            )
            refresh = the_plan.options.full_refresh
            state = _refresh_state(the_plan, create=True) if refresh else contextlib.nullcontext()
            with state as ledger:
                if refresh:
                    since = _distributed_refresh(ledger, distributed, work)
                    work = dataclasses.replace(work, refresh_since=since)
                spread = distributed.run_distributed(work)
                if ledger is not None:
                    kept = int(spread.get("kept_previous_answer") or 0)
                    _finish_refresh(the_plan, ledger, counts, kept)
                    distributed.record_refresh(work, ledger.pending_refresh())
            if not refresh:
                # Finished: a refresh the ledger records is over (a plain run gives it up), as
                # a run on the driver ends it.
                with _refresh_state(the_plan, create=False) as ledger:
                    if ledger is not None:
                        ledger.end_refresh()
            return _summarise(the_plan, engine, {**spread, **counts})

    from agentbatch.agent.bulk import resolve_call_endpoint, run_bulk_sync
    from agentbatch.agent.content import input_batch_rows
    from agentbatch.agent.ledger import Ledger
    from agentbatch.agent.progress import LogProgress, RichProgress
    from agentbatch.agent.stats import BulkStats

    # The endpoint and its credentials before anything is created: a run refused for want of
    # them (no workspace credentials) leaves no ledger and no empty target behind.
    if endpoint is None:
        endpoint = resolve_call_endpoint(
            steps.call, the_plan.options.endpoints, config_factory=_workspace_of(the_plan)
        )
    ledger = Ledger(
        ledger_path(the_plan),
        key=the_plan.job.source.key,
        run_id=the_plan.options.run_id,
    )
    copies: AnswerCopies | None = None
    workers: tuple[DistributedEngine, DistributedCalls] | None = None
    try:
        if engine.distributed_calls and isinstance(selecting.steps, RestFallback):
            # Answers the engine's workers received in runs with the calls there (their own
            # checkpoint) are reused here too, and never hidden by an older one of the ledger.
            distributed = cast("DistributedEngine", engine)
            work = selecting.steps.distributed(the_plan.options)
            distributed.share_answers(work, ledger)
            # And this run's answers are copied there as they arrive when it outlives the
            # ledger's disk (serverless: a killed task's next run is another machine).
            copies = distributed.copy_answers(work, the_plan.options.run_id)
            if copies is not None:
                ledger.copy_rows = copies.add
            workers = (distributed, work)
        if the_plan.options.full_refresh:
            # A refresh pays for every row again, once: answers a stopped run of the same
            # refresh received are its own, and reused (on a new disk, where the ledger
            # records none, the workers' checkpoint may).
            ledger.answered_since = (
                ledger.pending_refresh()
                or (workers[0].refresh_began(workers[1]) if workers else None)
                or time.time_ns() // 1000
            )
        stats: dict[str, Any] = {}
        so_far = BulkStats()
        if select is None:
            _check_budget(the_plan, selecting, engine, ledger, budget, counts)
        before_writing(engine)
        if ledger.answered_since is not None:
            # An estimate's sample is kept for the next run: it starts the refresh it samples.
            ledger.begin_refresh(ledger.answered_since)
            if workers is not None:
                workers[0].record_refresh(workers[1], ledger.answered_since)
        create_target(the_plan, engine)
        # An estimate too: it writes the answers of its sample, for the run to reuse.
        engine.check_can_write(the_plan.job.output.table)
        inputs = engine.fetch_batches(
            steps.inputs.sql, batch_rows=input_batch_rows(steps.call.files)
        )
        try:
            batches: Iterable[pa.RecordBatch] = inputs
            total = rows_upper_bound(the_plan, counts)
            if select is not None:
                batches = list(select(batches, ledger))
                total = sum(batch.num_rows for batch in batches)
            bulk = run_bulk_sync(
                batches,
                call=steps.call,
                key=the_plan.job.source.key,
                ledger=ledger,
                endpoint_overrides=the_plan.options.endpoints,
                config_factory=_workspace_of(the_plan),
                endpoint=endpoint,
                retry_errors=the_plan.options.retry_errors,
                progress=RichProgress() if the_plan.options.progress else LogProgress(),
                total_rows=total,
                # An estimate's sample is its own small bill: the run's budget is for runs.
                budget=budget if select is None else None,
                stats=so_far,
            )
            stats = bulk.as_dict()
        except BaseException as stop:
            # Whatever stopped the run (Ctrl-C, the endpoint gone, the input failing), what was
            # paid for goes into the target first: nothing answered is lost. The inputs' query
            # is closed first: an engine may run one statement at a time on its connection.
            _close(inputs)
            _stop_copying(copies)  # first: a kill during the write keeps them
            written, kept = _write_answers(the_plan, steps, engine, ledger)
            # `rows`: the rows answered before the stop, not those read from the input.
            answered = so_far.ok + so_far.errors
            if not (written or answered):
                raise  # the error alone says it (a bad URL, a refusal)
            log.warning(
                "stopped: wrote %d answered row(s); re-run%s to continue",
                written,
                " with --full-refresh" if the_plan.options.full_refresh else "",
            )
            if select is None:
                done = {**so_far.as_dict(), "rows_seen": answered, "rows_written": written}
                done.update(_kept_figures(kept))
                done.update(counts)
                attach_summary(stop, _stopped_summary(the_plan, engine, done, stop))
            raise
        wrote = False
        try:
            with termination.writing():  # a SIGTERM from here is raised once this is written
                _stop_copying(copies)
                written, kept = _write_answers(the_plan, steps, engine, ledger)
                wrote = True
        except Terminated as stop:
            if wrote and select is None:
                done = {**stats, "rows_written": written, **_kept_figures(kept), **counts}
                attach_summary(stop, _stopped_summary(the_plan, engine, done, stop))
            raise
        ledger.compact()
        if copies is not None:
            cast("DistributedEngine", engine).fold_copies(work, copies)
        if select is None:
            _finish_refresh(the_plan, ledger, counts, kept)
            if workers is not None:
                workers[0].record_refresh(workers[1], ledger.pending_refresh())
    finally:
        _stop_copying(copies)
        ledger.close()
    stats["rows_written"] = written
    stats.update(_kept_figures(kept))
    stats.update(spend_summary(budget, int(stats.get("sent") or 0)))
    return _summarise(the_plan, engine, {**stats, **counts})


def _stop_copying(copies: AnswerCopies | None) -> None:
    """The copies of a run's answers written out, before the write that may be killed."""
    if copies is not None:
        copies.close()


# --- a full refresh, continued from the target ------------------------------------------------
# ai_query keeps no checkpoint: the target is the record. A push-down `--full-refresh` is
# recorded where the REST fallback records it (the ledger's `refresh_since`) from when it begins
# until a run finishes. One that starts while a refresh is unfinished (killed, stopped, or begun
# by `estimate --full-refresh`), on either path, counts as done the rows the target holds for the
# current request answered since that refresh began (`answered_at`), and calls the agent for the
# others only: a REST run continuing a push-down refresh pays none of its answers again (the
# REST fallback also reuses what its checkpoint received since then, written or not).


# A refresh row whose new call fails transiently keeps the answer the target holds for its
# current request (`_answers_kept`): the refresh then stays unfinished for it. Once a refresh
# has asked every row, what is left of it is those rows only, and any run continues it, a plain
# one too (`refresh_reached`): the rows the target holds answered before it began are asked
# again. A run that finishes with none kept ends it.


def continued(the_plan: Plan) -> Plan:
    """The plan of a full refresh, continuing the unfinished one if there is one (as
    `RunOptions.refresh_since`); a plain run's plan continues one that has asked every row and
    left only rows that kept their earlier answer; any other plan as it is. Reads the ledger as
    a reader: takes no lock and changes nothing (`plan` calls it while a run may hold the
    ledger)."""
    options = the_plan.options
    if options.replace_target:
        return the_plan
    from agentbatch.agent.ledger import refresh_began, refresh_reached

    path = ledger_path(the_plan)
    if not options.full_refresh and not refresh_reached(path):
        return the_plan
    began = refresh_began(path)
    if began is None:
        return the_plan
    since = datetime.fromtimestamp(began / 1_000_000, timezone.utc)
    if not options.full_refresh:
        log.warning(
            "the full refresh begun %s left rows whose new call failed transiently with their "
            "earlier answer: this run asks them again",
            since.isoformat(timespec="seconds"),
        )
    options = dataclasses.replace(options, full_refresh=True, refresh_since=since)
    return build_plan(the_plan.job, the_plan.target, options, template_dirs(root_of(the_plan)))


def _distributed_refresh(
    ledger: Ledger | None, engine: DistributedEngine, work: DistributedCalls
) -> int:
    """A refresh on an engine's workers: when it began (microseconds), the unfinished one the
    ledger records (begun on the driver, on the workers or by a push-down run), else the one
    the workers' checkpoint records (a new disk), else now, recorded in both before any call.
    The ledger stays open (locked) while the workers run, as around a push-down refresh's
    statements: one run of the output at a time."""
    since = ledger.pending_refresh() if ledger is not None else None
    if since is None:
        since = engine.refresh_began(work)
    if since is None:
        since = time.time_ns() // 1000
    if ledger is not None:
        ledger.begin_refresh(since)
    engine.record_refresh(work, since)
    return since


def _finish_refresh(the_plan: Plan, ledger: Ledger, counts: Mapping[str, int], kept: int) -> None:
    """A run finished (REST, or push-down through its built-in templates: `recorded`): it ends
    any refresh (a plain run gives an unfinished one up),
    unless rows of the refresh kept their earlier answer (`kept`), or are left of a refresh that
    asked every row and this run, limited, did not reach them all."""
    limit = the_plan.options.limit
    left = int(counts.get("selected", 0)) - int(counts.get("skipped", 0))
    whole = limit is None or left <= limit
    if the_plan.options.full_refresh and (kept or (not whole and ledger.refresh_reached())):
        ledger.keep_refresh(reached=whole)
        if kept:
            log.warning(
                "%d row(s) kept their earlier answer: their new call failed transiently; the "
                "full refresh stays unfinished, and the next run asks them again",
                kept,
            )
        return
    ledger.end_refresh()  # finished: nothing left to continue (a plain run gives it up)


def _kept_figures(kept: int) -> dict[str, int]:
    """The summary's count of refresh rows that kept their earlier answer (when there are)."""
    return {"kept_previous_answer": kept} if kept else {}


@dataclasses.dataclass
class RefreshRun:
    """What a push-down run's statements leave for `recorded` to finish the refresh with: the
    selection's counts (read before them) and the rows that kept their earlier answer."""

    counts: Mapping[str, int]
    kept: int = 0


@contextlib.contextmanager
def recorded(
    the_plan: Plan, finished: RefreshRun | None = None, *, finishing: bool = True
) -> Iterator[None]:
    """Around a push-down run's statements: a full refresh is recorded as begun (an unfinished
    one kept) before any call; a run that gets through them ends any refresh (`finishing`; an
    estimate's sample does not: the refresh it began goes on), unless rows kept their earlier
    answer (`finished`, as the REST fallback's `_finish_refresh`). The ledger stays locked
    meanwhile, as a REST run holds it: one run of the output at a time."""
    refresh = _push_down_refresh(the_plan)
    with _refresh_state(the_plan, create=refresh) as ledger:
        if ledger is None:  # no state: no refresh to begin or to end
            yield
            return
        if refresh:
            began = the_plan.options.refresh_since or the_plan.options.started_at
            ledger.begin_refresh(_microseconds(began))
        yield
        if finishing:
            done = finished or RefreshRun({})
            _finish_refresh(the_plan, ledger, done.counts, done.kept)


def _push_down_refresh(the_plan: Plan) -> bool:
    options = the_plan.options
    return (
        isinstance(the_plan.steps, PushDown) and options.full_refresh and not options.replace_target
    )


@contextlib.contextmanager
def _refresh_state(the_plan: Plan, *, create: bool) -> Iterator[Ledger | None]:
    """The job output's ledger; None when it has none and `create` is false."""
    from agentbatch.agent.ledger import Ledger

    path = ledger_path(the_plan)
    if not create and not path.exists():
        yield None
        return
    ledger: Ledger | None = None
    try:
        ledger = Ledger(path, key=the_plan.job.source.key, run_id=the_plan.options.run_id)
    except (OSError, sqlite3.Error, ConfigError) as err:  # ConfigError: a folder it cannot make
        # A push-down run needs no state otherwise: it goes on, only not continuable.
        log.warning(
            "%s: cannot record the full refresh (%s); a stopped one is paid again", path, err
        )
    try:
        yield ledger
    finally:
        if ledger is not None:
            ledger.close()


def _microseconds(moment: datetime) -> int:
    """A moment as the ledger keeps `refresh_since`: microseconds since the epoch."""
    delta = moment.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _stopped_summary(
    the_plan: Plan, engine: Engine, stats: dict[str, Any], stop: BaseException
) -> dict[str, Any] | None:
    """The summary of a run that stopped early, once its answers are written (None when the
    target cannot be read). Its spend is shown as a finished run's is: the guard went with the
    error, so its price and estimate are read again, and the tokens are the written answers'."""
    try:
        spent = spend_summary(budget_for(the_plan), int(stats.get("sent") or 0), stats)
        summary = _summarise(the_plan, engine, {**stats, **spent})
    except AgentbatchError:
        return None
    summary["stopped"] = str(stop).splitlines()[0] if str(stop) else type(stop).__name__
    return summary


def _close(batches: Iterable[Any]) -> None:
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def budget_for(the_plan: Plan) -> Budget:
    """The run's guard: limits of the job and target, the endpoint's price, and the per-row
    figures of the last estimate of this very call (same fingerprint), if any."""
    from agentbatch.errors import ConfigError
    from agentbatch.execution.budget import Budget, limits_of, load_per_row, price_of

    limits = limits_of(the_plan.job, the_plan.target.settings)
    price = price_of(the_plan.job, root_of(the_plan))
    if limits.max_cost is not None and price is None:
        # A guard that cannot judge must not look like one.
        raise ConfigError(
            f"max_cost needs a price for endpoint {safe_url(the_plan.job.agent.endpoint)!r}: declare "
            "agent.price in the job, or prices: in agentbatch.yml (per million input and output "
            "tokens)"
        )
    return Budget(
        limits,
        price,
        load_per_row(estimate_path(the_plan), the_plan.call_fingerprint),
    )


def rows_upper_bound(the_plan: Plan, counts: Mapping[str, int]) -> int:
    """The rows a run may send at most: the selection the target does not hold (and --limit)."""
    rows = max(int(counts["selected"]) - int(counts["skipped"]), 0)
    limit = the_plan.options.limit
    return min(rows, limit) if limit is not None else rows


def rows_to_send(
    the_plan: Plan, steps: RestFallback, engine: Engine, ledger: Ledger
) -> tuple[int, int]:
    """(rows the run would send, rows it would reuse from the ledger), reading the inputs and
    looking them up without recording anything. A NULL request is never sent (it is answered
    with its row error), so it is neither."""
    from agentbatch.agent.content import input_batch_rows

    send = reuse = 0
    for batch in engine.fetch_batches(
        steps.inputs.sql, batch_rows=input_batch_rows(steps.call.files)
    ):
        found = ledger.reusable(batch, retry_errors=the_plan.options.retry_errors)
        unsent = batch.column(REQUEST_COLUMN).is_null().to_pylist()
        reuse += sum(found)
        send += sum(not (reused or null) for reused, null in zip(found, unsent, strict=True))
    return send, reuse


def _check_budget(
    the_plan: Plan,
    selecting: Plan,
    engine: Engine,
    ledger: Ledger,
    budget: Budget,
    counts: Mapping[str, int],
) -> None:
    """Before sending: a run whose estimate passes its budget sends nothing. The selection is
    an upper bound; only when it would not fit are the rows the ledger can answer counted
    (selected by `selecting`, which reads no missing target)."""
    from agentbatch.errors import BudgetError

    upper = rows_upper_bound(the_plan, counts)
    try:
        budget.check_before(upper)
    except BudgetError:
        # Counted exactly: rows the ledger answers, and NULL requests, are not sent.
        assert isinstance(selecting.steps, RestFallback)
        budget.check_before(rows_to_send(the_plan, selecting.steps, engine, ledger)[0])


def spend_summary(
    budget: Budget, sent: int, used: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The cost of this run and, beside it, what the last estimate projected for its rows. The
    tokens are those the guard recorded, or the run's `used` (input_tokens, output_tokens)."""
    from agentbatch.execution.budget import cost_of

    out: dict[str, Any] = {}
    if budget.price is not None:
        cost = budget.cost
        if used is not None:
            tokens = (int(used.get("input_tokens") or 0), int(used.get("output_tokens") or 0))
            cost = cost_of(budget.price, *tokens)
        out["cost"] = round(cost or 0.0, 6)
    per_row = budget.per_row
    if per_row is not None:
        out["estimated_input_tokens"] = round(sent * per_row.input_tokens)
        out["estimated_output_tokens"] = round(sent * per_row.output_tokens)
        cost = cost_of(budget.price, sent * per_row.input_tokens, sent * per_row.output_tokens)
        if cost is not None:
            out["estimated_cost"] = round(cost, 6)
    return out


def _write_answers(
    the_plan: Plan, steps: RestFallback, engine: Engine, ledger: Any
) -> tuple[int, int]:
    """Hand this run's answers (called or reused) to the engine in one write: (rows written,
    rows of a full refresh that kept the answer the target holds: `_answers_kept`).

    An overwrite with no new answers still runs: the target becomes exactly the selection."""
    rows: Iterable[pa.RecordBatch] = ledger.rows_of_run()
    options = the_plan.options
    failed: set[tuple[str, str]] = set()
    keeping: set[tuple[str, str]] = set()
    if options.full_refresh and not options.replace_target:
        failed = ledger.transient_of_run()
    if failed:
        # Left out here for a project's own write template; the built-in ones also leave them
        # out in the write's statement (`_staged_rows.sql`), which sees a killed run's write
        # that lands after this read.
        keeping = _answers_kept(the_plan, engine, failed)
        if keeping:
            rows = _without(the_plan.job.source.key, rows, keeping)
    batches = iter(rows)
    first = next(batches, None)
    if first is None:
        if steps.keep_only is not None:
            engine.execute(steps.keep_only.sql)
        written = 0
    else:
        written = engine.write_results(
            steps.write, itertools.chain([first], batches), first.schema
        ).rows_written
    return written, _kept_after_writing(the_plan, engine, failed, keeping)


def _kept_after_writing(
    the_plan: Plan, engine: Engine, failed: set[tuple[str, str]], before: set[tuple[str, str]]
) -> int:
    """How many of a refresh's transient failures `failed` kept their earlier answer, counted
    from the target after the write: it decides the summary's figure and whether the refresh
    stays unfinished for those rows. Unknown (the target cannot be read): those left out before
    the write (`before`), the write having succeeded."""
    if not failed:
        return 0
    try:
        return len(_answers_kept(the_plan, engine, failed))
    except AgentbatchError as err:
        log.warning("could not count the rows that kept their earlier answer: %s", err)
        return len(before)


# Fingerprints looked up in one statement.
_KEPT_LOOKUP = 500


def _transient(batch: pa.RecordBatch) -> pa.Array:
    import pyarrow.compute as pc

    from agentbatch.results import TRANSIENT_ERROR

    return pc.fill_null(pc.starts_with(batch.column("error"), TRANSIENT_ERROR), False)


def _answers_kept(
    the_plan: Plan, engine: Engine, failed: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Of a full refresh's transient failures, (canonical key, fingerprint) each, those whose
    target row answers the same request (`request_fingerprint`) without an error: a paid, valid
    answer is not replaced by a failure the next run retries; the key keeps it, and the refresh
    stays unfinished for it. A permanent failure is the agent's answer now: it replaces it; so
    does a failure over a row that was one. The target decides (an engine runs one statement
    at a time): read before the write to leave them out, and after it to count them."""
    from agentbatch.agent.ledger import canonical_keys
    from agentbatch.sql import quoting

    answered: set[tuple[str, str]] = set()
    distinct = sorted({fp for _, fp in failed})
    key = quoting.identifier(the_plan.job.source.key)
    output = quoting.table(the_plan.job.output.table)
    for start in range(0, len(distinct), _KEPT_LOOKUP):
        listed = ", ".join(quoting.literal(fp) for fp in distinct[start : start + _KEPT_LOOKUP])
        sql = (
            f"SELECT {key}, `request_fingerprint` FROM {output} "
            f"WHERE `error` IS NULL AND `request_fingerprint` IN ({listed})"
        )
        for found in engine.fetch_batches(sql):
            answered.update(
                zip(canonical_keys(found.column(0)), found.column(1).to_pylist(), strict=True)
            )
    return failed & answered


def _without(
    key: str,
    batches: Iterable[pa.RecordBatch],
    keeping: set[tuple[str, str]],
) -> Iterator[pa.RecordBatch]:
    """`batches` without the transient failures of `keeping`: this run's latest row of each of
    those keys (one each, so `len(keeping)` rows are left out)."""
    import pyarrow as pa

    from agentbatch.agent.ledger import canonical_keys
    from agentbatch.results import FINGERPRINT_COLUMN

    for batch in batches:
        failed = _transient(batch).to_pylist()
        if not any(failed):
            yield batch
            continue
        pairs = zip(
            canonical_keys(batch.column(key)),
            batch.column(FINGERPRINT_COLUMN).to_pylist(),
            strict=True,
        )
        mask = [not (f and pair in keeping) for f, pair in zip(failed, pairs, strict=True)]
        left = batch.filter(pa.array(mask, type=pa.bool_()))
        if left.num_rows:
            yield left


def ledger_path(the_plan: Plan) -> Path:
    """One ledger per target and output table: renaming a job keeps its checkpoints."""
    state_dir = the_plan.options.state_dir
    folder = Path(state_dir) if state_dir is not None else default_state_dir(root_of(the_plan))
    name = f"{the_plan.target.name}__{the_plan.job.output.table}"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if len(safe) > _LONGEST_STATE_NAME:
        # A file name has at most 255 bytes; a Unity Catalog name alone may have 255 characters.
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        safe = f"{safe[: _LONGEST_STATE_NAME - 17]}_{digest}"
    return folder / f"{safe}.ledger.sqlite"


_LONGEST_STATE_NAME = 200


def estimate_path(the_plan: Plan) -> Path:
    """Beside the ledger: the per-row figures of the last `agentbatch estimate`."""
    path = ledger_path(the_plan)
    return path.with_name(path.name.removesuffix(".ledger.sqlite") + ".estimate.json")


def _summarise(the_plan: Plan, engine: Engine, stats: Mapping[str, Any]) -> dict[str, Any]:
    """This run's figures first, then the state of the target table."""
    table: dict[str, Any] | None
    try:
        table = engine.fetch_one(the_plan.summary.sql)
    except AgentbatchError as err:
        log.warning("could not summarise the target: %s", err)
        table = None  # its figures are unknown, not an empty table's
    summary: dict[str, Any] = {
        "job": the_plan.job.name,
        "target": the_plan.target.name,
        "strategy": the_plan.strategy,
    }
    summary["selected"] = int(stats.get("selected", 0))
    summary["skipped"] = int(stats.get("skipped", 0))
    if the_plan.strategy == "push-down":
        # One statement answered them: the table says how each came out (ai_query's calls are
        # the rows; it reuses nothing).
        rows = int((table or {}).get("answered_this_run") or 0)
        errors = int((table or {}).get("errors_this_run") or 0)
        # A row that kept its earlier answer was sent too, and failed: it is not in the table.
        kept = int(stats.get("kept_previous_answer") or 0)
        rows, errors = rows + kept, errors + kept
        summary.update(rows=rows, sent=rows, reused=0, ok=rows - errors, errors=errors)
    else:
        summary["rows"] = int(stats.get("rows_seen", 0))
    summary.update(
        {k: v for k, v in stats.items() if k not in ("rows_seen", "selected", "skipped")}
    )
    summary.setdefault("errors", 0)
    # A table the run leaves none of is said by its result (`RunResult`: `no_table`).
    summary.update(output_table=the_plan.job.output.table, **table_figures(table))
    return summary
