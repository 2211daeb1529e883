"""The `eval` and `compare` commands: options, a call to the evaluation facade, a printed summary.

Kept apart from `agentbatch.cli.main` (which only registers them) and free of heavy imports.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.agent.redact import safe_url
from agentbatch.cli.options import (
    add_job_options,
    add_run_options,
    add_state_dir,
    count,
    run_options,
)
from agentbatch.errors import JobFailedError, UsageError
from agentbatch.planning.definition import RunOptions

if TYPE_CHECKING:
    from rich.console import Console

    from agentbatch.evaluation.results import CompareResult, EvalResult
    from agentbatch.spec.models import Job

EVAL_EXAMPLES = """examples:
  agentbatch eval jobs/eval_triage.yml \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint apps/triage-agent=http://127.0.0.1:8000 --report out/
  agentbatch eval jobs/eval_triage.yml --skip-run --require 'label_exact_match>=0.9' \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint apps/triage-agent=http://127.0.0.1:8000
  agentbatch eval jobs/eval_triage.yml --target databricks-sql --report out/eval_triage
  agentbatch eval jobs/eval_triage.yml --target databricks-sql --mlflow --experiment /Shared/evals

writes <output>_scores (a score and an error column per scorer, per row) and <output>_metrics
(mean, confidence interval, counts; overall and per group); --report adds report.md, report.html
and metrics.json."""

COMPARE_EXAMPLES = """examples:
  # the same job against two agents (A defaults to the job's own endpoint)
  agentbatch compare jobs/eval_triage.yml --endpoint-a apps/triage-v1 --endpoint-b apps/triage-v2
  agentbatch compare jobs/eval_triage.yml \\
      --table main.support.tickets=agentbatch/data/support_tickets.csv \\
      --endpoint-a http://127.0.0.1:8001 --endpoint-b http://127.0.0.1:8002 --report out/ab
  # two job files of yours (two prompts), scored by the first one's evaluation block
  agentbatch compare jobs/triage_v1.yml jobs/triage_v2.yml --variant-a v1 --variant-b v2
  # the answers already in the outputs, without calling any agent
  agentbatch compare jobs/triage_v1.yml jobs/triage_v2.yml --skip-run

a win is the better score on a row (lower for latency, tokens and error rate); writes each
variant's scores and metrics tables and <output>_comparison (wins, ties, deltas per scorer)."""

_REQUIREMENT = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?\d+(?:\.\d+)?)\s*$")


def add_commands(commands: Any) -> None:
    """Register `eval` and `compare` on the main parser's subcommands."""

    def command(name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    evaluate = command(
        "eval",
        "Run an evaluation job and score its answers (scores, metrics, report).",
        EVAL_EXAMPLES,
    )
    evaluate.add_argument("job", metavar="JOB", help="a job file with an `evaluation:` block")
    add_job_options(evaluate)
    add_run_options(evaluate)
    _add_common(evaluate)
    evaluate.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="SCORER>=VALUE",
        help="exit 1 unless the scorer's mean meets it (>=, <=, >, <; repeatable)",
    )

    compare = command(
        "compare",
        "Score two agents or two runs on the same rows and compare them.",
        COMPARE_EXAMPLES,
    )
    compare.add_argument("jobs", nargs="+", metavar="JOB", help="one job file, or two to compare")
    add_job_options(compare)
    add_run_options(compare)
    compare.add_argument("--endpoint-a", metavar="ENDPOINT", help="endpoint or URL of variant A")
    compare.add_argument("--endpoint-b", metavar="ENDPOINT", help="endpoint or URL of variant B")
    compare.add_argument("--variant-a", default="a", metavar="NAME", help="name of A (default a)")
    compare.add_argument("--variant-b", default="b", metavar="NAME", help="name of B (default b)")
    compare.add_argument(
        "--top", type=count, default=10, metavar="N", help="rows of most disagreement to list"
    )
    _add_common(compare)


