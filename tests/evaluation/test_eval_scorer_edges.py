"""Edge cases of the scorers: rows the agent failed on, numpy results of custom scorers, and
`contains` with nothing to look for."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from agentbatch.evaluation.scorers import (
    ContainsScorer,
    CustomScorer,
    ExactMatchScorer,
    NumericScorer,
    Score,
)
from agentbatch.evaluation.scoring import score_table
from agentbatch.spec import evaluation as spec
from agentbatch.spec.loader import load_job_text

PROBE = "eval_edge_probe"


@pytest.fixture
def probe() -> Iterator[types.ModuleType]:
    module = types.ModuleType(PROBE)
    sys.modules[PROBE] = module
    try:
        yield module
    finally:
        del sys.modules[PROBE]


def row(response: Any, expected: Any = None) -> dict[str, Any]:
    return {"id": 1, "response": response, "expected": expected, "error": None}


# -- a row without an expected value cannot be graded, answered or not -------------------------


def test_a_missing_expected_value_is_known_before_the_agent_errors_policy() -> None:
    exact = ExactMatchScorer("m", spec.ExactMatch(), "expected")
    failed = {"id": 1, "response": None, "expected": None, "error": "HTTP 500"}
    assert exact.missing_expected(failed) == Score(error="no expected value in column 'expected'")
    assert exact.missing_expected(row("bug", "bug")) is None
    numeric = NumericScorer("n", spec.Numeric(), "expected")
    assert numeric.missing_expected(failed) is not None


FAILED_JOB = """\
name: e
source: {table: main.s.t, key: id, columns: [label]}
request: "q"
agent: {endpoint: e1}
output: {table: main.s.o}
evaluation:
  expected: label
  scorers:
    - exact_match:
