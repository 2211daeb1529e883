"""Metrics and A/B comparison on hand-built scores tables, and the report built from them."""

from __future__ import annotations

import re
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


SVG = "{http://www.w3.org/2000/svg}"


def charts(html: str) -> dict[str, ET.Element]:
    """The report's inline SVG charts by title; each must parse as XML."""
    found = {}
    for chunk in html.split("<svg")[1:]:
        svg = ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")
        found[svg.get("aria-label", "")] = svg
    return found


def bars(svg: ET.Element) -> dict[str, float]:
    """Drawn bars (rects carrying a tooltip): tooltip text -> height in pixels."""
    return {
        title.text or "": float(rect.get("height", "nan"))
        for rect in svg.iter(f"{SVG}rect")
        if (title := rect.find(f"{SVG}title")) is not None
    }


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text")]


def full_height(svg: ET.Element) -> float:
    """Pixels from the lowest to the highest grid line: the whole y range of a bar chart."""
    ys = [
        float(line.get("y1", "nan"))
        for line in svg.iter(f"{SVG}line")
        if line.get("stroke") == "#e5e5e5"
    ]
    return max(ys) - min(ys)


def histogram_rows(svg: ET.Element) -> dict[tuple[str, float, float], int]:
    """(series, bin low, bin high) -> rows, read from the bars' tooltips."""
    found = {}
    for title in bars(svg):
        match = re.fullmatch(r"(.*): (\d+) row\(s\) in \[(\S+), (\S+)\)", title)
        assert match, title
        name, rows, low, high = match.groups()
        found[(name, float(low.replace(",", "")), float(high.replace(",", "")))] = int(rows)
    return found


def test_reports_escape_answers_and_chart_the_metrics() -> None:
    latencies = [10.0, 50.0, 30.0, 30.0]
    data = scored([1.0, 0.0, 1.0, 0.0], latencies, [5.0, 1.0, 4.0, 3.0])
    result = eval_result(data)
    metrics = {(r["scorer"], r["group_value"]): r["mean"] for r in result.metrics.to_pylist()}
    html = to_html(eval_report(result))
    assert "<b>answer" not in html and "&lt;b&gt;answer 1&lt;/b&gt;" in html
    found = charts(html)
    # The pass-rate chart: one bar per proportion scorer, as tall as its mean on a 0-1 axis.
    overall = found["Share of rows passing, per scorer"]
    assert "exact" in texts(overall)
    (title, height), *others = bars(overall).items()
    assert not others and title == f"j exact: {metrics[('exact', None)]:g}"
    assert height == pytest.approx(metrics[("exact", None)] * full_height(overall), abs=0.2)
    # Per label: each group's bar is its own mean.
    by_label = found["exact by label"]
    for group in ("a", "b"):
        drawn = bars(by_label)[f"j {group}: {metrics[('exact', group)]:g}"]
        assert drawn == pytest.approx(metrics[("exact", group)] * full_height(by_label), abs=0.2)
    # The latency histogram: every bin holds exactly the rows whose latency falls in it.
    rows = histogram_rows(found["latency (ms)"])
    assert sum(rows.values()) == len(latencies)
    for (_, low, high), count in rows.items():
        assert count == sum(low <= v < high for v in latencies)
    assert set(found) == {
        "Share of rows passing, per scorer",
        "exact by label",
        "latency (ms)",
        "judge",
    }
    markdown = to_markdown(eval_report(result))
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
        "| exact | 4 | 50.0% | 50.0% | 0.0 pts | [-75.0 pts, +75.0 pts] | 1 | 2 | 1 | 1 |"
        in markdown
    )
    assert "| latency | 4 | 30 ms | 25 ms | -5 ms | [-15 ms, +5 ms] | 1 | 1 | 2 | 1 |" in markdown
    assert "## Rows where A and B disagree most" in markdown
    assert "exact 0→1" in markdown


def test_endpoints_are_shown_without_credentials() -> None:
    shown = _display_endpoint(
        "apps/x", {"apps/x": "https://user:secret@host.example:8443/p?token=abc"}
    )
    assert shown == "apps/x -> https://***@host.example:8443/p?token=***"
    assert _display_endpoint("https://u:pw@h/x?sig=1", {}) == "https://***@h/x?sig=***"


def test_charts_survive_empty_and_odd_data() -> None:
    """Each chart is well-formed SVG and draws what its data holds, and nothing it does not."""

    def chart(text: str) -> ET.Element:
        svg = ET.fromstring(text)
        assert svg.tag == f"{SVG}svg"
        return svg

    # No categories, or only a missing value: a titled frame without a single bar.
    empty = chart(bar_chart("t", [], []))
    assert bars(empty) == {} and texts(empty)[0] == "t"
    missing = chart(bar_chart("t", ["a"], [Bars("s", [None])]))
    assert bars(missing) == {} and "a" in texts(missing)
    # Markup in a title is text, escaped in the SVG source and intact once parsed.
    source = bar_chart("t <&>", ["x"], [Bars("s", [0.5], [0.4], [0.6])], y_range=(0.0, 1.0))
    assert "t &lt;&amp;&gt;" in source
    odd = chart(source)
    assert odd.get("aria-label") == "t <&>" and texts(odd)[0] == "t <&>"
    assert bars(odd) == {"s x: 0.5": pytest.approx(0.5 * full_height(odd), abs=0.2)}
    assert len(list(odd.iter(f"{SVG}path"))) == 1  # the whisker from 0.4 to 0.6
    # A histogram of nothing says so.
    nothing = chart(histogram("t", [("s", [])]))
    assert bars(nothing) == {} and "no values" in texts(nothing)
    # One repeated value: one bar with every row, on a bin around the value.
    same = histogram_rows(chart(histogram("t", [("s", [3.0, 3.0, 3.0])])))
    assert len(same) == 1
    ((name, low, high), count) = next(iter(same.items()))
    assert name == "s" and count == 3 and low <= 3.0 < high
    # A far outlier and a NaN: every finite value is counted once, the NaN not at all.
    series = [("a", [1.0, 2.5, 1e6]), ("b", [float("nan"), 2.0])]
    wide = chart(histogram("t", series))
    rows = histogram_rows(wide)
    assert sum(c for (n, _, _), c in rows.items() if n == "a") == 3
    assert sum(c for (n, _, _), c in rows.items() if n == "b") == 1
    assert {"a", "b"} <= set(texts(wide))  # the legend names both series


def test_long_category_names_stay_apart_on_the_axis() -> None:
    """Labels are cut to fit under their bars, never into one label for two categories:
    scorers and groups that differ only at the end keep their ends; names alike at both ends
    are numbered. Each bar's tooltip keeps the whole name."""
    names = [
        "judge_correctness_model_a",
        "judge_correctness_model_b",
        "short",
        "prefix_xxxxxxxxxxxxxxxxxxx_suffix",
        "prefix_yyyyyyyyyyyyyyyyyyy_suffix",
    ]
    values = [0.1, 0.2, 0.3, 0.4, 0.5]
    svg = ET.fromstring(bar_chart("t", names, [Bars("s", values)]))
    labels = texts(svg)[-len(names) :]
    assert len(set(labels)) == len(names)
    assert all(len(label) <= 18 for label in labels)
    assert labels[2] == "short"
    assert labels[0].endswith("model_a") and labels[1].endswith("model_b")
    assert set(bars(svg)) == {f"s {n}: {v}" for n, v in zip(names, values, strict=True)}
