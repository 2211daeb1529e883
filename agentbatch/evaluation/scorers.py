"""The built-in scorers, one small class each. A scorer reads one output row (a dict of the
standard columns) and returns a Score: a value, or an error message for that row only.

Scorers that judge the answer (`judges_answer`) are not asked about rows the agent failed on;
`agentbatch.evaluation.scoring` applies the job's `agent_errors` policy to those rows instead.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from agentbatch.agent.redact import redact
from agentbatch.evaluation.text import (
    FieldMissing,
    as_number,
    as_text,
    get_field,
    json_form,
    normalise,
    parse_json,
)
from agentbatch.evaluation.verdict import VerdictError, parse_pass_fail, parse_scale
from agentbatch.spec import evaluation as spec
from agentbatch.spec import json_schema
from agentbatch.spec.functions import ScorerFunction, load_function


@dataclass(frozen=True)
class Score:
    value: float | None = None
    error: str | None = None


PASS = Score(1.0)
FAIL = Score(0.0)
UNSCORED = Score()


class RowScorer:
    """Base: subclasses set the class flags and implement `score`."""

    # Proportions (0/1) get a Wilson interval; other scores a bootstrap interval.
    binary: bool = True
    higher_is_better: bool = True
    # Does it grade the answer (so a failed row gets the agent_errors policy)?
    judges_answer: bool = True
    unit: str = ""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The range of scores when known (0..1 for proportions)."""
        return (0.0, 1.0) if self.binary else None

    @property
    def lowest(self) -> float | None:
        """The score of a row the agent failed on, under `agent_errors: fail`."""
        return 0.0 if self.binary else None

    def missing_expected(self, row: Mapping[str, Any]) -> Score | None:
        """The row error when this scorer needs an expected value the row lacks, else None.

        A row without an expected value cannot be graded whether or not the agent answered it,
        so this comes before the `agent_errors` policy.
        """
        return None

    def score(self, row: Mapping[str, Any]) -> Score:
        raise NotImplementedError


class _Compared(RowScorer):
    """Compares (a field of) the answer with an expected column."""

    def __init__(self, name: str, kind: str, options: Any, expected: str | None) -> None:
        super().__init__(name, kind)
        self.field: str | None = options.field
        self.expected = expected

    def missing_expected(self, row: Mapping[str, Any]) -> Score | None:
        if self.expected and row.get(self.expected) is None:
            return Score(error=f"no expected value in column {self.expected!r}")
        return None

    def _answer_and_expected(self, row: Mapping[str, Any]) -> tuple[Any, Any] | Score:
        missing = self.missing_expected(row)
        if missing is not None:
            return missing
        expected = row.get(self.expected) if self.expected else None
        try:
            answer = get_field(row.get("response"), self.field)
        except FieldMissing:
            return FAIL
        return answer, expected


class ExactMatchScorer(_Compared):
    def __init__(self, name: str, options: spec.ExactMatch, expected: str | None) -> None:
        super().__init__(name, "exact_match", options, expected)
        self.flags = dict(
            ignore_case=options.ignore_case,
            ignore_whitespace=options.ignore_whitespace,
            ignore_punctuation=options.ignore_punctuation,
        )

    def score(self, row: Mapping[str, Any]) -> Score:
        pair = self._answer_and_expected(row)
        if isinstance(pair, Score):
            return pair
        answer, expected = pair
        if answer is None:
            return FAIL
        same = normalise(as_text(answer), **self.flags) == normalise(
            as_text(expected), **self.flags
        )
        return PASS if same else FAIL


class ContainsScorer(_Compared):
    def __init__(self, name: str, options: spec.Contains, expected: str | None) -> None:
        super().__init__(name, "contains", options, None if options.value is not None else expected)
        self.value = options.value
        self.flags = dict(
            ignore_case=options.ignore_case,
            ignore_whitespace=options.ignore_whitespace,
            ignore_punctuation=options.ignore_punctuation,
        )

    def missing_expected(self, row: Mapping[str, Any]) -> Score | None:
        # Every answer contains the empty text: a blank expected value grades nothing.
        if self.value is None and self.expected:
            expected = row.get(self.expected)
            if expected is None or not normalise(as_text(expected), **self.flags).strip():
                return Score(error=f"no expected value in column {self.expected!r}")
        return None

    def score(self, row: Mapping[str, Any]) -> Score:
        pair = self._answer_and_expected(row)
        if isinstance(pair, Score):
            return pair
        answer, expected = pair
        needle = normalise(
            as_text(self.value if self.value is not None else expected), **self.flags
        )
        if not needle.strip():
            return Score(error="no expected value: the text to look for is blank")
        if answer is None:
            return FAIL
        return PASS if needle in normalise(as_text(answer), **self.flags) else FAIL


