"""Reading a judge's reply: PASS/FAIL or a score on a scale, parsed robustly.

In order: a JSON object (`{"verdict": "pass"}`, `{"score": 4}`, also inside ```json fences), then
the last labelled line (`Verdict: PASS`, `**Score:** 4/5`, `Rating - 3 out of 5`), then a reply
that is only the verdict (`PASS`, `4`). A pass/fail reply may also be a plain sentence that uses
only pass words or only fail words ("The answer is correct."); "not", "n't" or "cannot" right
before a pass word makes it a fail word ("is not correct", "isn't correct", "cannot pass").
Anything else - no verdict, a score off the scale, both PASS and FAIL, a negation a few words
before a verdict word ("not really correct", "not a pass", "never wrong", "not incorrect") -
raises VerdictError, which the scorer records as the row's error instead of guessing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentbatch.evaluation.text import preview, strip_code_fence


class VerdictError(ValueError):
    """The judge's reply holds no usable verdict."""


_PASS = {"pass", "passed", "passes", "correct", "yes", "true", "acceptable", "good", "y", "1"}
_FAIL = {
    "fail",
    "failed",
    "fails",
    "incorrect",
    "wrong",
    "no",
    "false",
    "unacceptable",
    "bad",
    "n",
    "0",
}
# In free text only unmistakable words count ("no" and "good" appear in any explanation).
_PASS_WORDS = ("pass", "passed", "passes", "correct")
_FAIL_WORDS = ("fail", "failed", "fails", "incorrect", "wrong")
_VERDICT_KEYS = ("verdict", "result", "pass", "passed", "correct", "judgment", "judgement", "grade")
_SCORE_KEYS = ("score", "rating", "grade", "points", "value")
_LABELLED_VERDICT = re.compile(
    r"(?:verdict|result|judge?ment|decision|grade|answer)\s*\**\s*[:=\-]\s*\**\s*([A-Za-z]+)",
    re.IGNORECASE,
)
_LABELLED_SCORE = re.compile(
    r"(?:score|rating|grade)\s*\**\s*(?:[:=\-]|is|of)?\s*\**\s*([-+]?\d+(?:\.\d+)?)"
    r"(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_BARE_SCORE = re.compile(
    r"^\s*\**\s*([-+]?\d+(?:\.\d+)?)\s*(?:(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?\s*\**\.?\s*$",
    re.IGNORECASE,
)
_ANY_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?!\w|\.\d)")
_NEGATED = re.compile(
    r"\b(?:not|cannot|\w+n['\u2019]t)\s+(correct|pass|passing|acceptable|right)\b", re.IGNORECASE
)
# A negation this many words (or fewer) before a verdict word, in the same clause, leaves the
# verdict unclear: "not really correct", "cannot pass", "not a pass", "no way this passes".
_NEGATION_REACH = 3
_NEGATIONS = frozenset({"not", "no", "never", "cannot", "nor", "neither", "hardly"})
_CLAUSE = re.compile(r"[.!?;:\n]+")
_WORD = re.compile(r"\w+(?:['\u2019]\w+)?")


def parse_pass_fail(reply: str | None) -> float:
    """1.0 for a pass, 0.0 for a fail."""
    text = _text(reply)
    found = _json_value(text, _VERDICT_KEYS)
    if found is not None:
        return _pass_fail_word(found, text)
    labelled = _LABELLED_VERDICT.findall(text)
    for word in reversed(labelled):
        value = _word_verdict(word)
        if value is not None:
            return value
    bare = _word_verdict(text.strip().strip("*`.!\"' ").lower())
    if bare is not None:
        return bare
    lowered = _NEGATED.sub("incorrect", text.lower())
    negated = _negated_verdict_word(lowered)
    if negated is not None:
        raise VerdictError(
            f"the judge's reply negates {negated!r}, so its verdict is unclear: {preview(text)!r}"
        )
    passes = any(re.search(rf"\b{w}\b", lowered) for w in _PASS_WORDS)
    fails = any(re.search(rf"\b{w}\b", lowered) for w in _FAIL_WORDS)
    if passes and not fails:
        return 1.0
    if fails and not passes:
        return 0.0
    why = "says both pass and fail" if passes else "has no PASS/FAIL verdict"
    raise VerdictError(f"the judge's reply {why}: {preview(text)!r}")


def _negated_verdict_word(lowered: str) -> str | None:
    """The first verdict word with a negation a few words before it (same clause), if any."""
    verdict_words = set(_PASS_WORDS) | set(_FAIL_WORDS)
    for clause in _CLAUSE.split(lowered):
        words: list[str] = _WORD.findall(clause)
        for index, word in enumerate(words):
            if word not in verdict_words:
                continue
            before = words[max(0, index - _NEGATION_REACH - 1) : index]
            if any(_is_negation(w) for w in before):
                return word
    return None


def _is_negation(word: str) -> bool:
    return word in _NEGATIONS or word.endswith(("n't", "n\u2019t"))


def parse_scale(reply: str | None, low: int, high: int) -> float:
    """The score, checked to lie within [low, high]."""
    text = _text(reply)
    found = _json_value(text, _SCORE_KEYS)
    if found is not None:
        if isinstance(found, bool) or not isinstance(found, (int, float, str)):
            raise VerdictError(f"the judge's score is not a number: {preview(text)!r}")
        return _on_scale(str(found), None, low, high, text)
    labelled = _LABELLED_SCORE.findall(text)
    if labelled:
        value, out_of = labelled[-1]
        return _on_scale(value, out_of or None, low, high, text)
    bare = _BARE_SCORE.match(text)
    if bare:
        return _on_scale(bare.group(1), bare.group(2), low, high, text)
    numbers = set(_ANY_NUMBER.findall(text))
    if len(numbers) == 1:
        return _on_scale(numbers.pop(), None, low, high, text)
    why = "has several numbers and no `Score:`" if numbers else "has no score"
    raise VerdictError(f"the judge's reply {why}: {preview(text)!r}")


def _text(reply: str | None) -> str:
    if reply is None or not str(reply).strip():
        raise VerdictError("the judge's reply is empty")
    return str(reply)


def _json_value(text: str, keys: tuple[str, ...]) -> Any:
    """The first of `keys` in the first JSON object of the reply (None without one)."""
    body = strip_code_fence(text.strip())
    candidates = [body] if body.startswith("{") else []
    start = text.find("{")
    if start >= 0:
        end = text.rfind("}")
        if end > start:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            lowered = {str(k).lower(): v for k, v in parsed.items()}
            for key in keys:
                if key in lowered and lowered[key] is not None:
                    return lowered[key]
    return None


def _pass_fail_word(value: Any, text: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and value in (0, 1):
        return float(value)
    verdict = _word_verdict(str(value).strip().lower())
    if verdict is None:
        raise VerdictError(f"the judge's verdict {value!r} is not PASS or FAIL: {preview(text)!r}")
    return verdict


def _word_verdict(word: str) -> float | None:
    word = word.lower()
    if word in _PASS:
        return 1.0
    if word in _FAIL:
        return 0.0
    return None


def _on_scale(value: str, out_of: str | None, low: int, high: int, text: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise VerdictError(
            f"the judge's score {value!r} is not a number: {preview(text)!r}"
        ) from None
    if out_of is not None and float(out_of) != high:
        raise VerdictError(f"the judge scored out of {out_of}, not {high}: {preview(text)!r}")
    if not low <= score <= high:
        raise VerdictError(f"the judge's score {value} is outside {low}..{high}: {preview(text)!r}")
    return score
