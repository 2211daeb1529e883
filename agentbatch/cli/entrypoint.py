"""The Databricks `python_wheel_task` entry point: the `agentbatch` command line, failing the task
when the command fails.

Databricks calls a wheel task's entry point with the task's `parameters` in `sys.argv[1:]` and
ignores its return value, so the console script's `main()` (which returns an exit code) would let
a failed run look successful. This one raises `SystemExit` with the code instead.

Before the command, `--setting NAME=VALUE` (repeatable) adds a setting to the run's target, so
bundle variables reach it: `agentbatch-job --setting apps_secret_scope=agentbatch run job.yml
--target spark`. An empty value leaves the setting unset; `true`/`false` are booleans.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from agentbatch.errors import UsageError


def split_settings(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The leading `--setting NAME=VALUE` pairs, and the command line after them."""
    settings: dict[str, Any] = {}
    rest = list(argv)
    while rest and rest[0] == "--setting":
        if len(rest) < 2 or "=" not in rest[1]:
            raise UsageError("--setting needs NAME=VALUE")
        name, _, value = rest[1].partition("=")
        if not name.strip():
            raise UsageError(f"--setting {rest[1]!r}: empty setting name")
        if value != "":
            lowered = value.lower()
            settings[name.strip()] = {"true": True, "false": False}.get(lowered, value)
        rest = rest[2:]
    return settings, rest


def main(argv: Sequence[str] | None = None) -> None:
    from agentbatch.cli.main import main as cli_main
    from agentbatch.planning.targets import refuse_secret_settings

    args = sys.argv[1:] if argv is None else argv
    try:
        settings, rest = split_settings(args)
        refuse_secret_settings(settings)
    except UsageError as e:
        sys.stderr.write(f"agentbatch-job: {e}\n")
        raise SystemExit(2) from None
    code = cli_main(rest, settings=settings)
    if code:
        raise SystemExit(code)
