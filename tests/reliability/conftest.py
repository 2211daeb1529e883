"""Shared fixtures of the reliability suite, and the figures it reports at the end of a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent

from .processes import AgentProcess

# Tests put the figures they measured here; they are printed in the terminal summary.
FIGURES: dict[str, dict[str, Any]] = {}


def record_figures(name: str, figures: dict[str, Any]) -> None:
    FIGURES[name] = figures


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentServer]:
    """The demo agent on loopback, shared by a module's tests (a module may define its own)."""
    with serve_agent() as server:
        yield server


@pytest.fixture(scope="module")
def agent_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """The fault-injecting agent server in its own process (faults set per test via /_config)."""
    log = tmp_path_factory.mktemp("agent") / "agent.log"
    agent = AgentProcess([], log)
    try:
        yield agent
    finally:
        agent.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, figures in FIGURES.items():
        terminalreporter.write_line(f"{name}:")
        for key, value in figures.items():
            terminalreporter.write_line(f"  {key}: {value}")


ROOT = Path(__file__).resolve().parents[2]
