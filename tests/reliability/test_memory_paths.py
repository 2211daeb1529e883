"""Memory flat in the number of rows: the evaluation's scoring holds Python objects for a bounded
number of rows at a time, and a comparison no more than a key and a row number per row.

Measured with tracemalloc (Python objects; Arrow's buffers are not traced, and the scores table an
evaluation returns is Arrow): the peak while scoring 4N rows against the peak for N rows, in the
same test. Before, scoring turned the whole output into Python dicts (456 bytes per added row
here; 1.2 MB per 1,000 rows of peak RSS at 200,000 rows in `python -m bench.memory_paths --paths
eval`), and a comparison did so for both sides (1,717 bytes per added row here).

Scoring now holds one chunk of rows as Python objects (under 1 byte per added row). Pairing two
runs by key is O(rows) by nature: each side's key texts and row numbers (about 230 bytes per
added row); the bound is above that and far below whole rows.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from agentbatch.evaluation.comparison import compare_scores
from agentbatch.evaluation.scoring import Scored, score_table
from agentbatch.spec.loader import load_job_text

JOB = """\
name: e
source: {table: main.s.t, key: id, columns: [label]}
request: "q"
agent: {endpoint: e1}
output: {table: main.s.o}
evaluation:
  expected: label
  scorers:
    - exact_match:
    - contains: {value: bug}
    - error_rate:
    - latency:
"""
ROWS = 10_000
SCORING_BYTES_PER_ADDED_ROW = 64
PAIRING_BYTES_PER_ADDED_ROW = 400


def output_of(rows: int, answer: str = "a bug report") -> pa.Table:
    """An output table as an evaluation reads it: key, expected, answer, error, latency."""
    ids = pa.array(range(rows), pa.int64())
    return pa.table(
        {
            "id": ids,
            "label": pa.array(["bug", "billing"] * (rows // 2), pa.string()),
            "response": pa.array([f"{answer} {i}" for i in range(rows)], pa.string()),
            "error": pa.array([None if i % 10 else "HTTP 500: boom" for i in range(rows)]),
            "latency_ms": pa.array([float(i % 100) for i in range(rows)], pa.float64()),
        }
    )


def traced_peak(work: Callable[[], Any]) -> int:
    """Peak bytes of Python objects while `work` runs (its inputs are built before)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        kept = work()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del kept
    return peak


def growth_per_row(make: Callable[[int], Callable[[], Any]]) -> float:
    small, large = make(ROWS), make(4 * ROWS)
    return (traced_peak(large) - traced_peak(small)) / (3 * ROWS)


def test_scoring_holds_a_bounded_number_of_rows_as_python_objects() -> None:
    job = load_job_text(JOB, "jobs/e.yml")

    def scoring(rows: int) -> Callable[[], Any]:
        output = output_of(rows)
        return lambda: score_table(output, job)

    scored = score_table(output_of(4), job)
    assert scored.table.column("contains").to_pylist() == [0.0, 1.0, 1.0, 1.0]
    assert scored.table.column("latency").to_pylist() == [0.0, 1.0, 2.0, 3.0]
    assert scored.table.column("agent_error").to_pylist() == ["HTTP 500: boom", None, None, None]
    assert growth_per_row(scoring) < SCORING_BYTES_PER_ADDED_ROW


def test_comparing_holds_a_bounded_number_of_rows_as_python_objects() -> None:
    job = load_job_text(JOB, "jobs/e.yml")

    def comparing(rows: int) -> Callable[[], Any]:
        a: Scored = score_table(output_of(rows, "a bug report"), job)
        b: Scored = score_table(output_of(rows, "a billing question"), job)
        return lambda: compare_scores(a, b, top=5)

    a = score_table(output_of(6, "a bug report"), job)
    b = score_table(output_of(6, "a billing question"), job)
    found = compare_scores(a, b, top=2)
    assert found.paired_rows == 6
    assert [d["key"] for d in found.disagreements] == [1, 2]  # the first of equal distances
    assert found.disagreements[0] == {
        "key": 1,
        "expected": "billing",
        "response_a": "a bug report 1",
        "response_b": "a billing question 1",
        "error_a": None,
        "error_b": None,
        "scores": {"exact_match": (0.0, 0.0), "contains": (1.0, 0.0), "error_rate": (0.0, 0.0)},
        "disagreement": 1.0,
    }
    assert found.summary.column("wins_a").to_pylist() == [0, 5, 0, 0]
    assert growth_per_row(comparing) < PAIRING_BYTES_PER_ADDED_ROW
