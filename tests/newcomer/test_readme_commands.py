"""Every shell command in README.md and docs/*.md runs, as written, against the demo agent.

The commands are collected from the Markdown's `bash` / `sh` / `shell` code blocks (a command is a
line, its `\\` continuations, and a here-document's body) and run in order, one file per temporary
copy of the project, with `bash -c`. The demo agent answers at the URLs the docs use
(`http://127.0.0.1:8000` and `:8001` are rewritten to two demo agents started here). A command that
cannot run here is listed in NOT_IN_CI with the reason; anything else must exit 0 without a
traceback. A long-running server command is started, must print its URL and answer, then stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent
from tests.support.databricks_env import without_credentials

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell"}
TIMEOUT_S = 300

# Commands (by how they start) that cannot run in CI, and why.
NOT_IN_CI = {
    "make demo": "creates the project virtualenv from a package index; the demo it runs is "
    "tests/newcomer/test_demo.py",
    "make test": "runs this whole suite (this test is part of it)",
    "make test-fast": "runs most of this suite (this test is part of it)",
    "make check": "runs this whole suite, plus lint and types, which CI runs separately",
    "make bench": "minutes of load benchmarks; tests/bench covers the harness",
    "pip install": "needs a package index; CI tests the installed project",
    "databricks bundle deploy": "needs a Databricks workspace and the databricks CLI",
    "databricks bundle run": "needs a Databricks workspace and the databricks CLI",
}
# Commands that serve until stopped: started, checked, stopped.
SERVERS = ("python -m agentbatch.testing.agent_server",)
AGENT_URLS = ("http://127.0.0.1:8000", "http://127.0.0.1:8001")


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str

    @property
    def head(self) -> str:
        return " ".join(self.text.split("#", 1)[0].split())

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text.splitlines()[0]}"


def collect(path: Path) -> list[Command]:
    """The shell commands of a Markdown file's bash/sh/shell code blocks, in order."""
    commands: list[Command] = []
    lines = path.read_text().splitlines()
    language: str | None = None
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if line.startswith("```"):
            language = None if language is not None else (line[3:].strip() or "text")
            continue
        if language not in SHELL or not line.strip() or line.lstrip().startswith("#"):
            continue
        start, text = number, [line]
        while text[-1].rstrip().endswith("\\"):
            text.append(lines[number])
            number += 1
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            while lines[number].strip() != heredoc.group(1):
                text.append(lines[number])
                number += 1
            text.append(lines[number])
            number += 1
        commands.append(Command(path.name, start, "\n".join(text)))
    return commands


def _excluded(command: Command) -> str | None:
    for head, reason in NOT_IN_CI.items():
        if command.head == head or command.head.startswith(head + " "):
            return reason
    return None


@pytest.fixture(scope="module")
def agents() -> Iterator[tuple[AgentServer, AgentServer]]:
    with serve_agent() as a, serve_agent() as b:
        yield a, b


def _project_copy(tmp: Path) -> Path:
    """The project's tracked files (what a fresh clone has), without generated folders."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    copy = tmp / "project"
    for name in filter(None, (item.decode() for item in listed)):
        source = ROOT / name
        if source.is_file() and not name.startswith(("tests/", "bench/")):
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def _env() -> dict[str, str]:
    env = without_credentials(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(NO_COLOR="1", COLUMNS="160", PYTHONUNBUFFERED="1")
    return env


def _serve(command: Command, cwd: Path) -> None:
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command.text}"],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # the server's first line: its base URL
        assert url.startswith("http://127.0.0.1:"), f"{command}: printed {url!r}"
        with urllib.request.urlopen(url + "/health", timeout=30) as reply:
            assert reply.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow  # tens of seconds: every documented command, as a subprocess
@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_command_in_the_docs_runs(
    doc: Path, tmp_path: Path, agents: tuple[AgentServer, AgentServer]
) -> None:
    cwd = _project_copy(tmp_path)
    ran = 0
    for command in collect(doc):
        if _excluded(command) is not None:
            continue
        if command.head.startswith(SERVERS):
            _serve(command, cwd)
            ran += 1
            continue
        text = command.text
        for placeholder, agent in zip(AGENT_URLS, agents, strict=True):
            text = text.replace(placeholder, agent.url)
        done = subprocess.run(
            ["bash", "-c", f"set -eo pipefail\n{text}"],
            cwd=cwd,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
        ran += 1
    assert ran or not collect(doc)


def test_the_docs_have_commands_and_every_exclusion_is_used() -> None:
    commands = [command for doc in DOCS for command in collect(doc)]
    assert len(commands) >= 20
    used = {head for head in NOT_IN_CI for c in commands if _excluded(c) == NOT_IN_CI[head]}
    assert used == set(NOT_IN_CI), set(NOT_IN_CI) - used
    # The first-job walkthrough is among the commands run, not excluded.
    heads = [c.head for c in commands if _excluded(c) is None]
    assert any(h.startswith("agentbatch run jobs/reviews.yml") for h in heads)
    assert any(h.startswith(SERVERS) for h in heads)


def test_the_collector_reads_continuations_and_here_documents(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n```bash\n# a comment\nagentbatch run a \\\n    --b c   # why\n"
        "cat > f <<'EOF'\nx: 1\nEOF\n```\n```yaml\nnot: a command\n```\n"
    )
    assert [c.text for c in collect(doc)] == [
        "agentbatch run a \\\n    --b c   # why",
        "cat > f <<'EOF'\nx: 1\nEOF",
    ]
    assert [c.line for c in collect(doc)] == [4, 6]
