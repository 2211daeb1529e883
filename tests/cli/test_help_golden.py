"""`--help` of every command is part of the public interface: it changes only on purpose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.snapshots import expect_saved

GOLDEN = Path(__file__).parent / "golden"
COMMANDS = [
    "main",
    "validate",
    "render",
    "plan",
    "run",
    "estimate",
    "compile",
    "eval",
    "compare",
    "bundle",
    "schema",
    "show",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_unchanged(command: str) -> None:
    argv = [] if command == "main" else [command]
    shown = subprocess.run(
        [sys.executable, "-m", "agentbatch", *argv, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"},
    ).stdout
    expect_saved(GOLDEN / f"help_{command}.txt", shown, switch="UPDATE_GOLDEN")