class RegexScorer(_Compared):
    def __init__(self, name: str, options: spec.Regex) -> None:
        super().__init__(name, "regex", options, None)
        self.pattern = re.compile(options.pattern, re.IGNORECASE if options.ignore_case else 0)

    def score(self, row: Mapping[str, Any]) -> Score:
        pair = self._answer_and_expected(row)
        if isinstance(pair, Score):
            return pair
        answer, _ = pair
        if answer is None:
            return FAIL
        return PASS if self.pattern.search(as_text(answer)) else FAIL


class NumericScorer(_Compared):
    def __init__(self, name: str, options: spec.Numeric, expected: str | None) -> None:
        super().__init__(name, "numeric", options, expected)
        self.tolerance = options.tolerance
        self.relative = options.relative_tolerance

    def score(self, row: Mapping[str, Any]) -> Score:
        pair = self._answer_and_expected(row)
        if isinstance(pair, Score):
            return pair
        answer, expected = pair
        target = as_number(expected)
        if target is None:
            return Score(error=f"the expected value {as_text(expected)[:40]!r} is not a number")
        got = as_number(answer)
        if got is None:
            return FAIL
        allowed = max(self.tolerance, (self.relative or 0.0) * abs(target))
        # A little slack for binary floating point: 0.1 + 0.2 is within 0.3 +- 0.
        return PASS if abs(got - target) <= allowed + 1e-9 * max(1.0, abs(target)) else FAIL


class JsonValidScorer(_Compared):
    def __init__(self, name: str, options: spec.JsonValid) -> None:
        super().__init__(name, "json_valid", options, None)

    def score(self, row: Mapping[str, Any]) -> Score:
        pair = self._answer_and_expected(row)
        if isinstance(pair, Score):
            return pair
        answer, _ = pair
        if answer is None:
            return FAIL
        if not isinstance(answer, str):
            return PASS  # a structured answer (or one of its fields) is JSON already
        try:
            parse_json(answer)
        except ValueError:
            return FAIL
        return PASS


class JsonSchemaScorer(_Compared):
    def __init__(self, name: str, options: spec.JsonSchema) -> None:
        super().__init__(name, "json_schema", options, None)
        self.violation = json_schema.compile_schema(options.json_schema)

    def score(self, row: Mapping[str, Any]) -> Score:
        pair = self._answer_and_expected(row)
        if isinstance(pair, Score):
            return pair
        answer, _ = pair
        try:
            value = parse_json(answer) if isinstance(answer, str) else json_form(answer)
        except ValueError:
            return FAIL
        return FAIL if self.violation(value) else PASS


class LatencyScorer(RowScorer):
    binary = False
    higher_is_better = False
    judges_answer = False
    unit = "ms"

    def score(self, row: Mapping[str, Any]) -> Score:
        value = row.get("latency_ms")
        return Score(float(value)) if value is not None else UNSCORED


class ErrorRateScorer(RowScorer):
    higher_is_better = False
    judges_answer = False

    def score(self, row: Mapping[str, Any]) -> Score:
        return PASS if row.get("error") is not None else FAIL


class TokensScorer(RowScorer):
    binary = False
    higher_is_better = False
    judges_answer = False
    unit = "tokens"

    def __init__(self, name: str, options: spec.Tokens) -> None:
        super().__init__(name, "tokens")
        self.count = options.count

    def score(self, row: Mapping[str, Any]) -> Score:
        used_in, used_out = row.get("input_tokens"), row.get("output_tokens")
        if self.count == "input":
            return Score(float(used_in)) if used_in is not None else UNSCORED
        if self.count == "output":
            return Score(float(used_out)) if used_out is not None else UNSCORED
        if used_in is None and used_out is None:
            return UNSCORED
        return Score(float((used_in or 0) + (used_out or 0)))


@dataclass(frozen=True)
class JudgeReply:
    text: str | None
    error: str | None


