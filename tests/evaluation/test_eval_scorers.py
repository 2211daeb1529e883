"""Each built-in scorer on hand-made rows, and the policy for rows the agent failed on."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from agentbatch.evaluation.scorers import (
    ContainsScorer,
    CustomScorer,
    ErrorRateScorer,
    ExactMatchScorer,
    JsonSchemaScorer,
    JsonValidScorer,
    JudgeReply,
    JudgeScorer,
    LatencyScorer,
    NumericScorer,
    RegexScorer,
    Score,
    TokensScorer,
)
from agentbatch.evaluation.scoring import score_table
from agentbatch.spec import evaluation as spec
from agentbatch.spec.loader import load_job_text


def row(response: Any, expected: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": 1, "response": response, "expected": expected, "error": None, **extra}


def exact(**options: Any) -> ExactMatchScorer:
    return ExactMatchScorer("m", spec.ExactMatch(**options), "expected")


@pytest.mark.parametrize(
    ("options", "response", "expected", "value"),
    [
        ({}, "Billing", "billing", 1.0),
        ({}, "  billing \n", "billing", 1.0),
        ({"ignore_case": False}, "Billing", "billing", 0.0),
        ({"ignore_whitespace": False}, " billing", "billing", 0.0),
        ({}, "billing.", "billing", 0.0),
        ({"ignore_punctuation": True}, "billing.", "billing", 1.0),
        ({"ignore_punctuation": True}, "feature-request", "feature request", 1.0),
        ({}, "3", 3, 1.0),
        ({}, 3.0, "3", 1.0),
        ({}, True, "true", 1.0),
        ({}, "", "billing", 0.0),
        ({}, None, "billing", 0.0),
        ({"field": "label"}, {"label": "Bug", "urgency": 2}, "bug", 1.0),
        ({"field": "label"}, '{"label": "bug"}', "bug", 1.0),
        ({"field": "label"}, '```json\n{"label": "bug"}\n```', "bug", 1.0),
        ({"field": "label"}, "bug", "bug", 0.0),  # text answer without the field
        ({"field": "order.total"}, {"order": {"total": 12}}, "12", 1.0),
        ({"field": "order.total"}, {"order": None}, "12", 0.0),
    ],
)
def test_exact_match(options: dict[str, Any], response: Any, expected: Any, value: float) -> None:
    assert exact(**options).score(row(response, expected)) == Score(value)


def test_exact_match_without_an_expected_value_is_a_row_error() -> None:
    assert exact().score(row("bug", None)).error == "no expected value in column 'expected'"


def test_contains() -> None:
    scorer = ContainsScorer("c", spec.Contains(), "expected")
    assert scorer.score(row("The answer is Paris.", "paris")) == Score(1.0)
    assert scorer.score(row("The answer is Lyon.", "paris")) == Score(0.0)
    fixed = ContainsScorer("c", spec.Contains(value="refund"), None)
    assert fixed.score(row("We will REFUND you")) == Score(1.0)


def test_regex() -> None:
    scorer = RegexScorer("r", spec.Regex(pattern=r"^\d{4}-\d{2}-\d{2}$", field="date"))
    assert scorer.score(row({"date": "2026-01-31"})) == Score(1.0)
    assert scorer.score(row({"date": "31/01/2026"})) == Score(0.0)
    assert scorer.score(row({"other": 1})) == Score(0.0)
    insensitive = RegexScorer("r", spec.Regex(pattern="sorry", ignore_case=True))
    assert insensitive.score(row("SORRY for that")) == Score(1.0)


@pytest.mark.parametrize(
    ("options", "response", "expected", "value"),
    [
        ({}, "42", "42", 1.0),
        ({}, "42.0", 42, 1.0),
        ({}, "about 42 items", "42", 1.0),
        ({}, "1,200", "1200", 1.0),
        ({}, "3,5", "3.5", 1.0),
        ({}, "41", "42", 0.0),
        ({"tolerance": 1}, "41", "42", 1.0),
        ({"tolerance": 0.5}, "41", "42", 0.0),
        ({"relative_tolerance": 0.05}, "104", "100", 1.0),
        ({"relative_tolerance": 0.05}, "106", "100", 0.0),
        ({}, 0.30000000000000004, "0.3", 1.0),
        ({}, "no idea", "42", 0.0),
        ({}, True, "1", 0.0),
        ({"field": "total"}, {"total": 9.99}, "9.99", 1.0),
    ],
)
def test_numeric(options: dict[str, Any], response: Any, expected: Any, value: float) -> None:
    scorer = NumericScorer("n", spec.Numeric(**options), "expected")
    assert scorer.score(row(response, expected)) == Score(value)


def test_numeric_with_a_bad_expected_value_is_a_row_error() -> None:
    scorer = NumericScorer("n", spec.Numeric(), "expected")
    assert "is not a number" in (scorer.score(row("3", "three")).error or "")


def test_json_valid_and_schema() -> None:
    valid = JsonValidScorer("j", spec.JsonValid())
    assert valid.score(row('{"a": 1}')) == Score(1.0)
    assert valid.score(row("```json\n[1, 2]\n```")) == Score(1.0)
    assert valid.score(row("{'a': 1}")) == Score(0.0)
    assert valid.score(row({"a": 1})) == Score(1.0)
    assert valid.score(row(None)) == Score(0.0)
    schema = spec.JsonSchema.model_validate(
        {
            "schema": {
                "type": "object",
                "required": ["label"],
                "properties": {"label": {"enum": ["a", "b"]}},
            }
        }
    )
    scorer = JsonSchemaScorer("s", schema)
    assert scorer.score(row({"label": "a"})) == Score(1.0)
    assert scorer.score(row('{"label": "c"}')) == Score(0.0)
    assert scorer.score(row("{}")) == Score(0.0)
    assert scorer.score(row("not json")) == Score(0.0)


def test_operational_scorers() -> None:
    latency = LatencyScorer("latency", "latency")
    assert latency.score(row("x", latency_ms=12.5)) == Score(12.5)
    assert latency.score(row("x", latency_ms=None)) == Score()
    errors = ErrorRateScorer("error_rate", "error_rate")
    assert errors.score({**row("x"), "error": "HTTP 500"}) == Score(1.0)
    assert errors.score(row("x")) == Score(0.0)
    total = TokensScorer("tokens", spec.Tokens())
    assert total.score(row("x", input_tokens=10, output_tokens=3)) == Score(13.0)
    assert total.score(row("x", input_tokens=None, output_tokens=None)) == Score()
    assert TokensScorer("t", spec.Tokens(count="input")).score(row("x", input_tokens=7)) == Score(
        7.0
    )


def test_judge_scorer_reads_replies_by_key() -> None:
    scale = JudgeScorer("judge", spec.LlmJudge(endpoint="j", verdict="scale"), "id")
    scale.replies = {
        1: JudgeReply("Score: 4", None),
        2: JudgeReply("It is great!", None),
        3: JudgeReply(None, "HTTP 429 after 8 attempts"),
    }
    assert scale.score({"id": 1}) == Score(4.0)
    assert "has no score" in (scale.score({"id": 2}).error or "")
    assert scale.score({"id": 3}).error == "the judge failed: HTTP 429 after 8 attempts"
    assert scale.score({"id": 4}).error == "the judge has no reply for this row"
    assert scale.bounds == (1.0, 5.0) and not scale.binary


def test_custom_scorer_results_and_failures() -> None:
    import types

    module = types.ModuleType("eval_custom_probe")
    module.length = lambda response, expected, row: len(response)  # type: ignore[attr-defined]
    module.boom = lambda response, expected, row: 1 / 0  # type: ignore[attr-defined]
    module.text = lambda response, expected, row: "yes"  # type: ignore[attr-defined]
    import sys

    sys.modules["eval_custom_probe"] = module
    try:
        length = CustomScorer("n", spec.Custom(function="eval_custom_probe:length"), None)
        assert length.score(row("four")) == Score(4.0)
        boom = CustomScorer("b", spec.Custom(function="eval_custom_probe:boom"), None)
        assert (
            boom.score(row("x")).error
            == "eval_custom_probe:boom raised ZeroDivisionError: division by zero"
        )
        text = CustomScorer("t", spec.Custom(function="eval_custom_probe:text"), None)
        assert text.score(row("x")).error == "eval_custom_probe:text returned str, not a number"
    finally:
        del sys.modules["eval_custom_probe"]


JOB = """\
name: e
source: {table: main.s.t, key: id, columns: [label]}
request: "q"
agent: {endpoint: e1}
output: {table: main.s.o}
evaluation:
  expected: label
  agent_errors: POLICY
  scorers:
    - exact_match:
    - error_rate:
    - llm_judge: {endpoint: j, verdict: scale}
