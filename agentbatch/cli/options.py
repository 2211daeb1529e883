"""The flags shared by commands, and the one place they become `RunOptions`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentbatch.errors import UsageError
from agentbatch.planning.definition import RunOptions


def count(text: str) -> int:
    """An argparse type: a whole number of 0 or more (`--show -1` printed every row but one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def folder(text: str) -> Path:
    """An argparse type: an existing folder (`--project-dir`). A misspelt one would be a project
    of its own, with an empty local warehouse and checkpoint: a run would pay again for every
    row the real project has answered, and `show` would find nothing."""
    path = Path(text)
    if not path.is_dir():
        problem = "not a folder" if path.exists() else "no such folder"
        raise argparse.ArgumentTypeError(f"{problem}: {text!r}")
    return path


def add_job_options(sub: argparse.ArgumentParser, *, target: bool = True) -> None:
    if target:
        sub.add_argument("--target", "-t", default="local", help="run target (default local)")
    sub.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="set a job variable"
    )
    sub.add_argument(
        "--project-dir", type=folder, help="project folder (default: the parent of jobs/)"
    )


def add_run_options(sub: argparse.ArgumentParser, *, budget: bool = True) -> None:
    sub.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="map a table to a CSV/Parquet/JSON file or Delta folder (local, spark)",
    )
    sub.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="send an endpoint's rows to an agent server URL (or builtin:instant)",
    )
    sub.add_argument(
        "--limit",
        type=int,
        help="send at most N rows this run: the lowest keys not yet answered (with "
        "--full-refresh: the N oldest answers, so repeated runs refresh in turns)",
    )
    sub.add_argument(
        "--retry-errors",
        action="store_true",
        help="re-send rows that failed for good before (transient failures are re-sent anyway)",
    )
    sub.add_argument(
        "--full-refresh",
        action="store_true",
        help="call the agent for every selected row again (no reuse of earlier answers; a refresh that stopped is continued)",
    )
    if budget:
        add_budget_options(sub)


def add_budget_options(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group(
        "budget", "limits per run (replace the job's budget: and the target's settings); exit 7"
    )
    group.add_argument("--max-rows", type=int, metavar="N", help="rows sent to the agent")
    group.add_argument("--max-tokens", type=int, metavar="N", help="input plus output tokens")
    group.add_argument(
        "--max-cost", type=float, metavar="X", help="cost, in the unit of the declared prices"
    )
    group.add_argument(
        "--max-error-rate",
        type=float,
        metavar="R",
        help="stop sending once this share of answered rows failed for good (default 0.5)",
    )
    group.add_argument(
        "--error-rate-min-rows",
        type=int,
        metavar="N",
        help="answered rows before --max-error-rate applies (default 20)",
    )


def state_folder(text: str) -> Path:
    """An argparse type: a folder for the checkpoint, made when missing, but not a file
    (the run failed with `File exists: NAME`)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text!r}")
    return path


def add_state_dir(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--state-dir",
        type=state_folder,
        help="checkpoint folder (default .agentbatch/state; on Databricks compute the driver's temp folder)",
    )


def pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    """`NAME=VALUE` flags as a dict; anything else is a usage error naming the flag."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{flag} {item!r}: expected NAME=VALUE")
        result[name] = value
    return result


def variables(args: argparse.Namespace) -> dict[str, Any]:
    from agentbatch.spec.loader import parse_var_assignments

    return parse_var_assignments(getattr(args, "var", []))


def run_options(args: argparse.Namespace) -> RunOptions:
    """The run options of a command's flags: flags a command lacks keep their defaults."""
    from agentbatch.execution.budget import LIMIT_KEYS

    given = vars(args)
    return RunOptions(
        vars=variables(args),
        tables=pairs(given.get("table", []), "--table"),
        endpoints=pairs(given.get("endpoint", []), "--endpoint"),
        settings={
            **given.get("settings", {}),
            **{key: given[key] for key in LIMIT_KEYS if given.get(key) is not None},
        },
        project_dir=given.get("project_dir"),
        state_dir=given.get("state_dir"),
        limit=given.get("limit"),
        retry_errors=given.get("retry_errors", False),
        full_refresh=given.get("full_refresh", False),
        dry_run=given.get("dry_run", False),
        progress=not given.get("no_progress", False) and sys.stderr.isatty(),
    )