class JudgeScorer(RowScorer):
    """Scores from the judge's replies, fetched beforehand by `agentbatch.evaluation.judge`."""

    def __init__(self, name: str, options: spec.LlmJudge, key: str) -> None:
        super().__init__(name, "llm_judge")
        self.options = options
        self.key = key
        self.binary = options.verdict == "pass_fail"
        self._replies: dict[str, JudgeReply] = {}

    @property
    def replies(self) -> Mapping[str, JudgeReply]:
        return self._replies

    @replies.setter
    def replies(self, replies: Mapping[Any, JudgeReply]) -> None:
        # By the key's text: engines and files may hand back 1001 as an int of another width,
        # or as "1001".
        self._replies = {str(key): reply for key, reply in replies.items()}

    @property
    def bounds(self) -> tuple[float, float]:
        if self.binary:
            return (0.0, 1.0)
        return (float(self.options.scale_min), float(self.options.scale_max))

    @property
    def lowest(self) -> float:
        return self.bounds[0]

    def score(self, row: Mapping[str, Any]) -> Score:
        reply = self._replies.get(str(row.get(self.key)))
        if reply is None:
            return Score(error="the judge has no reply for this row")
        if reply.error is not None:
            return Score(error=f"the judge failed: {reply.error}")
        try:
            if self.binary:
                return Score(parse_pass_fail(reply.text))
            return Score(parse_scale(reply.text, self.options.scale_min, self.options.scale_max))
        except VerdictError as err:
            return Score(error=str(err))


class CustomScorer(RowScorer):
    def __init__(self, name: str, options: spec.Custom, expected: str | None) -> None:
        super().__init__(name, "custom")
        self.options = options
        self.expected = expected
        self.function: ScorerFunction = load_function(options.function)
        self.binary = options.binary
        self.higher_is_better = options.higher_is_better

    @property
    def lowest(self) -> float | None:
        # The spec fills the worst score in when `lowest` is not given (see spec.Custom).
        return self.options.lowest

    def score(self, row: Mapping[str, Any]) -> Score:
        expected = row.get(self.expected) if self.expected else None
        try:
            result = self.function(row.get("response"), expected, dict(row))
        except Exception as err:  # a user's function: its failure is this row's error
            # Written to the scores table: masked as an agent's error is (a key it quotes).
            failed = f"{self.options.function} raised {type(err).__name__}: {err}"
            return Score(error=redact(failed))
        return self._as_score(result)

    def _as_score(self, result: Any) -> Score:
        """None: unscored; a bool: 1/0; any finite real number (numpy scalars too): its value."""
        returned = type(result).__name__
        if getattr(result, "shape", None) == () and callable(getattr(result, "item", None)):
            result = result.item()  # a numpy scalar (np.bool_, np.int64, ...) as a Python one
        if result is None:
            return UNSCORED
        if isinstance(result, bool):
            return PASS if result else FAIL
        if isinstance(result, (numbers.Real, Decimal)):
            value = float(result)
            if not math.isfinite(value):
                return Score(error=f"{self.options.function} returned {value}, not a finite number")
            if self.binary and value not in (0.0, 1.0):
                # A proportion's mean and Wilson interval hold only for 0/1 scores.
                return Score(
                    error=f"{self.options.function} returned {value}, not 0 or 1 "
                    "(the scorer is binary: true)"
                )
            return Score(value)
        return Score(error=f"{self.options.function} returned {returned}, not a number")


def build_scorer(entry: spec.Scorer, default_expected: str | None, key: str) -> RowScorer:
    options, name = entry.options, entry.name
    expected = getattr(options, "expected", None) or default_expected
    if isinstance(options, spec.ExactMatch):
        return ExactMatchScorer(name, options, expected)
    if isinstance(options, spec.Contains):
        return ContainsScorer(name, options, expected)
    if isinstance(options, spec.Regex):
        return RegexScorer(name, options)
    if isinstance(options, spec.Numeric):
        return NumericScorer(name, options, expected)
    if isinstance(options, spec.JsonValid):
        return JsonValidScorer(name, options)
    if isinstance(options, spec.JsonSchema):
        return JsonSchemaScorer(name, options)
    if isinstance(options, spec.Latency):
        return LatencyScorer(name, "latency")
    if isinstance(options, spec.ErrorRate):
        return ErrorRateScorer(name, "error_rate")
    if isinstance(options, spec.Tokens):
        return TokensScorer(name, options)
    if isinstance(options, spec.LlmJudge):
        return JudgeScorer(name, options, key)
    if isinstance(options, spec.Custom):
        return CustomScorer(name, options, expected)
    raise TypeError(f"no scorer for {entry.kind}")  # pragma: no cover - KINDS and this agree
