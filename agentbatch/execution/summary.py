"""Print a run's outcome: the summary table, then a few output rows (or the dry-run requests)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from agentbatch.execution.result import RunResult


def output_locations(result: RunResult) -> list[dict[str, str]]:
    """Where each output table physically is (see `agentbatch.execution.show.describe_location`)."""
    if result.engine is None:
        return []
    table = result.plan.job.output.table
    if not result.plan.options.dry_run and not result.engine.table_exists(table):
        return []  # not kept (a source without rows): the run warned; point at nothing
    locate = getattr(result.engine, "location", None)
    if locate is not None:
        where: dict[str, str] = locate(table)
        return [where]
    return [{"table": table, "target": result.plan.target.name}]


def print_stopped(summary: dict[str, Any], *, as_json: bool = False) -> None:
    """The summary of a run that stopped early (`stopped` says why), or failed (`failed`)."""
    if as_json:
        sys.stdout.write(json.dumps({"summary": summary}, indent=2, default=str) + "\n")
        return
    how = "failed" if "failed" in summary else "stopped"
    _print_summary(summary, f"agentbatch run: {summary.get('job')} ({how})")


def _print_summary(summary: dict[str, Any], title: str) -> Console:
    """The summary as a table on stdout; the console, for what follows it."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, soft_wrap=False, width=None if sys.stdout.isatty() else 120)
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for name, value in summary.items():
        table.add_row(name, _format(value))
    console.print(table)
    return console


def print_run(result: RunResult, *, as_json: bool = False, show: int = 5) -> None:
    from agentbatch.execution.runner import root_of
    from agentbatch.execution.show import describe_location

    locations = output_locations(result)
    if as_json:
        payload: dict[str, Any] = {"summary": result.summary}
        if locations:
            payload["outputs"] = locations
        if result.dry_run_requests:
            payload["requests"] = result.dry_run_requests[: max(show, 0)]
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        return
    from rich.table import Table

    console = _print_summary(result.summary, f"agentbatch run: {result.summary.get('job')}")
    if result.summary.get("dry_run"):
        shown = result.dry_run_requests[: max(show, 0)]
        console.print(
            f"dry run: a run would send {result.summary.get('rows', 0)} row(s); "
            f"first {len(shown)} request(s), as they would be sent (--show N for more):"
        )
        for request in shown:
            console.print_json(json.dumps(request, default=str))
        return
    if show > 0 and locations:
        rows = result.to_arrow(limit=show)
        if rows.num_rows:
            # An answer reused from the checkpoint keeps its first `answered_at`: it is written,
            # not answered by this run, and not among these.
            table = Table(
                title=f"first {rows.num_rows} row(s) this run answered, in "
                f"{result.plan.job.output.table}"
            )
            # The key and the outcome; the full rows are in the output table.
            columns = [result.plan.job.source.key, "response", "error", "attempts", "latency_ms"]
            for column in columns:
                table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=60)
            for row in rows.select(columns).to_pylist():
                table.add_row(*(_format(row[c], limit=60) for c in columns))
            console.print(table)
    for where in locations:
        line = describe_location(where, root_of(result.plan))
        console.print(f"output {line}", highlight=False, soft_wrap=True)


def _format(value: Any, limit: int = 200) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
