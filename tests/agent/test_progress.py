"""Run statistics and progress reporting."""

from __future__ import annotations

import logging
import random

import pytest

from agentbatch.agent.progress import LogProgress, RichProgress, default_progress, summary_line
from agentbatch.agent.stats import BulkStats, LatencyHistogram


def test_latency_percentiles_are_within_the_bucket_width() -> None:
    rng = random.Random(0)
    samples = [rng.lognormvariate(4, 1) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for s in samples:
        histogram.add(s)
    ordered = sorted(samples)
    for q in (0.5, 0.95):
        exact = ordered[int(q * (len(ordered) - 1))]
        assert histogram.percentile(q) == pytest.approx(exact, rel=0.06)
    assert LatencyHistogram().percentile(0.5) is None


def test_a_few_rows_p95_is_their_slowest() -> None:
    histogram = LatencyHistogram()
    for ms in (4.2, 4.4, 115.0):
        histogram.add(ms)
    assert histogram.percentile(0.95) == pytest.approx(115.0, rel=0.03)
    assert histogram.percentile(0.5) == pytest.approx(4.4, rel=0.03)


def test_stats_as_dict() -> None:
    stats = BulkStats(
        rows_seen=10, sent=8, reused=2, ok=9, errors=1, requests=9, retries=1, wall_s=2.0
    )
    stats.errors_by_kind["http_400"] += 1
    stats.latency.add(100.0)
    d = stats.as_dict()
    assert d["rows_per_s"] == 5.0
    assert d["errors_by_kind"] == {"http_400": 1}
    assert d["p50_latency_ms"] == pytest.approx(100.0, rel=0.05)
    assert set(d) >= {
        "rows_seen",
        "sent",
        "reused",
        "ok",
        "errors",
        "retries",
        "http_429",
        "p95_latency_ms",
        "input_tokens",
        "output_tokens",
        "wall_s",
    }


def test_log_progress_reports_lines(caplog: pytest.LogCaptureFixture) -> None:
    reporter = LogProgress(interval_s=0.0)
    stats = BulkStats(ok=5, errors=1, reused=2, wall_s=1.0)
    with caplog.at_level(logging.INFO):
        reporter.start(100)
        reporter.update(stats)
        reporter.finish(stats)
    # `reused`: answered from the checkpoint (the summary's `skipped` are rows the table holds)
    assert "6/100 rows done (5 ok, 1 errors, 2 reused)" in caplog.text
    assert "ETA" in caplog.text and "finished" in caplog.text


def test_summary_line_without_total() -> None:
    assert summary_line(BulkStats(ok=3)).startswith("3 rows done")


def test_rich_progress_shows_the_final_counts_and_the_default_is_logs_off_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = RichProgress()
    reporter.start(10)
    reporter.update(BulkStats(ok=4, wall_s=1.0))
    final = BulkStats(ok=9, errors=1, wall_s=2.0)
    reporter.finish(final)
    # Off a terminal the bar is drawn once, when it stops: with the final numbers.
    shown = " ".join(capsys.readouterr().out.split())
    assert f"{final.done}/10 {final.errors} errors {final.rows_per_s:.0f} rows/s" in shown
    assert isinstance(default_progress(), LogProgress)  # pytest captures stderr: not a TTY