def _add_common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--skip-run", action="store_true", help="score the answers already in the output table"
    )
    sub.add_argument("--report", type=Path, metavar="DIR", help="write report.md/.html there")
    logging_group = sub.add_mutually_exclusive_group()
    logging_group.add_argument(
        "--mlflow",
        dest="mlflow",
        action="store_true",
        default=None,
        help="log to MLflow (default: when a tracking URI is set)",
    )
    logging_group.add_argument(
        "--no-mlflow", dest="mlflow", action="store_false", help="never log to MLflow"
    )
    sub.add_argument("--experiment", metavar="NAME", help="MLflow experiment")
    add_state_dir(sub)
    sub.add_argument("--json", action="store_true", help="print the overall metrics as JSON")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_command(args: argparse.Namespace) -> int:
    options = run_options(args)
    common: dict[str, Any] = dict(
        skip_run=args.skip_run,
        report_dir=args.report,
        mlflow=args.mlflow,
        experiment=args.experiment,
        options=options,
    )
    _check_mappings([args.job] if args.command == "eval" else args.jobs, options)
    if args.command == "eval":
        requirements = [_requirement(text) for text in args.require]
        _check_scorer_names(args.job, requirements, options)
        from agentbatch.evaluation.run import evaluate

        result = evaluate(args.job, args.target, **common)
        _print_eval(result, as_json=args.json)
        _check_requirements(result, requirements)
        return 0
    if len(args.jobs) > 2:
        raise UsageError("compare takes one job file (with --endpoint-b) or two job files")
    if args.top < 0:
        raise UsageError("--top must be 0 or more")
    from agentbatch.evaluation.run import compare

    outcome = compare(
        args.jobs[0],
        args.jobs[1] if len(args.jobs) == 2 else None,
        args.target,
        endpoint_a=_variant_endpoint(args.endpoint_a, "--endpoint-a", args.jobs[0], options),
        endpoint_b=_variant_endpoint(args.endpoint_b, "--endpoint-b", args.jobs[0], options),
        variant_a=args.variant_a,
        variant_b=args.variant_b,
        top=args.top,
        **common,
    )
    _print_compare(outcome, as_json=args.json)
    return 0


def _variant_endpoint(
    value: str | None, flag: str, job_path: str, options: RunOptions
) -> str | None:
    """An endpoint or URL; `NAME=URL` (the `--endpoint` form) names the job's endpoint it replaces.
    A URL is taken whole, `=` in its query string and all."""
    if value is None or "=" not in value or value.startswith(("http://", "https://", "builtin:")):
        return value
    name, _, url = value.partition("=")
    job = _load(job_path, options)
    if name.strip() != job.agent.endpoint:
        raise UsageError(
            f"{flag} {name}={safe_url(url.strip())}: the job's endpoint is "
            f"{safe_url(job.agent.endpoint)!r}, not {name!r}; "
            f"use {flag} {safe_url(job.agent.endpoint)}=URL or just {flag} URL"
        )
    return url.strip()


def _load(path: str, options: RunOptions) -> Job:
    """A job of the command, for the checks made before it runs. Its variables are checked
    when it runs: against both jobs for `compare`, where a `--var` may be only one's."""
    from agentbatch.spec.project import project_dir_of, resolve_job

    return resolve_job(path, options.vars, project_dir_of(path, options.project_dir), alone=False)


def _check_mappings(paths: Sequence[str], options: RunOptions) -> None:
    """`--table` / `--endpoint` must name a table or endpoint of the job(s) or their judges."""
    from agentbatch.execution.preflight import check_mappings

    jobs = [_load(path, options) for path in paths[:2]]
    judges = [
        str(endpoint)
        for job in jobs
        if job.evaluation is not None
        for entry in job.evaluation.scorers
        if (endpoint := getattr(entry.options, "endpoint", None))
    ]
    check_mappings(
        jobs,
        options.tables,
        options.endpoints,
        extra_endpoints=judges,
        derived_outputs=True,
    )


