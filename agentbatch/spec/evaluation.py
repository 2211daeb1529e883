"""The `evaluation:` block of a job: what the answers are compared with, and how they are scored.

    evaluation:
      expected: label                # a column of the output (the key or a `source.columns` one)
      scorers:
        - exact_match: {field: label}
        - json_schema: {schema: {type: object, required: [label]}}
        - error_rate:
        - latency:
        - llm_judge: {endpoint: databricks-claude-sonnet-4, verdict: pass_fail}
        - custom: {function: "my_scorers:polite", name: politeness}

Each list item names one scorer kind. Models are strict and immutable like the rest of the spec,
and load-time checks (regexes compile, schemas use supported keywords, custom functions import)
report against the YAML line. Checks that need the whole job (does the `expected` column exist?)
are in `agentbatch.evaluation.checks`.

This module is imported by the job models, so it imports nothing heavy.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentbatch.spec import json_schema
from agentbatch.sql import quoting

_SCORER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")
_FIELD_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# `{name}` or `{response.field}`; any other brace (JSON examples in a prompt) is plain text.
PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}")

DEFAULT_JUDGE_PROMPT = {
    "pass_fail": (
        "You are grading an AI assistant's answer.\n\n"
        "Request:\n{request}\n\nAnswer:\n{response}\n\nReference answer:\n{expected}\n\n"
        "Is the answer correct and consistent with the reference? "
        "Reply with one line: `Verdict: PASS` or `Verdict: FAIL`."
    ),
    "scale": (
        "You are grading an AI assistant's answer.\n\n"
        "Request:\n{request}\n\nAnswer:\n{response}\n\nReference answer:\n{expected}\n\n"
        "Rate how well the answer matches the reference, from {scale_min} (wrong) to "
        "{scale_max} (fully correct). Reply with one line: `Score: <number>`."
    ),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _int_is_a_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_table(value: str | None) -> str | None:
    if value is not None:
        try:
            quoting.table_parts(value)
        except quoting.SqlValueError as err:
            raise ValueError(str(err)) from None
    return value


def _check_column(value: str | None) -> str | None:
    if value is not None:
        try:
            quoting.identifier(value)
        except quoting.SqlValueError as err:
            raise ValueError(str(err)) from None
    return value


class ScorerOptions(_Strict):
    name: str | None = Field(
        default=None, description="Column name of this score (default: from the kind and field)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None:
            if not _SCORER_NAME.match(value):
                raise ValueError("use lowercase letters, digits and _ (starting with a letter)")
            if value.endswith("_error"):
                raise ValueError("a scorer name must not end in _error (that column holds errors)")
        return value


class _OnField(ScorerOptions):
    field: str | None = Field(
        default=None, description="Score this field of a structured answer (dotted for nesting)"
    )

    @field_validator("field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None and not _FIELD_PATH.match(value):
            raise ValueError("a field is a dotted path of names, e.g. `label` or `order.total`")
        return value


class _AgainstExpected(_OnField):
    expected: str | None = Field(
        default=None, description="Column with the expected value (default: evaluation.expected)"
    )

    _expected = field_validator("expected")(_check_column)


class _Normalised(_AgainstExpected):
    ignore_case: bool = Field(default=True, description="Compare case-insensitively")
    ignore_whitespace: bool = Field(default=True, description="Trim and collapse whitespace")
    ignore_punctuation: bool = Field(default=False, description="Drop punctuation characters")


class ExactMatch(_Normalised):
    """1 when the (normalised) answer equals the expected value, else 0."""


class Contains(_Normalised):
    """1 when the (normalised) answer contains the expected value (or `value`), else 0."""

    value: str | None = Field(default=None, description="A fixed text instead of a column")

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("every answer contains a blank text: give a value to look for")
        return value


class Regex(_OnField):
    """1 when the pattern is found in the answer, else 0."""

    pattern: str
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"invalid regular expression: {err}") from None
        return value


class Numeric(_AgainstExpected):
    """1 when the answer is a number within the tolerance of the expected number, else 0."""

    tolerance: Annotated[float, Field(ge=0)] = Field(default=0.0, description="Absolute tolerance")
    relative_tolerance: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Also pass within this fraction of the expected value"
    )

    _floats = field_validator("tolerance", "relative_tolerance", mode="before")(_int_is_a_float)


class JsonValid(_OnField):
    """1 when the answer is valid JSON (a structured answer always is), else 0."""


class JsonSchema(_OnField):
    """1 when the answer is JSON matching the schema, else 0."""

    json_schema: dict[str, Any] = Field(alias="schema", description="A JSON Schema object")

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        json_schema.check_schema(value)
        return value


class Latency(ScorerOptions):
    """The answer's latency in milliseconds (REST runs; push-down does not report it)."""


