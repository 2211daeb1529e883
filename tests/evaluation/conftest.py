"""Fixtures for evaluation tests: a project folder like a fresh clone, and loopback agents."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.eval_servers import ROOT, TICKETS_CSV

from agentbatch.testing.agent_server import AgentServer, serve_agent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder holding the example evaluation job and the sample tickets."""
    root = tmp_path / "project"
    (root / "jobs").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(ROOT / "jobs" / "eval_triage.yml", root / "jobs")
    shutil.copy(TICKETS_CSV, root / "data" / "tickets.csv")
    return root


@pytest.fixture
def tickets_table(project: Path) -> dict[str, str]:
    return {"main.support.tickets": str(project / "data" / "tickets.csv")}


@pytest.fixture
def demo_agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server
