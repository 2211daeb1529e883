"""The Databricks `python_wheel_task` entry point: the `agentbatch` command line, failing the task
when the command fails.

Databricks calls a wheel task's entry point with the task's `parameters` in `sys.argv[1:]` and
ignores its return value, so the console script's `main()` (which returns an exit code) would let
a failed run look successful. This one raises `SystemExit` with the code instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from agentbatch.cli import main as cli_main

    code = cli_main(sys.argv[1:] if argv is None else argv)
    if code:
        raise SystemExit(code)