"""


def test_a_failed_row_without_an_expected_value_is_a_row_error_not_a_zero() -> None:
    job = load_job_text(FAILED_JOB, "jobs/e.yml")
    output = pa.table(
        {
            "id": [1, 2],
            "label": pa.array([None, None], pa.string()),
            "response": ["bug", None],
            "error": [None, "HTTP 500: boom"],
        }
    )
    rows = score_table(output, job).table.to_pylist()
    for scored in rows:
        assert scored["exact_match"] is None
        assert scored["exact_match_error"] == "no expected value in column 'label'"


# -- a failed row never gets the best score of a lower-is-better custom scorer -----------------


def test_a_lower_is_better_custom_scorer_leaves_failed_rows_unscored(
    probe: types.ModuleType,
) -> None:
    probe.mistakes = lambda response, expected, row: 0 if response == expected else 3  # type: ignore[attr-defined]
    function = f"{PROBE}:mistakes"
    assert spec.Custom(function=function).lowest == 0.0
    assert spec.Custom(function=function, higher_is_better=False).lowest is None
    assert spec.Custom(function=function, higher_is_better=False, binary=True).lowest == 1.0
    assert spec.Custom(function=function, higher_is_better=False, lowest=10).lowest == 10.0
    job = load_job_text(
        FAILED_JOB.replace(
            "    - exact_match:\n",
            f'    - custom: {{function: "{function}", name: mistakes, higher_is_better: false}}\n',
        ),
        "jobs/e.yml",
    )
    output = pa.table(
        {
            "id": [1, 2],
            "label": ["bug", "bug"],
            "response": ["bug", None],
            "error": [None, "HTTP 500: boom"],
        }
    )
    rows = score_table(output, job).table.to_pylist()
    assert rows[0]["mistakes"] == 0.0
    assert rows[1]["mistakes"] is None
    assert rows[1]["mistakes_error"] == "the agent failed: HTTP 500: boom"


# -- custom scorers may return numpy values ------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (np.bool_(True), Score(1.0)),
        (np.bool_(False), Score(0.0)),
        (np.int64(3), Score(3.0)),
        (np.float32(0.5), Score(0.5)),
        (np.array(2.5), Score(2.5)),
        (True, Score(1.0)),
        (7, Score(7.0)),
    ],
)
def test_a_custom_scorer_may_return_numpy_numbers(
    probe: types.ModuleType, result: Any, expected: Score
) -> None:
    probe.f = lambda response, expected, row: result  # type: ignore[attr-defined]
    scorer = CustomScorer("c", spec.Custom(function=f"{PROBE}:f"), None)
    assert scorer.score(row("x")) == expected


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (np.array([1, 2]), "returned ndarray, not a number"),
        (np.float64("nan"), "returned nan, not a finite number"),
        (float("inf"), "returned inf, not a finite number"),
        (1j, "returned complex, not a number"),
    ],
)
def test_a_custom_scorer_result_that_is_not_a_real_number_is_a_row_error(
    probe: types.ModuleType, result: Any, message: str
) -> None:
    probe.f = lambda response, expected, row: result  # type: ignore[attr-defined]
    scorer = CustomScorer("c", spec.Custom(function=f"{PROBE}:f"), None)
    assert scorer.score(row("x")).error == f"{PROBE}:f {message}"


# -- contains needs something to look for --------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_contains_with_a_blank_expected_value_is_a_row_error(blank: str) -> None:
    scorer = ContainsScorer("c", spec.Contains(), "expected")
    assert scorer.score(row("totally wrong", blank)) == Score(
        error="no expected value in column 'expected'"
    )
    assert scorer.score(row("a bug report", "bug")) == Score(1.0)


def test_contains_refuses_a_blank_fixed_value() -> None:
    with pytest.raises(ValidationError, match="blank"):
        spec.Contains(value=" ")
    assert ContainsScorer("c", spec.Contains(value="bug"), None).score(row("a bug")) == Score(1.0)


# -- typed answers are scored as the agent's JSON gave them ----------------------------------------

TYPED = "STRUCT<amount: DECIMAL(10,2), share: DOUBLE, due: DATE, at: TIMESTAMP>"


def stored_answer(text: str) -> dict[str, Any]:
    """A typed answer as the scores read it back: parsed, stored in its Arrow type, read again."""
    from agentbatch.agent.response_format import parse_response_format

    fmt = parse_response_format(TYPED)
    table = pa.Table.from_pylist(
        [{"response": fmt.parse(text)}], schema=pa.schema([("response", fmt.arrow_type)])
    )
    answer: dict[str, Any] = table.to_pylist()[0]["response"]
    return answer


ANSWER = '{"amount": 3, "share": 12.5, "due": "2024-01-05", "at": "2024-01-05T10:00:00Z"}'


def test_json_schema_passes_a_typed_answer_that_matches_the_schema_it_was_asked_with() -> None:
    """The schema agentbatch asks the agent to follow for a DATE and a TIMESTAMP is a string of
    format date / date-time; the scorer checked the stored Python date against it, so every
    such answer failed, with no error to say why."""
    from agentbatch.agent.response_format import parse_response_format
    from agentbatch.evaluation.scorers import JsonSchemaScorer

    asked = dict(parse_response_format(TYPED).json_schema)
    answer = stored_answer(ANSWER)
    scorer = JsonSchemaScorer("s", spec.JsonSchema(schema=asked))
    assert scorer.score(row(answer)) == Score(1.0)
    due = spec.JsonSchema(schema={"type": "string", "format": "date"}, field="due")
    assert JsonSchemaScorer("d", due).score(row(answer)) == Score(1.0)
    whole = spec.JsonSchema(schema={"type": "integer"}, field="amount")
    assert JsonSchemaScorer("w", whole).score(row(answer)) == Score(1.0)
    # Still a check: a field of another type fails.
    wrong = spec.JsonSchema(schema={"type": "integer"}, field="due")
    assert JsonSchemaScorer("x", wrong).score(row(answer)) == Score(0.0)


@pytest.mark.parametrize(("expected", "same"), [("3", True), (3, True), ("3.0", False)])
def test_exact_match_reads_a_decimal_field_as_the_number_it_is(expected: Any, same: bool) -> None:
    """A DECIMAL(10,2) field holding 3 is the Decimal 3.00, whose text `3.00` matched no expected
    3, while the same answer in a DOUBLE field did."""
    answer = stored_answer(ANSWER)
    for field in ("amount", "share"):
        exact = ExactMatchScorer("m", spec.ExactMatch(field=field), "expected")
        value = {"amount": expected, "share": "12.5" if expected != "3.0" else "12.50"}[field]
        assert exact.score(row(answer, value)) == Score(1.0 if same else 0.0), field


@pytest.mark.parametrize("result", [2, 0.5, -1])
def test_a_binary_custom_scorer_returning_other_than_0_or_1_is_a_row_error(
    probe: types.ModuleType, result: Any
) -> None:
    """Its mean and interval are a proportion's: 2 made a "proportion" of 116.7%."""
    probe.f = lambda response, expected, row: result  # type: ignore[attr-defined]
    scorer = CustomScorer("c", spec.Custom(function=f"{PROBE}:f", binary=True), None)
    assert scorer.score(row("x")).error == (
        f"{PROBE}:f returned {float(result)}, not 0 or 1 (the scorer is binary: true)"
    )
    probe.f = lambda response, expected, row: 1  # type: ignore[attr-defined]
    scorer = CustomScorer("c", spec.Custom(function=f"{PROBE}:f", binary=True), None)
    assert scorer.score(row("x")) == Score(1.0)
