"""The `evaluation:` block: strict models, defaults, and errors that name file:line."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentbatch.errors import SpecError
from agentbatch.evaluation.checks import check_evaluation
from agentbatch.spec.evaluation import KINDS, Evaluation
from agentbatch.spec.loader import load_job, load_job_text

HEAD = """\
name: e
source: {table: main.s.t, key: id, columns: [question, label, amount]}
request: "question"
agent: {endpoint: e1, response_format: "STRUCT<label: STRING, total: DOUBLE>"}
output: {table: main.s.answers}
"""


def job_text(evaluation: str) -> str:
    return HEAD + "evaluation:\n" + textwrap.indent(textwrap.dedent(evaluation), "  ")


def spec_error(evaluation: str) -> str:
    with pytest.raises(SpecError) as caught:
        load_job_text(job_text(evaluation), "jobs/e.yml")
    return str(caught.value)


def checked_error(tmp_path: Path, evaluation: str) -> str:
    path = tmp_path / "e.yml"
    path.write_text(job_text(evaluation))
    job = load_job(path)
    with pytest.raises(SpecError) as caught:
        check_evaluation(job, path)
    return str(caught.value).replace(str(path), "e.yml")


def test_defaults_and_names() -> None:
    job = load_job_text(
        job_text(
            """\
            expected: label
            scorers:
              - exact_match: {field: label}
              - numeric: {field: total, expected: amount, tolerance: 1}
              - latency:
              - error_rate:
              - tokens: {count: output}
              - regex: {pattern: "^[a-z]+$", name: lowercase}
            """
        ),
        "jobs/e.yml",
    )
    evaluation = job.evaluation
    assert evaluation is not None
    assert [s.name for s in evaluation.scorers] == [
        "label_exact_match", "total_numeric", "latency", "error_rate", "output_tokens", "lowercase",
    ]  # fmt: skip
    assert evaluation.agent_errors == "fail" and evaluation.confidence == 0.95
    assert evaluation.scorers[1].options.tolerance == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        ("scorers: []\n", "jobs/e.yml:7: evaluation.scorers: list at least one scorer"),
        (
            "scorers:\n  - exactmatch: {}\n",
            "jobs/e.yml:8: evaluation.scorers[0].exactmatch: unknown key",
        ),
        (
            "scorers:\n  - latency:\n    error_rate:\n",
            "jobs/e.yml:8: evaluation.scorers[0]: give exactly one scorer kind per item",
        ),
        (
            "scorers:\n  - regex: {pattern: '(('}\n",
            "jobs/e.yml:8: evaluation.scorers[0].regex.pattern: invalid regular expression",
        ),
        (
            "scorers:\n  - latency:\n  - latency:\n",
            "jobs/e.yml:7: evaluation.scorers: two scorers are named 'latency'; give one a `name:`",
        ),
        (
            "scorers:\n  - latency: {name: Bad-Name}\n",
            "jobs/e.yml:8: evaluation.scorers[0].latency.name: use lowercase letters",
        ),
        (
            "scorers:\n  - latency: {name: lat_error}\n",
            "must not end in _error",
        ),
        (
            "scorers:\n  - json_schema:\n      schema: {type: objekt}\n",
            "jobs/e.yml:9: evaluation.scorers[0].json_schema.schema: invalid JSON Schema at type: 'objekt' is not valid",
        ),
        (
            "scorers:\n  - numeric: {tolerance: -1}\n",
            "jobs/e.yml:8: evaluation.scorers[0].numeric.tolerance: Input should be greater than or equal to 0",
        ),
        (
            "scorers:\n  - llm_judge: {endpoint: j, scale_min: 5, scale_max: 1, verdict: scale}\n",
            "scale_min must be less than scale_max",
        ),
        (
            "scorers:\n  - custom: {function: no_such_module_xyz:score}\n",
            "jobs/e.yml:8: evaluation.scorers[0].custom.function: no module named 'no_such_module_xyz'",
        ),
        (
            "scorers:\n  - custom: {function: 'not a path'}\n",
            "name a function as `package.module:function`",
        ),
        (
            "scorers:\n  - custom: {function: 'json:dumps'}\n",
            "a scorer function takes three arguments",
        ),
        (
            "expected: 'a;b'\nscorers:\n  - latency:\n",
            "jobs/e.yml:7: evaluation.expected: 'a;b' is not a valid identifier",
        ),
        ("confidence: 1.5\nscorers:\n  - latency:\n", "jobs/e.yml:7: evaluation.confidence:"),
    ],
)
def test_spec_errors_name_the_line(evaluation: str, expected: str) -> None:
    assert expected in spec_error(evaluation)


def test_custom_scorer_function_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_eval_scorers_ok.py").write_text(
        "def polite(response, expected, row):\n    return 'please' in str(response)\n"
    )
    monkeypatch.chdir(tmp_path)  # scorer modules are found in the working folder
    job = load_job_text(
        job_text("scorers:\n  - custom: {function: 'my_eval_scorers_ok:polite', binary: true}\n"),
        "jobs/e.yml",
    )
    assert job.evaluation is not None and job.evaluation.scorers[0].name == "custom"


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        (
            "expected: body\nscorers:\n  - latency:\n",
            "e.yml:7: evaluation.expected: 'body' is not in the output; keep it with source.columns "
            "(kept: id, question, label, amount)",
        ),
        ("group_by: channel\nscorers:\n  - latency:\n", "e.yml:7: evaluation.group_by: 'channel'"),
        (
            "scorers:\n  - exact_match: {}\n",
            "e.yml:8: evaluation.scorers[0].exact_match: needs an expected column",
        ),
        (
            "expected: label\nscorers:\n  - exact_match: {field: urgency}\n",
            "e.yml:9: evaluation.scorers[0].exact_match.field: the answer has no field 'urgency' "
            "(fields: label, total)",
        ),
        (
            "scorers:\n  - numeric: {field: total, expected: price}\n",
            "e.yml:8: evaluation.scorers[0].numeric.expected: 'price' is not in the output",
        ),
        (
            "expected: label\nscorers:\n  - latency: {name: label}\n",
            "the scorer name 'label' clashes with a column",
        ),
        (
            "scorers:\n  - llm_judge: {endpoint: 'bad endpoint!'}\n",
            "e.yml:8: evaluation.scorers[0].llm_judge.endpoint: not a valid Model Serving endpoint name",
        ),
        (
            "scorers:\n  - llm_judge: {endpoint: j}\n",
            "e.yml:8: evaluation.scorers[0].llm_judge.prompt: {expected} needs an expected column",
        ),
        (
            "scorers:\n  - llm_judge: {endpoint: j, prompt: 'Rate {response.urgency}'}\n",
            "llm_judge.prompt: the answer has no field 'urgency'",
        ),
        (
            "scorers:\n  - llm_judge: {endpoint: j, prompt: 'Rate {question.text}'}\n",
            "only {response.<field>} takes a field",
        ),
    ],
)
def test_checks_against_the_job(tmp_path: Path, evaluation: str, expected: str) -> None:
    assert expected in checked_error(tmp_path, evaluation)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = checked_error(
        tmp_path, "expected: nope\ngroup_by: nope2\nscorers:\n  - exact_match: {field: zz}\n"
    )
    assert len(message.splitlines()) == 3


def test_a_job_without_evaluation_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.yml"
    path.write_text(HEAD)
    with pytest.raises(SpecError, match=r"plain.yml:1: the job has no `evaluation:` block"):
        check_evaluation(load_job(path), path)


def test_text_answers_have_no_fields_but_json_may(tmp_path: Path) -> None:
    text = HEAD.replace(', response_format: "STRUCT<label: STRING, total: DOUBLE>"', "")
    path = tmp_path / "t.yml"
    path.write_text(
        text + "evaluation:\n  scorers:\n    - json_schema: {field: a, schema: {type: string}}\n"
    )
    check_evaluation(load_job(path), path)  # a JSON text answer may have any field
    path.write_text(
        text + "evaluation:\n  scorers:\n    - llm_judge: {endpoint: j, prompt: '{response.a}'}\n"
    )
    with pytest.raises(SpecError, match=r"needs a structured answer"):
        check_evaluation(load_job(path), path)


_KEYS = st.sampled_from(
    [*KINDS, "name", "field", "expected", "pattern", "schema", "type", "properties", "items",
     "endpoint", "prompt", "verdict", "scale_min", "scale_max", "function", "tolerance", "x"]
)  # fmt: skip
_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["expected", "group_by", "scorers", "seed"]), _VALUES))
def test_any_evaluation_block_is_valid_or_a_validation_error(block: dict[str, Any]) -> None:
    with contextlib.suppress(ValidationError):  # anything else (TypeError, ...) fails the test
        Evaluation.model_validate(block)


def test_deeply_nested_schemas_are_refused() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        schema = {"type": "array", "items": schema}
    with pytest.raises(ValidationError, match="nested more than 64 levels"):
        Evaluation.model_validate({"scorers": [{"json_schema": {"schema": schema}}]})
