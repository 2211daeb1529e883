from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentbatch.testing.triage import (
    ECHO_LIMIT,
    LABELS,
    answer,
    classify,
    is_triage_request,
    ticket_body,
    urgency,
)

PROMPT = "Classify this support ticket as billing|bug|account|feature_request|other.\nTicket: "


@pytest.mark.parametrize(
    ("ticket", "label"),
    [
        ("I was charged twice for my subscription, please refund", "billing"),
        ("The export button throws an error and the app crashes", "bug"),
        ("I cannot log in, my password reset link expired", "account"),
        ("It would be nice to have dark mode. Please add it!", "feature_request"),
        ("What are your office hours?", "other"),
    ],
)
def test_keyword_rules_pick_the_label(ticket: str, label: str) -> None:
    assert answer(PROMPT + ticket, PROMPT + ticket, structured=False) == label


def test_label_lists_in_the_prompt_do_not_decide_the_label() -> None:
    text = "Triage this ticket into billing, bug, account, feature_request or other: hello there"
    assert ticket_body(text).strip().endswith("hello there")
    assert "billing" not in ticket_body(text)
    assert answer(text, text, structured=False) == "other"


def test_instructions_in_the_context_make_a_triage_request() -> None:
    ticket = "My invoice is wrong"
    assert answer(ticket, "You classify support tickets.\n" + ticket, structured=False) == "billing"
    assert answer(ticket, ticket, structured=False) == "answer: My invoice is wrong"


def test_structured_answer_is_a_json_object_with_urgency() -> None:
    text = PROMPT + "URGENT: production down, every request fails with error 500"
    parsed = json.loads(answer(text, text, structured=True))
    assert parsed == {"label": "bug", "urgency": 5}
    plain = json.loads(answer("hi", "hi", structured=True))
    assert plain == {"answer": "answer: hi"}


def test_urgency_by_label_and_words() -> None:
    assert urgency("add dark mode", "feature_request") == 1
    assert urgency("add dark mode asap", "feature_request") == 3
    assert urgency("critical outage", "bug") == 5


def test_words_match_whole_words_only() -> None:
    assert classify("the planet is round") == "other"  # "plan" inside "planet"
    assert classify("my plan renewal") == "billing"


def test_needs_both_intent_and_ticket() -> None:
    assert not is_triage_request("classify this sentence")
    assert not is_triage_request("my ticket to the show")
    assert is_triage_request("Please TRIAGE the ticket")


@given(st.text(max_size=300))
def test_echo_answers_are_bounded_and_deterministic(text: str) -> None:
    first = answer(text, text, structured=False)
    assert first == answer(text, text, structured=False)
    if is_triage_request(text):
        assert first in LABELS
    else:
        assert first == "answer: " + text[:ECHO_LIMIT]
