"""The job commands: validate, render, plan, run, estimate, compile, show, schema, bundle.

Each parses its flags into `RunOptions` (`agentbatch.cli.options`) and calls the facade."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentbatch.cli.options import (
    add_job_options,
    add_run_options,
    add_state_dir,
    count,
    folder,
    pairs,
    run_options,
)
from agentbatch.errors import SpecError, UsageError, run_summary
from agentbatch.planning.definition import RunOptions

log = logging.getLogger("agentbatch")

EXAMPLES = {
    "validate": """examples:
  agentbatch validate jobs/*.yml
  agentbatch validate jobs/ticket_triage.yml --var team=billing""",
    "render": """examples:
  agentbatch render jobs/summarise_tickets.yml --target databricks-sql
  agentbatch render jobs/ticket_triage.yml --var team=billing > triage.sql""",
    "plan": """examples:
  agentbatch plan jobs/ticket_triage.yml
  agentbatch plan jobs/summarise_tickets.yml --target databricks-sql --no-sql""",
    "run": """examples:
  agentbatch run jobs/ticket_triage.yml \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint apps/triage-agent=http://127.0.0.1:8000
  agentbatch run jobs/ticket_triage.yml \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv --dry-run --show 3
  agentbatch run jobs/summarise_tickets.yml --target databricks-sql --var catalog=prod
  agentbatch run jobs/ticket_triage.yml --retry-errors \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint apps/triage-agent=http://127.0.0.1:8000
  agentbatch run jobs/ticket_triage.yml --max-rows 1000 --max-tokens 100000 \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint apps/triage-agent=http://127.0.0.1:8000    # exit 7 if it would pass them

budget (flags, target settings, or the job's budget: block; a flag replaces the job's value):
  --max-rows, --max-tokens, --max-cost: a run whose estimate passes one sends nothing (exit 7);
  tokens and cost are judged before sending from the last `agentbatch estimate` of the same
  request. A run that reaches one while sending stops sending, writes what it answered, says how
  far it got (exit 7); the next run continues from there. --max-error-rate (default 0.5, after
  --error-rate-min-rows 20 answered rows) stops a run whose rows fail for good (exit 7), naming
  the commonest error.

what a run does (the output table decides what is done):
  A source row is done when the output table holds a row for its key with the current request
  fingerprint, answered or failed for good. Every other selected row is answered: from the
  checkpoint (.agentbatch/state) when an earlier run already paid for the same request, else by
  calling the agent. Transient failures (retries exhausted on 408/429/5xx, timeouts, connection
  errors) are sent again by the next run; permanent ones (4xx, agent errors, unparsable
  answers) only with --retry-errors. The `error` column starts with [transient] or [permanent].
  --full-refresh calls the agent for every selected row: no reuse of earlier answers; a
  refresh that stopped early is continued by the next --full-refresh (its own answers reused).
  On a second run, output.mode decides what happens to rows the table already holds:
    merge       one row per key: a new answer replaces the key's row; other keys stay
    append      one row per key and request: an edited prompt adds rows beside the old ones
    overwrite   the table becomes exactly the selected rows: rows it already holds for the
                current request are kept (not paid again), rows that left the source are dropped;
                a run stopped early or limited leaves the keys it did not reach as they were

the summary:
  selected      source rows the job selects (after source.where / source.limit)
  skipped       selected rows the output table already holds: nothing to do
  skipped_errors  those of them that are failures (shown when there are some)
  rows          selected rows this run answered (a dry run: the rows a run would answer now)
  sent          rows sent to the agent; ok / errors: the outcome of every answered row
  reused        rows written from answers paid for by an earlier run (the checkpoint), not sent
  input_tokens, output_tokens, cost
                what this run's answers used (cost: with a declared price), and beside them
                estimated_* from the last `agentbatch estimate` of the same request
  table_rows    the whole output table after the run (table_ok, table_errors likewise);
                blank (null with --json) when it could not be read
  no_table      shown when the run left no output table (a local run over a source with
                its header only keeps none): table_rows, table_ok, table_errors are
                blank (null), not the 0 of an empty table
  output ...    where the output table is: its file, or the local warehouse file and a query
                that reads it (agentbatch show TABLE prints it)""",
    "estimate": """examples:
  agentbatch estimate jobs/ticket_triage.yml \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint apps/triage-agent=http://127.0.0.1:8000
  agentbatch estimate jobs/ticket_triage.yml --sample 50 --json \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint apps/triage-agent=http://127.0.0.1:8000

what it does:
  Counts the rows the next run would send (the selection the output table does not hold, minus
  rows the checkpoint answers from calls already paid for), then sends a random sample of them
  for real (--sample N, default 20). The sample's answers are kept: written to the output table
  like any run's, never paid again. From the sample: tokens per row (95% interval), latency,
  errors, and the projection for the remaining rows: tokens, wall time of the calls at the
  concurrency the agent sustained, and cost where a price is declared (agent.price in the job,
  or prices: in agentbatch.yml, per million input and output tokens). The next runs' budget
  checks (--max-tokens, --max-cost) use these per-row figures.""",
    "bundle": """examples:
  agentbatch bundle            # regenerate resources/*.job.yml and resources/sql/ from jobs/*.yml
  agentbatch bundle --check    # exit 1 if they are stale (CI)""",
    "compile": """examples:
  agentbatch compile jobs/summarise_tickets.yml jobs/triage_foundation_model.yml --out build/sql
  agentbatch compile jobs/summarise_tickets.yml --var catalog=dev

Only push-down jobs compile (a SQL task runs no Python): any other job given (`jobs/*.yml` with
jobs that call Apps agents) is named with the reason, the others are still written, and the exit
code is 4. `agentbatch bundle` compiles the push-down jobs of jobs/ and runs the others as wheel
tasks.""",
    "show": """examples:
  agentbatch show main.support.ticket_triage             # from the local warehouse
  agentbatch show main.support.ticket_triage --limit 50 --json
  agentbatch show main.support.ticket_triage \\
      --table main.support.ticket_triage=.agentbatch/out/ticket_triage.parquet   # make demo's
  agentbatch show main.support.ticket_triage --target databricks-sql""",
    "schema": """examples:
  agentbatch schema > agentbatch/schema/job.schema.json""",
}


def add_commands(commands: Any) -> None:
    """Register the job commands on the main parser's subcommands."""

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    validate = command("validate", "Check job files: every error of every file, with file:line.")
    validate.add_argument("jobs", nargs="+", metavar="JOB", help="job files")
    add_job_options(validate, target=False)
    validate.add_argument(
        "--target",
        "-t",
        help="also check each job's source on this target (local: mapped files and the local "
        "warehouse): the table exists and request, source.where, ... bind to its columns",
    )
    validate.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="map a table to a file, as for run (with --target local)",
    )

    render = command("render", "Print the SQL a job renders to, for a target.")
    render.add_argument("job", metavar="JOB")
    add_job_options(render)

    plan = command("plan", "Print the steps a run would take, and their SQL. Nothing runs.")
    plan.add_argument("job", metavar="JOB")
    plan.add_argument("--no-sql", action="store_true", help="steps only")
    add_job_options(plan)
    add_run_options(plan, budget=False)
    add_state_dir(plan)  # where an unfinished refresh is recorded: a --full-refresh continues it

    run = command("run", "Run a job.")
    run.add_argument("job", metavar="JOB")
    add_job_options(run)
    add_run_options(run)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="count the rows a run would send and show the first requests (--show N of them); "
        "call nothing, write nothing",
    )
    add_state_dir(run)
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument(
        "--show",
        type=count,
        default=5,
        metavar="N",
        help="print N output rows, or N requests of a dry run (default 5)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    estimate = command(
        "estimate",
        "Count the rows the next run would send, answer a random sample of them for real (kept), "
        "and project tokens, time and cost.",
    )
    estimate.add_argument("job", metavar="JOB")
    add_job_options(estimate)
    add_run_options(estimate, budget=False)
    estimate.add_argument(
        "--sample", type=count, default=20, metavar="N", help="rows to send for real (default 20)"
    )
    estimate.add_argument("--seed", type=int, help="seed of the random sample")
    add_state_dir(estimate)
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    estimate.add_argument("--no-progress", action="store_true", help="no progress bar")

    compile_ = command(
        "compile", "Write each job's SQL to files a SQL task can run without Python."
    )
    compile_.add_argument("jobs", nargs="+", metavar="JOB")
    compile_.add_argument("--out", type=Path, default=Path("build/sql"), help="output folder")
    compile_.add_argument(
        "--target",
        "-t",
        default="databricks-sql",
        help="target whose ai_query the SQL calls (default databricks-sql: a SQL task runs it)",
    )
    add_job_options(compile_, target=False)

    show = command("show", "Print the rows of a table, from any target (default: local).")
    show.add_argument("table", metavar="TABLE", help="table name, e.g. main.support.ticket_triage")
    show.add_argument("--target", "-t", default="local", help="run target (default local)")
    show.add_argument("--limit", type=count, default=20, help="at most N rows (default 20)")
    show.add_argument("--json", action="store_true", help="one JSON object per row")
    show.add_argument(
        "--table",
        dest="tables",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="read a table from a file, as for run",
    )
    show.add_argument(
        "--project-dir", type=folder, help="project folder holding .agentbatch/ (default: .)"
    )

    command("schema", "Print the JSON Schema of job files (for editor completion).")

    bundle = command("bundle", "Generate the Databricks bundle's job resources from jobs/*.yml.")
    bundle.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    bundle.add_argument("--project-dir", type=folder, help="folder of databricks.yml (default: .)")


def dispatch(args: argparse.Namespace) -> int:
    """Run the command the arguments name; the exit code of a success (errors raise)."""
    from agentbatch import api

    if args.command == "schema":
        from agentbatch.spec.schema import job_json_schema

        sys.stdout.write(json.dumps(job_json_schema(), indent=2) + "\n")
        return 0
    if args.command == "show":
        from agentbatch.execution.show import print_table, read_table

        rows = read_table(
            args.table,
            args.target,
            limit=args.limit,
            tables=pairs(args.tables, "--table"),
            project_dir=args.project_dir,
        )
        print_table(rows, f"{args.table} (first {rows.num_rows} row(s))", as_json=args.json)
        return 0
    if args.command == "bundle":
        from agentbatch.bundle.command import bundle_command

        return bundle_command(args.project_dir, check=args.check)
    if args.command in ("eval", "compare"):
        from agentbatch.cli.evaluation import run_command

        return run_command(args)
    options = run_options(args)
    if args.command == "validate":
        return _validate(args.jobs, args.target, options)
    if args.command == "render":
        from agentbatch.planning.explain import render_sql
        from agentbatch.spec.project import mask_environment

        the_plan = api.plan(args.job, args.target, options=options)
        sys.stdout.write(mask_environment(render_sql(the_plan), the_plan.job))
        return 0
    if args.command == "compile":
        return _compile(args.jobs, args.out, args.target, options)
    if args.command == "plan":
        from agentbatch.execution.runner import continued
        from agentbatch.planning.explain import explain
        from agentbatch.spec.project import mask_environment

        # A --full-refresh continues an unfinished refresh: its SQL as the run would send it.
        the_plan = continued(api.plan(args.job, args.target, options=options))
        _check_source(args.job, the_plan)
        text = explain(the_plan, with_sql=not args.no_sql)
        sys.stdout.write(mask_environment(text, the_plan.job))
        return 0
    if args.command == "estimate":
        from agentbatch.execution.estimation_report import print_estimate

        found = api.estimate(
            args.job, args.target, sample=args.sample, seed=args.seed, options=options
        )
        print_estimate(found, as_json=args.json)
        return 0
    from agentbatch.execution.summary import print_run, print_stopped

    try:
        result = api.run(args.job, args.target, options=options)
    except BaseException as stop:
        # Stopped early, the run still wrote what it answered: say what (the error follows).
        summary = run_summary(stop)
        if summary is not None:
            print_stopped(summary, as_json=args.json)
        raise
    with result:
        if result.dry_run_requests and result.plan.job.env:
            result.dry_run_requests = _masked_requests(result.dry_run_requests, result.plan.job)
        print_run(result, as_json=args.json, show=args.show)
    return 0


def _masked_requests(requests: list[dict[str, Any]], job: Any) -> list[dict[str, Any]]:
    """A dry run's requests as `render` and `plan` print SQL: `***` for the values the job read
    from the environment (a run sends them; they are secrets more often than not)."""
    from agentbatch.spec.project import mask_environment

    return [json.loads(mask_environment(json.dumps(r, default=str), job)) for r in requests]


def _check_source(path: str, the_plan: Any) -> None:
    """Mappings name the job's tables and endpoint; a reachable local source binds the spec's SQL."""
    from agentbatch.execution.preflight import check_plan

    if the_plan.options.tables and the_plan.target.engine == "databricks-sql":
        # As the run refuses them: a plan or validate that took them would show the SQL over the
        # warehouse's table, or say `ok`, while the user meant their file.
        raise UsageError(
            "--table maps tables to local files; it applies to the local and spark targets"
        )
    checked = check_plan(the_plan, required=bool(the_plan.options.tables), origin=path)
    if not checked and the_plan.target.engine == "local":
        log.info(
            "%s: the source is neither mapped with --table nor in the local warehouse: "
            "its columns were not checked",
            path,
        )


def _variables_per_file(paths: Sequence[str], options: RunOptions) -> dict[str, dict[str, Any]]:
    """One `--var` for several files (`validate jobs/*.yml --var catalog=dev`): each file takes
    the variables it declares or reads; one that no file uses is refused."""
    if len(paths) < 2 or not options.vars:
        return {}
    from agentbatch import api
    from agentbatch.spec.project import project_dir_of, template_dirs
    from agentbatch.spec.variables import names_used, templates_read, unknown_variable

    used: dict[str, set[str]] = {}
    read_by_templates: dict[Path, set[str] | None] = {}  # per project folder, read once
    for path in paths:
        try:
            job = api.load_job(path, project_dir=options.project_dir)
        except (SpecError, UsageError):
            continue  # the file's own error is reported with it
        root = project_dir_of(path, options.project_dir)
        if root not in read_by_templates:
            read_by_templates[root] = templates_read(template_dirs(root))
        from_templates = read_by_templates[root]
        if from_templates is None:
            return {}
        used[path] = names_used(job, from_templates)
    known: set[str] = set().union(*used.values())
    unused = sorted(set(options.vars) - known)
    if used and unused:
        raise unknown_variable(unused[0], known, files=True)
    return {
        path: {k: v for k, v in options.vars.items() if k in names} for path, names in used.items()
    }


def _check_template(path: str, options: RunOptions, *, own: bool) -> None:
    """The job's push-down statements render, whatever the target validated: its own template
    (`template:`, `own`) and the project's overrides in sqltemplates/ (`merge.sql`, ...) are
    only rendered where ai_query runs (a SQL warehouse, where the bundle schedules push-down
    jobs), so a local `validate` would pass a template that fails there."""
    from agentbatch import api
    from agentbatch.errors import TemplateError
    from agentbatch.spec.loader import where_in_file

    try:
        api.plan(path, "databricks-sql", options=options)
    except TemplateError as err:
        if own:
            raise SpecError(f"{where_in_file(path, ('template',))}: template: {err}") from None
        raise SpecError(f"{path}: {err}") from None
    except (SpecError, UsageError):
        pass  # the target's own check reports the job's other problems


def _compile(paths: Sequence[str], out: Path, target: str, options: RunOptions) -> int:
    """Each job's SQL file; a job that cannot be compiled (not push-down, a spec error) is named
    with its reason and the others are still written (`compile jobs/*.yml` over a project whose
    jobs call Apps agents too). The exit code is the first failure's."""
    from agentbatch.agent.redact import redact
    from agentbatch.bundle.compile import compile_jobs
    from agentbatch.errors import AgentbatchError, exit_code_for

    first_failure = 0
    shared = _variables_per_file(paths, options)
    for path in paths:
        try:
            each = replace(options, vars=shared.get(path, options.vars))
            written = compile_jobs([path], out, target=target, options=each)
        except AgentbatchError as err:
            first_failure = first_failure or exit_code_for(err)
            for line in str(err).splitlines():
                sys.stderr.write(f"{redact(line)}\n")
            continue
        for destination in written:
            sys.stdout.write(f"{destination}\n")
    if first_failure and len(paths) > 1:
        sys.stderr.write("some jobs were not compiled (above); the others were written\n")
    return first_failure


def _validate(paths: Sequence[str], target: str | None, options: RunOptions) -> int:
    from agentbatch import api

    failures = 0
    shared = _variables_per_file(paths, options)
    for path in paths:
        try:
            each = replace(options, vars=shared.get(path, options.vars))
            the_plan = api.plan(path, target or "local", options=each)
            if the_plan.target.engine != "databricks-sql":
                _check_template(path, each, own=the_plan.job.template is not None)
            if the_plan.job.evaluation is not None:
                from agentbatch.evaluation.checks import check_evaluation

                check_evaluation(the_plan.job, path)
            if target is not None:
                _check_source(path, the_plan)
        except (SpecError, UsageError) as err:
            from agentbatch.agent.redact import redact

            failures += 1
            for line in str(err).splitlines():
                sys.stderr.write(f"{redact(line)}\n")
        else:
            sys.stdout.write(f"ok  {path}\n")
    if failures:
        sys.stderr.write(f"{failures} of {len(paths)} job file(s) have errors\n")
    return 2 if failures else 0
