"""The examples of every command's `--help` run as written, in a copy of the project, against the
demo agent (`http://127.0.0.1:8000`, `:8001` and `:8002` are rewritten to demo agents started
here): a newcomer copies them first. An example that needs a Databricks workspace, or a file the
user is meant to bring, is listed in NEEDS with the reason; every other one must exit 0."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbatch.cli.main import build_parser
from agentbatch.testing.agent_server import AgentServer, serve_agent
from tests.support.databricks_env import without_credentials

ROOT = Path(__file__).resolve().parents[2]
AGENT_URLS = ("http://127.0.0.1:8000", "http://127.0.0.1:8001", "http://127.0.0.1:8002")
# Words that mark an example as one that cannot run on this machine, and why.
NEEDS = {
    "--target databricks-sql": "a SQL warehouse",
    "--mlflow": "an MLflow tracking server",
    "apps/triage-v1": "two agents deployed on Databricks Apps",
    "jobs/triage_v1.yml": "two job files of the user's own",
}


def examples(command: str) -> list[str]:
    """The example command lines (continuations joined) of a command's --help, in order."""
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = subcommands.choices[command]
    lines = (sub.epilog or "").split("examples:", 1)[-1].splitlines()
    found: list[str] = []
    pending = ""
    for line in lines:
        text = line.strip()
        if not pending and not text.startswith("agentbatch "):
            if found and not text:
                break  # the examples end at the first blank line after them
            continue
        pending += text.split(" #", 1)[0].removesuffix("\\").strip() + " "
        if not text.endswith("\\"):
            found.append(pending.strip())
            pending = ""
    return found


COMMANDS = [
    "validate",
    "render",
    "plan",
    "run",
    "estimate",
    "compile",
    "show",
    "bundle",
    "eval",
    "compare",
]


@pytest.fixture(scope="module")
def agents() -> Iterator[list[AgentServer]]:
    with serve_agent() as a, serve_agent() as b, serve_agent() as c:
        yield [a, b, c]


@pytest.mark.slow  # every example as a subprocess
def test_every_help_example_runs_as_written(tmp_path: Path, agents: list[AgentServer]) -> None:
    for name in ("jobs", "sqltemplates", "resources", "agentbatch"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "databricks.yml", tmp_path)
    env = {**without_credentials(os.environ), "NO_COLOR": "1", "COLUMNS": "120"}
    # What `make demo` leaves, which an example of `show` reads.
    demo = subprocess.run(
        [
            *(sys.executable, "-m", "agentbatch", "run", "jobs/ticket_triage.yml"),
            *("--table", "main.support.tickets=agentbatch/data/support_tickets.csv"),
            *("--table", "main.support.ticket_triage=.agentbatch/out/ticket_triage.parquet"),
            *("--endpoint", f"apps/triage-agent={agents[0].url}"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    ran = 0
    for command in COMMANDS:
        for example in examples(command):
            if any(word in example for word in NEEDS):
                continue
            text = example
            for url, agent in zip(AGENT_URLS, agents, strict=True):
                text = text.replace(url, agent.url)
            words = shlex.split(text.split(" > ", 1)[0])[1:]
            args = [str(m) for w in words for m in (sorted(tmp_path.glob(w)) if "*" in w else [w])]
            done = subprocess.run(
                [sys.executable, "-m", "agentbatch", *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, f"{command} --help: {example}\n{done.stderr[-2000:]}"
            assert "Traceback" not in done.stderr, example
            ran += 1
    assert ran >= 15


def test_the_collector_reads_the_examples() -> None:
    found = examples("run")
    assert found[0].startswith("agentbatch run jobs/ticket_triage.yml --table ")
    assert all(example.startswith("agentbatch run ") for example in found)
