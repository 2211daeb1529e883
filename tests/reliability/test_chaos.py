"""Chaos: kill -9 a real job at random moments against a faulty agent, resume, check invariants.

See chaos.py for the invariants. The quick test runs two trials (one JSON, one streamed); the
slow one runs twenty seeds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .chaos import TrialReport, run_trial, sum_reports
from .conftest import record_figures
from .processes import AgentProcess

# Trials run two at a time (the runs mostly wait on the agent), each lane with its own server.
LANES = 2


def run_lane(root: Path, seeds: list[int]) -> list[TrialReport]:
    agent = AgentProcess([], root / "agent.log")
    try:
        return [run_trial(agent, root / f"trial-{seed}", seed) for seed in seeds]
    finally:
        agent.stop()


def run_trials(root: Path, seeds: list[int]) -> list[TrialReport]:
    lanes = [seeds[i::LANES] for i in range(LANES)]
    for i in range(LANES):
        (root / f"lane-{i}").mkdir()
    with ThreadPoolExecutor(LANES) as pool:
        futures = [pool.submit(run_lane, root / f"lane-{i}", lane) for i, lane in enumerate(lanes)]
        return [report for future in futures for report in future.result()]


def check(reports: list[TrialReport]) -> dict[str, object]:
    figures = sum_reports(reports)
    problems = [f"seed {r.seed}: {p}" for r in reports for p in r.problems]
    assert not problems, "\n".join(problems[:20])
    assert figures["rows_lost"] == 0
    assert figures["duplicate_keys"] == 0
    assert figures["resent_after_answer"] == 0
    assert figures["kills_survived"] >= len(reports)
    # The trials did meet trouble: faults of every kind the mix asks for were injected.
    assert figures["faults_injected"] > 0
    return figures


def test_chaos_two_trials(tmp_path: Path) -> None:
    figures = check(run_trials(tmp_path, [1, 2]))
    record_figures("chaos (quick)", figures)


@pytest.mark.slow
def test_chaos_twenty_seeds(tmp_path: Path) -> None:
    reports = run_trials(tmp_path, list(range(100, 120)))
    figures = check(reports)
    record_figures("chaos (20 seeds)", figures)
    assert figures["stream_trials"] == 10
    kinds = set(figures["faults_by_kind"])  # type: ignore[call-overload]
    assert {"rate_limit", "rate_limit_no_retry_after", "server_error", "unavailable"} <= kinds
    assert {"connection_reset", "hang", "malformed_json", "truncated_stream"} <= kinds
    assert {"slow_stream", "stream_error"} <= kinds
