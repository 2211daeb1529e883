"""Judge replies are parsed robustly; anything without a clear verdict is a VerdictError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentbatch.evaluation.verdict import VerdictError, parse_pass_fail, parse_scale


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("PASS", 1.0),
        ("fail", 0.0),
        ("Verdict: PASS", 1.0),
        ("The answer matches.\n\nVerdict: **FAIL**", 0.0),
        ("**Verdict:** pass", 1.0),
        ('{"verdict": "PASS", "reason": "fine"}', 1.0),
        ('```json\n{"pass": false}\n```', 0.0),
        ('Here you go: {"result": "fail"}', 0.0),
        ('{"correct": true}', 1.0),
        ("Yes", 1.0),
        ("no.", 0.0),
        ("The answer is correct.", 1.0),
        ("The answer is not correct.", 0.0),
        ("This is wrong: the label should be bug.", 0.0),
        ("Result: FAIL. A first draft said pass, but verdict: FAIL", 0.0),
    ],
)
def test_pass_fail(reply: str, value: float) -> None:
    assert parse_pass_fail(reply) == value


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("", "the judge's reply is empty"),
        (None, "the judge's reply is empty"),
        ("I cannot tell.", "has no PASS/FAIL verdict"),
        ("Partly correct, partly wrong.", "says both pass and fail"),
        ('{"verdict": "maybe"}', "is not PASS or FAIL"),
    ],
)
def test_pass_fail_refuses_to_guess(reply: str | None, message: str) -> None:
    with pytest.raises(VerdictError, match=message):
        parse_pass_fail(reply)


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("4", 4.0),
        ("Score: 3", 3.0),
        ("**Score:** 5/5", 5.0),
        ("Rating - 2 out of 5", 2.0),
        ("Reasoning... score: 2. After review, final score: 4", 4.0),
        ('{"score": 4, "reason": "ok"}', 4.0),
        ('{"rating": "3"}', 3.0),
        ("I'd give it a 4.", 4.0),
        ("4.5", 4.5),
    ],
)
def test_scale(reply: str, value: float) -> None:
    assert parse_scale(reply, 1, 5) == value


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("Score: 7", "outside 1..5"),
        ("Score: 8/10", "scored out of 10, not 5"),
        ("Between 3 and 4.", "has several numbers"),
        ("Excellent answer!", "has no score"),
        ('{"score": true}', "is not a number"),
        ('{"score": "high"}', "is not a number"),
    ],
)
def test_scale_refuses_to_guess(reply: str, message: str) -> None:
    with pytest.raises(VerdictError, match=message):
        parse_scale(reply, 1, 5)


@given(st.text(max_size=300))
def test_any_reply_gives_a_verdict_in_range_or_a_verdict_error(reply: str) -> None:
    for parse, allowed in ((parse_pass_fail, None), (lambda r: parse_scale(r, 1, 5), (1, 5))):
        try:
            value = parse(reply)
        except VerdictError:
            continue
        if allowed is None:
            assert value in (0.0, 1.0)
        else:
            assert allowed[0] <= value <= allowed[1]
