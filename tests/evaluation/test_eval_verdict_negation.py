"""A judge's sentence that negates its verdict word is not read as that verdict."""

from __future__ import annotations

import pytest

from agentbatch.evaluation.verdict import VerdictError, parse_pass_fail


@pytest.mark.parametrize(
    "reply",
    [
        "The answer is not really correct.",
        "not a pass",
        "This answer is not at all correct",
        "It never passes.",
        "No, this would not quite pass",
        "The answer is not incorrect.",
        "It is not wrong.",
    ],
)
def test_a_negation_a_few_words_before_the_verdict_is_unclear(reply: str) -> None:
    with pytest.raises(VerdictError, match="negates"):
        parse_pass_fail(reply)


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("The answer isn't correct.", 0.0),
        ("The answer doesn\u2019t pass.", 0.0),
        ("This answer cannot pass.", 0.0),
        ("The answer is not correct.", 0.0),
        ("The answer is correct.", 1.0),
        ("No issues found. The answer is correct.", 1.0),
        ("It does not mention the refund. Verdict: FAIL", 0.0),
        ("Not everything is covered.\nVerdict: PASS", 1.0),
        ("NO", 0.0),
    ],
)
def test_clear_verdicts_still_parse(reply: str, value: float) -> None:
    assert parse_pass_fail(reply) == value
