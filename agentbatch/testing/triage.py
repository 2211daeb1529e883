"""The demo agent's answers: a pure function of the request, so tests can assert them.

A request is a *triage request* when its text (instructions, system and user messages together)
says "classify" or "triage" and mentions a "ticket". The ticket is the text after the last
`Ticket:` in the last user message, or that whole message; lists of the label names in the prompt
(`billing|bug|account`, `billing, bug or other`) are ignored so they do not decide the label.
The label comes from the first keyword rule that matches; urgency from the label, raised by
words such as "urgent" or "outage". Any other request is answered `answer: <first 80 chars>`.
"""

from __future__ import annotations

import json
import re
from typing import Any

LABELS: tuple[str, ...] = ("billing", "bug", "account", "feature_request", "other")

# Checked in order: the first rule with a keyword in the ticket gives the label.
_KEYWORD_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "billing",
        ("invoice", "charge", "charged", "refund", "billing", "payment", "paid", "price", "plan"),
    ),
    (
        "bug",
        ("error", "crash", "bug", "broken", "exception", "fails", "failed", "not working", "500"),
    ),
    (
        "account",
        ("password", "login", "log in", "sign in", "account", "2fa", "locked", "username"),
    ),
    (
        "feature_request",
        ("feature", "please add", "would be nice", "would love", "support for", "wish", "roadmap"),
    ),
)
_BASE_URGENCY = {"billing": 3, "bug": 3, "account": 3, "feature_request": 1, "other": 2}
_URGENT_WORDS = ("urgent", "asap", "immediately", "critical", "outage", "production down")

_TRIAGE_INTENT = re.compile(r"\b(classify|classification|triage)\b", re.IGNORECASE)
_TICKET_MARKER = re.compile(r"ticket\s*:", re.IGNORECASE)
_LABEL_ALT = "|".join(re.escape(label) for label in sorted(LABELS, key=len, reverse=True))
# Two or more labels joined by | , / or "or": a list of choices, not part of the ticket.
_LABEL_LIST = re.compile(
    rf"\b(?:{_LABEL_ALT})\b(?:\s*(?:\||,|/|\bor\b)\s*\b(?:{_LABEL_ALT})\b)+", re.IGNORECASE
)
ECHO_LIMIT = 80


def is_triage_request(context: str) -> bool:
    return bool(_TRIAGE_INTENT.search(context)) and "ticket" in context.lower()


def ticket_body(text: str) -> str:
    """The ticket inside a user message, without any list of label names."""
    markers = list(_TICKET_MARKER.finditer(text))
    body = text[markers[-1].end() :] if markers else text
    return _LABEL_LIST.sub(" ", body)


def classify(ticket: str) -> str:
    lowered = ticket.lower()
    for label, keywords in _KEYWORD_RULES:
        if any(_contains_word(lowered, keyword) for keyword in keywords):
            return label
    return "other"


def urgency(ticket: str, label: str) -> int:
    lowered = ticket.lower()
    bump = 2 if any(word in lowered for word in _URGENT_WORDS) else 0
    return min(5, _BASE_URGENCY[label] + bump)


def answer(text: str, context: str, *, structured: bool) -> str:
    """The demo answer for a user text (`context` adds instructions and system messages)."""
    if is_triage_request(context):
        ticket = ticket_body(text)
        label = classify(ticket)
        if structured:
            return json.dumps({"label": label, "urgency": urgency(ticket, label)})
        return label
    echoed = f"answer: {text[:ECHO_LIMIT]}"
    if structured:
        return json.dumps({"answer": echoed})
    return echoed


def structured_answer(text: str, context: str) -> dict[str, Any]:
    """The JSON object a structured request is answered with, already parsed."""
    parsed: dict[str, Any] = json.loads(answer(text, context, structured=True))
    return parsed


def _contains_word(haystack: str, needle: str) -> bool:
    return re.search(rf"(?<![a-z0-9_]){re.escape(needle)}(?![a-z0-9_])", haystack) is not None
