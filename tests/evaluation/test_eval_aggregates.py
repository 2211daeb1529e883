"""Metrics and A/B comparison on hand-built scores tables, and the report built from them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from agentbatch.evaluation.comparison import compare_scores
from agentbatch.evaluation.metrics import MetricOptions, compute_metrics
from agentbatch.evaluation.report.content import compare_report, eval_report
from agentbatch.evaluation.report.html import to_html
from agentbatch.evaluation.report.markdown import to_markdown
from agentbatch.evaluation.report.svg import Bars, bar_chart, histogram
from agentbatch.evaluation.run import CompareResult, EvalResult, _display_endpoint
from agentbatch.evaluation.scoring import Scored, ScorerInfo
from agentbatch.spec.loader import load_job_text

EXACT = ScorerInfo("exact", "exact_match", True, True, "", (0.0, 1.0))
LATENCY = ScorerInfo("latency", "latency", False, False, "ms", None)
JUDGE = ScorerInfo("judge", "llm_judge", False, True, "", (1.0, 5.0))


def scored(
    exact: list[float | None], latency: list[float | None], judge: list[float | None]
) -> Scored:
    n = len(exact)
    table = pa.table(
        {
            "id": list(range(1, n + 1)),
            "label": ["a" if i % 2 else "b" for i in range(n)],
            "response": [f"<b>answer {i}</b> | pipe" for i in range(n)],
            "agent_error": [None] * n,
            "exact": pa.array(exact, pa.float64()),
            "exact_error": pa.array(
                [None if v is not None else "no expected value" for v in exact], pa.string()
            ),
            "latency": pa.array(latency, pa.float64()),
            "latency_error": pa.array([None] * n, pa.string()),
            "judge": pa.array(judge, pa.float64()),
            "judge_error": pa.array([None] * n, pa.string()),
        }
    )
    return Scored(table, (EXACT, LATENCY, JUDGE), key="id", expected="label", group_by="label")


def test_metrics_overall_and_per_group() -> None:
    data = scored([1.0, 0.0, 1.0, None], [10.0, 20.0, 30.0, 40.0], [5.0, 1.0, 4.0, 3.0])
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    metrics = compute_metrics(data, MetricOptions(seed=1), variant="a", job="j", evaluated_at=when)
    rows = {(r["scorer"], r["group_value"]): r for r in metrics.to_pylist()}
    exact = rows[("exact", None)]
    assert (exact["rows"], exact["scored"], exact["errors"]) == (4, 3, 1)
    assert exact["mean"] == pytest.approx(2 / 3) and exact["ci_method"] == "wilson"
    latency = rows[("latency", None)]
    assert (
        latency["mean"] == 25.0 and latency["p50"] == 25.0 and latency["ci_method"] == "bootstrap"
    )
    assert latency["higher_is_better"] is False and latency["unit"] == "ms"
    # Group "b" holds the rows at positions 0 and 2, "a" those at 1 and 3.
    assert rows[("exact", "b")]["mean"] == 1.0
    assert rows[("exact", "a")]["scored"] == 1 and rows[("exact", "a")]["mean"] == 0.0
    assert rows[("judge", "a")]["mean"] == 2.0 and rows[("judge", "a")]["group_by"] == "label"
    assert metrics.num_rows == 3 * 3
    assert metrics.column("evaluated_at").to_pylist()[0] == when


def test_a_scorer_with_no_values_has_no_mean() -> None:
    data = scored([None, None], [None, None], [None, None])
    row = compute_metrics(data).to_pylist()[0]
    assert row["scored"] == 0 and row["mean"] is None and row["ci_low"] is None


def test_comparison_counts_wins_by_the_better_direction() -> None:
    a = scored([1.0, 0.0, 1.0, 0.0], [10.0, 50.0, 30.0, 30.0], [5.0, 1.0, 4.0, 3.0])
    b = scored([1.0, 1.0, 0.0, 0.0], [20.0, 40.0, 30.0, 10.0], [5.0, 5.0, 1.0, 3.0])
    comparison = compare_scores(a, b, variant_a="v1", variant_b="v2", top=2)
    assert comparison.counts("exact") == (1, 2, 1)
    # Lower latency wins: row 1 A (10<20), row 2 B (40<50), row 3 tie, row 4 B (10<30).
    assert comparison.counts("latency") == (1, 1, 2)
    assert comparison.counts("judge") == (1, 2, 1)
    latency = next(r for r in comparison.summary.to_pylist() if r["scorer"] == "latency")
    assert latency["delta"] == pytest.approx((20 + 40 + 30 + 10 - 10 - 50 - 30 - 30) / 4)
    # Rows 2 and 3 disagree on exact (1 each) and on the judge (4/4 each); both rank first.
    assert [d["key"] for d in comparison.disagreements] == [2, 3]
    assert comparison.disagreements[0]["scores"]["exact"] == (0.0, 1.0)


def test_unpaired_rows_are_counted_not_compared() -> None:
    a = scored([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    b = scored([0.0, 0.0], [1.0, 1.0], [1.0, 1.0])
    comparison = compare_scores(a, b)
    assert (comparison.paired_rows, comparison.only_a, comparison.only_b) == (2, 1, 0)
    assert comparison.counts("exact") == (2, 0, 0)


JOB = load_job_text(
    """\