def _check_scorer_names(
    job_path: str,
    requirements: Sequence[tuple[str, str, float]],
    options: RunOptions,
) -> None:
    """A --require naming no scorer fails before the run, not after it."""
    if not requirements:
        return
    job = _load(job_path, options)
    names = [entry.name for entry in job.evaluation.scorers] if job.evaluation else []
    for scorer, _, _ in requirements:
        if scorer not in names:
            close = difflib.get_close_matches(scorer, names, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(
                f"--require: no scorer {scorer!r} (scorers: {', '.join(names) or 'none'}){hint}"
            )


def _requirement(text: str) -> tuple[str, str, float]:
    match = _REQUIREMENT.match(text)
    if match is None:
        raise UsageError(f"--require {text!r}: expected SCORER>=VALUE (or <=, >, <)")
    return match.group(1), match.group(2), float(match.group(3))


def _check_requirements(result: EvalResult, requirements: Sequence[tuple[str, str, float]]) -> None:
    failed = []
    for scorer, operator, bound in requirements:
        try:
            mean = result.metric(scorer)["mean"]
        except KeyError:
            raise UsageError(
                f"--require: no scorer {scorer!r} (scorers: "
                f"{', '.join(i.name for i in result.scored.scorers)})"
            ) from None
        if mean is None:
            failed.append(f"{scorer} has no score, required {operator} {bound:g}")
            continue
        checks = {">=": mean >= bound, "<=": mean <= bound, ">": mean > bound, "<": mean < bound}
        if not checks[operator]:
            failed.append(f"{scorer} is {mean:.4g}, required {operator} {bound:g}")
    if failed:
        raise JobFailedError("evaluation below requirements: " + "; ".join(failed))


def _spend(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's tokens and cost (and the estimate beside them), for --json."""
    if not summary:
        return None
    keys = ("sent", "input_tokens", "output_tokens", "cost")
    return {k: v for k, v in summary.items() if k in keys or k.startswith("estimated_")}


def _coverage(result: EvalResult) -> dict[str, int] | None:
    """The selected keys scored, and why the others are not (--json)."""
    return result.coverage.as_dict() if result.coverage is not None else None


def _console() -> Console:
    """The summary's console. Markup off, so a `[...]` in a printed path, table or endpoint is
    shown as it is (rich read `--report out/[v1]` as a style tag: it printed `out//report.md`,
    and stopped on a MarkupError for `[/x]`); and a long path or table name is printed
    on one line, not broken at the 80 columns rich assumes when stdout is not a terminal (each
    line is printed with `soft_wrap=True`)."""
    from rich.console import Console

    return Console(file=sys.stdout, soft_wrap=False, markup=False)


def _print_eval(result: EvalResult, *, as_json: bool) -> None:
    from agentbatch.evaluation.metrics import overall

    if as_json:
        payload = {
            "job": result.job.name,
            "endpoint": result.endpoint,
            "scores_table": result.scores_table,
            "metrics_table": result.metrics_table,
            "metrics": overall(result.metrics),
            "coverage": _coverage(result),
            "report": [str(p) for p in result.report_files],
            "mlflow_run_id": result.mlflow_run_id,
            "run": _spend(result.run_summary),
        }
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        return
    from rich.table import Table

    from agentbatch.evaluation.report.content import fmt_interval, fmt_value

    console = _console()
    table = Table(title=f"agentbatch eval: {result.job.name} ({result.scores.num_rows:,} rows)")
    for column in ("scorer", "mean", "interval", "scored", "errors"):
        table.add_column(column, justify="right" if column in ("scored", "errors") else "left")
    infos = {info.name: info for info in result.scored.scorers}
    for row in overall(result.metrics):
        info = infos[row["scorer"]]
        table.add_row(
            row["scorer"],
            fmt_value(row["mean"], info),
            fmt_interval(row["ci_low"], row["ci_high"], info),
            f"{row['scored']:,}",
            f"{row['errors']:,}",
        )
    console.print(table)
    flag = "" if result.target == "local" else f" --target {result.target}"
    for what, name in (
        ("answers", result.answers_table),
        ("scores", result.scores_table),
        ("metrics", result.metrics_table),
    ):
        if what == "answers" and not result.answers_kept:
            console.print(
                f"answers: {name}  (none kept: the source has no rows yet)", soft_wrap=True
            )
            continue
        console.print(
            f"{what + ':':<9}{name}  (print it: agentbatch show {name}{flag})", soft_wrap=True
        )
    from agentbatch.evaluation.report.content import spend_facts

    for name, value in spend_facts(result.run_summary):
        console.print(f"{name}: {value}", highlight=False, soft_wrap=True)
    for path in result.report_files:
        console.print(f"report:  {path}", soft_wrap=True)
    if result.mlflow_run_id:
        console.print(f"mlflow run: {result.mlflow_run_id}", soft_wrap=True)


def _print_compare(result: CompareResult, *, as_json: bool) -> None:
    summary = result.comparison.summary.to_pylist()
    if as_json:
        payload = {
            **{
                side: {
                    "variant": variant.variant,
                    "endpoint": variant.endpoint,
                    "coverage": _coverage(variant),
                }
                for side, variant in (("a", result.a), ("b", result.b))
            },
            "paired_rows": result.comparison.paired_rows,
            "only_in_a": result.comparison.only_a,
            "only_in_b": result.comparison.only_b,
            "comparison": summary,
            "comparison_table": result.comparison_table,
            "report": [str(p) for p in result.report_files],
            "mlflow_run_id": result.mlflow_run_id,
        }
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        return
    from rich.table import Table

    from agentbatch.evaluation.report.content import fmt_delta, fmt_value

    console = _console()
    a, b = result.a, result.b
    table = Table(
        title=f"agentbatch compare: {a.variant} ({a.endpoint}) vs {b.variant} ({b.endpoint}), "
        f"{result.comparison.paired_rows:,} paired rows"
    )
    # A, B and delta are over the rows both variants scored, per scorer ("rows").
    for column in ("scorer", "rows", "A", "B", "delta", "A wins", "ties", "B wins", "p"):
        table.add_column(column, justify="left" if column == "scorer" else "right")
    infos = {info.name: info for info in a.scored.scorers}
    for row in summary:
        info = infos[row["scorer"]]
        p_value = row["p_value"]
        table.add_row(
            row["scorer"],
            f"{row['paired']:,}",
            fmt_value(row["mean_a"], info),
            fmt_value(row["mean_b"], info),
            fmt_delta(row["delta"], info),
            f"{row['wins_a']:,}",
            f"{row['ties']:,}",
            f"{row['wins_b']:,}",
            "–" if p_value is None or math.isnan(p_value) else f"{p_value:.3g}",
        )
    console.print(table)
    console.print(f"comparison: {result.comparison_table}", soft_wrap=True)
    for path in result.report_files:
        console.print(f"report:     {path}", soft_wrap=True)
    if result.mlflow_run_id:
        console.print(f"mlflow run: {result.mlflow_run_id}", soft_wrap=True)