"""


@pytest.mark.parametrize(
    ("policy", "exact", "judge", "judge_error"),
    [("fail", 0.0, 1.0, None), ("skip", None, None, None)],
)
def test_rows_the_agent_failed_on(
    policy: str, exact: float | None, judge: float | None, judge_error: str | None
) -> None:
    job = load_job_text(JOB.replace("POLICY", policy), "jobs/e.yml")
    output = pa.table(
        {
            "id": [1, 2],
            "label": ["bug", "bug"],
            "response": ["bug", None],
            "error": [None, "HTTP 500: boom"],
        }
    )
    scored = score_table(
        output, job, judge_replies={"llm_judge": {1: JudgeReply("Score: 5", None)}}
    )
    rows = scored.table.to_pylist()
    assert rows[0]["exact_match"] == 1.0 and rows[0]["llm_judge"] == 5.0
    assert rows[1]["exact_match"] == exact
    assert rows[1]["llm_judge"] == judge and rows[1]["llm_judge_error"] == judge_error
    assert rows[1]["error_rate"] == 1.0  # operational scorers score every row
    assert rows[1]["agent_error"] == "HTTP 500: boom"
    assert scored.group_by == "label"


def test_a_scorer_that_raises_only_fails_its_row() -> None:
    job = load_job_text(JOB.replace("POLICY", "fail"), "jobs/e.yml")

    class Flaky(ExactMatchScorer):
        def score(self, row: Any) -> Score:
            if row["id"] == 2:
                raise RuntimeError("surprise")
            return super().score(row)

    output = pa.table(
        {"id": [1, 2], "label": ["a", "b"], "response": ["a", "b"], "error": [None, None]}
    )
    scored = score_table(output, job, scorers=[Flaky("exact_match", spec.ExactMatch(), "label")])
    assert scored.values("exact_match") == [1.0, None]
    assert scored.table.column("exact_match_error").to_pylist() == [None, "RuntimeError: surprise"]


def test_judge_replies_match_keys_by_their_text() -> None:
    judge = JudgeScorer("judge", spec.LlmJudge(endpoint="j"), "id")
    judge.replies = {"7": JudgeReply("PASS", None)}
    assert judge.score({"id": 7}) == Score(1.0)