name: j
source: {table: main.s.t, key: id, columns: [label]}
request: "q"
agent: {endpoint: e1}
output: {table: main.s.o}
evaluation:
  expected: label
  scorers: [{exact_match: {name: exact}}, {latency: }, {llm_judge: {endpoint: j, name: judge, verdict: scale}}]
""",
    "j.yml",
)


def eval_result(data: Scored, variant: str = "") -> EvalResult:
    metrics = compute_metrics(data, variant=variant)
    return EvalResult(
        job=JOB, variant=variant, endpoint="e1", scored=data, metrics=metrics,
        answers_table="main.s.o", scores_table="main.s.o_scores", metrics_table="main.s.o_metrics",
    )  # fmt: skip


def test_reports_escape_answers_and_hold_well_formed_svg() -> None:
    data = scored([1.0, 0.0, 1.0, 0.0], [10.0, 50.0, 30.0, 30.0], [5.0, 1.0, 4.0, 3.0])
    report = eval_report(eval_result(data))
    html = to_html(report)
    assert "<b>answer" not in html and "&lt;b&gt;answer 1&lt;/b&gt;" in html
    svgs = html.split("<svg")[1:]
    assert len(svgs) >= 3
    for chunk in svgs:
        ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")
    markdown = to_markdown(report)
    assert "&lt;b&gt;answer 1&lt;/b&gt; \\| pipe" in markdown
    assert "| exact | exact_match | 50.0% |" in markdown
    assert "## By label" in markdown and "## Rows failing exact" in markdown


def test_compare_report_lists_wins_and_disagreements() -> None:
    a = eval_result(
        scored([1.0, 0.0, 1.0, 0.0], [10.0, 50.0, 30.0, 30.0], [5.0, 1.0, 4.0, 3.0]), "a"
    )
    b = eval_result(
        scored([1.0, 1.0, 0.0, 0.0], [20.0, 40.0, 30.0, 10.0], [5.0, 5.0, 1.0, 3.0]), "b"
    )
    comparison = compare_scores(a.scored, b.scored)
    markdown = to_markdown(compare_report(CompareResult(a, b, comparison, "main.s.o_comparison")))
    assert (
        "| exact | 50.0% | 50.0% | 0.0 pts | [-75.0 pts, +75.0 pts] | 1 | 2 | 1 | 1 |" in markdown
    )
    assert "| latency | 30 ms | 25 ms | -5 ms | [-15 ms, +5 ms] | 1 | 1 | 2 | 1 |" in markdown
    assert "## Rows where A and B disagree most" in markdown
    assert "exact 0→1" in markdown


def test_endpoints_are_shown_without_credentials() -> None:
    shown = _display_endpoint(
        "apps/x", {"apps/x": "https://user:secret@host.example:8443/p?token=abc"}
    )
    assert shown == "apps/x -> https://host.example:8443/p"
    assert _display_endpoint("https://u:pw@h/x?sig=1", {}) == "https://h/x"


def test_charts_survive_empty_and_odd_data() -> None:
    for chart in (
        bar_chart("t", [], []),
        bar_chart("t", ["a"], [Bars("s", [None])]),
        bar_chart("t <&>", ["x"], [Bars("s", [0.5], [0.4], [0.6])], y_range=(0.0, 1.0)),
        histogram("t", [("s", [])]),
        histogram("t", [("s", [3.0, 3.0, 3.0])]),
        histogram("t", [("a", [1.0, 2.5, 1e6]), ("b", [float("nan"), 2.0])]),
    ):
        ET.fromstring(chart)