class ErrorRate(ScorerOptions):
    """1 when the agent failed on the row, else 0: its mean is the error rate."""


class Tokens(ScorerOptions):
    """Token usage per row, when the endpoint reports it."""

    count: Literal["total", "input", "output"] = "total"


class LlmJudge(ScorerOptions):
    """Another endpoint grades each answer; its reply is parsed into a verdict."""

    endpoint: str = Field(description="The judge: a serving endpoint, apps/<name> or a URL")
    prompt: str | None = Field(
        default=None,
        description="Prompt with {response}, {response.<field>}, {expected}, {request} and "
        "{<column>} placeholders (default: a correctness rubric)",
    )
    verdict: Literal["pass_fail", "scale"] = Field(
        default="pass_fail", description="PASS/FAIL (1/0), or a score from scale_min to scale_max"
    )
    scale_min: int = 1
    scale_max: int = 5
    api: Literal["responses", "chat"] = "chat"
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    max_tokens: Annotated[int, Field(gt=0)] | None = 256
    timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    max_retries: Annotated[int, Field(ge=0, le=100)] = 8
    max_concurrency: Annotated[int, Field(gt=0)] | None = None
    table: str | None = Field(
        default=None,
        description="Where the judge's replies are kept (default: <output>_judge_<name>)",
    )

    _floats = field_validator("temperature", "timeout_seconds", mode="before")(_int_is_a_float)
    _table = field_validator("table")(_check_table)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.strip() or value != value.strip():
            raise ValueError("name the judge endpoint")
        return value

    @model_validator(mode="after")
    def _scale(self) -> LlmJudge:
        if self.scale_min >= self.scale_max:
            raise ValueError("scale_min must be less than scale_max")
        return self

    def prompt_template(self) -> str:
        if self.prompt is not None:
            return self.prompt
        template = DEFAULT_JUDGE_PROMPT[self.verdict]
        return template.replace("{scale_min}", str(self.scale_min)).replace(
            "{scale_max}", str(self.scale_max)
        )


class Custom(ScorerOptions):
    """A Python function `module:function` called per row as f(response, expected, row)."""

    function: str = Field(description="Import path `package.module:function`")
    expected: str | None = Field(
        default=None, description="Expected column (default: evaluation.expected)"
    )
    binary: bool = Field(
        default=False, description="Scores are 0/1 (a proportion with a Wilson interval)"
    )
    higher_is_better: bool = True
    lowest: float | None = Field(
        default=None,
        description="Score of a row the agent failed on, under agent_errors: fail (null: leave "
        "it unscored, with the agent's error as the row's scorer error). When not given, the "
        "worst score: 0 when higher is better; 1 for a binary scorer where lower is better; "
        "unscored for a lower-is-better scorer without a bound (no score is the worst)",
    )

    _expected = field_validator("expected")(_check_column)
    _floats = field_validator("lowest", mode="before")(_int_is_a_float)

    @model_validator(mode="before")
    @classmethod
    def _worst_by_default(cls, value: Any) -> Any:
        # A failed row must never score better than an answered one: the default is the worst
        # score, so it depends on the direction. Filled in here, it is explicit in the model.
        if isinstance(value, dict) and "lowest" not in value:
            higher = value.get("higher_is_better", True) is not False
            binary = value.get("binary", False) is True
            worst = 0.0 if higher else (1.0 if binary else None)
            return {**value, "lowest": worst}
        return value

    @field_validator("function")
    @classmethod
    def _function(cls, value: str) -> str:
        from agentbatch.spec.functions import load_function

        load_function(value)
        return value


