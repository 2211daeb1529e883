"""Comparing two runs pairs their rows by the text of the key, refuses to compare nothing, and
says how many rows each side had alone (report and --json)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pytest

from agentbatch.errors import UsageError
from agentbatch.evaluation.comparison import compare_scores
from agentbatch.evaluation.metrics import MetricOptions, compute_metrics
from agentbatch.evaluation.report.content import compare_report
from agentbatch.evaluation.report.markdown import to_markdown
from agentbatch.evaluation.results import CompareResult, EvalResult
from agentbatch.evaluation.scoring import Scored, ScorerInfo
from agentbatch.spec.loader import load_job_text

EXACT = ScorerInfo("exact", "exact_match", True, True, "", (0.0, 1.0))

JOB = load_job_text(
    """\
name: j
source: {table: main.s.t, key: id, columns: [label]}
request: "q"
agent: {endpoint: e1}
output: {table: main.s.o}
evaluation:
  expected: label
  scorers: [{exact_match: {name: exact}}]
""",
    "jobs/j.yml",
)


def scored(keys: list[Any], exact: list[float], labels: list[str] | None = None) -> Scored:
    labels = labels or ["x"] * len(keys)
    table = pa.table(
        {
            "id": keys,
            "label": labels,
            "response": ["r"] * len(keys),
            "agent_error": pa.array([None] * len(keys), pa.string()),
            "exact": pa.array(exact, pa.float64()),
            "exact_error": pa.array([None] * len(keys), pa.string()),
        }
    )
    return Scored(table, (EXACT,), key="id", expected="label", group_by="label")


def test_keys_read_as_numbers_and_as_text_pair() -> None:
    """One source holds the key as BIGINT, the other (a Parquet file) as text: same rows."""
    a = scored(pa.array([1, 2, 3], pa.int64()), [1.0, 1.0, 0.0])
    b = scored(pa.array(["1", "2", "3"], pa.string()), [0.0, 1.0, 1.0])
    comparison = compare_scores(a, b)
    assert (comparison.paired_rows, comparison.only_a, comparison.only_b) == (3, 0, 0)
    assert comparison.counts("exact") == (1, 1, 1)
    # The rows listed keep A's own key values.
    assert sorted(entry["key"] for entry in comparison.disagreements) == [1, 3]


def test_keys_pair_by_their_canonical_text_only() -> None:
    from agentbatch.evaluation.comparison import key_text

    assert key_text(1) == key_text("1") == key_text(1.0) == "1"
    assert key_text("01") != key_text(1) and key_text(" 1") != key_text(1)
    assert key_text(None) is None
    a = scored(pa.array([1, 2], pa.int64()), [1.0, 1.0])
    b = scored(pa.array(["01", "2"], pa.string()), [1.0, 1.0])
    comparison = compare_scores(a, b)
    assert (comparison.paired_rows, comparison.only_a, comparison.only_b) == (1, 1, 1)


def test_no_paired_row_is_an_error_that_shows_the_keys() -> None:
    a = scored(pa.array([1, 2], pa.int64()), [1.0, 1.0])
    b = scored(pa.array(["T-1", "T-2"], pa.string()), [1.0, 1.0])
    with pytest.raises(UsageError, match=r"no row of a pairs with a row of b") as raised:
        compare_scores(a, b)
    assert "int64: 1, 2" in str(raised.value) and "'T-1'" in str(raised.value)


def result(data: Scored, variant: str) -> EvalResult:
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    metrics = compute_metrics(
        data, MetricOptions(seed=1), variant=variant, job="j", evaluated_at=when
    )
    return EvalResult(
        job=JOB, variant=variant, endpoint="e1", scored=data, metrics=metrics,
        answers_table="main.s.o", scores_table="main.s.o_scores", metrics_table="main.s.o_metrics",
    )  # fmt: skip


def test_group_rows_and_json_show_both_sides() -> None:
    a = result(scored([1, 2, 3, 4], [1.0, 1.0, 0.0, 1.0], ["x", "x", "x", "y"]), "a")
    b = result(scored([1, 2, 4, 5, 6], [1.0, 0.0, 1.0, 1.0, 1.0], ["x", "x", "y", "y", "y"]), "b")
    compared = CompareResult(a, b, compare_scores(a.scored, b.scored), "main.s.o_comparison")
    markdown = to_markdown(compare_report(compared))
    # A holds 3 rows labelled x and 1 labelled y; B 2 and 3.
    assert "| label | rows a / b |" in markdown
    assert "| x | 3 / 2 |" in markdown and "| y | 1 / 3 |" in markdown

    import io
    from contextlib import redirect_stdout

    from agentbatch.cli.evaluation import _print_compare

    out = io.StringIO()
    with redirect_stdout(out):
        _print_compare(compared, as_json=True)
    payload = json.loads(out.getvalue())
    assert (payload["paired_rows"], payload["only_in_a"], payload["only_in_b"]) == (3, 1, 2)