KINDS: dict[str, type[ScorerOptions]] = {
    "exact_match": ExactMatch,
    "contains": Contains,
    "regex": Regex,
    "numeric": Numeric,
    "json_valid": JsonValid,
    "json_schema": JsonSchema,
    "latency": Latency,
    "error_rate": ErrorRate,
    "tokens": Tokens,
    "llm_judge": LlmJudge,
    "custom": Custom,
}


class Scorer(_Strict):
    """One list item: exactly one scorer kind, with its options (`- latency:` needs none)."""

    exact_match: ExactMatch | None = None
    contains: Contains | None = None
    regex: Regex | None = None
    numeric: Numeric | None = None
    json_valid: JsonValid | None = None
    json_schema: JsonSchema | None = None
    latency: Latency | None = None
    error_rate: ErrorRate | None = None
    tokens: Tokens | None = None
    llm_judge: LlmJudge | None = None
    custom: Custom | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_kinds(cls, value: Any) -> Any:
        # `- latency:` in YAML is {latency: None}: a kind that needs no options.
        if isinstance(value, dict):
            return {k: ({} if v is None and k in KINDS else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Scorer:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one scorer kind per item: {', '.join(KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    @property
    def options(self) -> ScorerOptions:
        options: ScorerOptions = getattr(self, self.kind)
        return options

    @property
    def name(self) -> str:
        if self.options.name:
            return self.options.name
        field = getattr(self.options, "field", None)
        if self.kind == "tokens":
            count = getattr(self.options, "count", "total")
            return "tokens" if count == "total" else f"{count}_tokens"
        if field:
            return f"{field.replace('.', '_').lower()}_{self.kind}"[:60]
        return self.kind


class Evaluation(_Strict):
    """How a job's answers are scored; see `agentbatch eval --help`."""

    expected: str | None = Field(
        default=None, description="Output column with the expected answer (a source column)"
    )
    group_by: str | None = Field(
        default=None,
        description="Column for per-group metrics (default: the expected column when it has at "
        "most 25 distinct values)",
    )
    scorers: tuple[Scorer, ...] = Field(description="One or more scorers")
    agent_errors: Literal["fail", "skip"] = Field(
        default="fail",
        description="fail: a row the agent failed on gets each answer scorer's worst score (one "
        "without a worst score records the agent's error instead); skip: it is unscored",
    )
    scores_table: str | None = Field(default=None, description="Default: <output>_scores")
    metrics_table: str | None = Field(default=None, description="Default: <output>_metrics")
    confidence: Annotated[float, Field(ge=0.5, le=0.999)] = 0.95
    bootstrap_samples: Annotated[int, Field(ge=100, le=100_000)] = 2000
    seed: int = 0
    mlflow_experiment: str | None = Field(
        default=None, description="Log metrics and the report to this MLflow experiment"
    )

    _columns = field_validator("expected", "group_by")(_check_column)
    _tables = field_validator("scores_table", "metrics_table")(_check_table)
    _floats = field_validator("confidence", mode="before")(_int_is_a_float)

    @field_validator("scorers", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("scorers")
    @classmethod
    def _unique_names(cls, value: tuple[Scorer, ...]) -> tuple[Scorer, ...]:
        if not value:
            raise ValueError("list at least one scorer")
        seen: set[str] = set()
        for scorer in value:
            if scorer.name in seen:
                raise ValueError(f"two scorers are named {scorer.name!r}; give one a `name:`")
            seen.add(scorer.name)
        return value
