"""A row's Outcome: when it was answered and the usage it reported, added up once when it is made
(by position on the hot path, one per row)."""

from __future__ import annotations

import time

from agentbatch.agent.replies import AgentReply, RowFailure
from agentbatch.agent.worker import Outcome


def test_an_outcome_by_position_gets_its_answer_time_and_adds_earlier_usage() -> None:
    before = time.time_ns() // 1000
    outcome = Outcome(AgentReply("ok", None, 3, 4), None, 2, 200, 5.0, None, 10, None)
    assert before <= outcome.answered_at_us <= time.time_ns() // 1000
    assert (outcome.input_tokens, outcome.output_tokens) == (13, 4)
    assert (outcome.earlier_input_tokens, outcome.earlier_output_tokens) == (10, None)
    assert Outcome(answered_at_us=7).answered_at_us == 7


def test_the_usage_is_the_replys_the_failures_or_the_earlier_attempts() -> None:
    assert Outcome(AgentReply("ok", None, 3, None)).input_tokens == 3
    assert Outcome().input_tokens is None
    paid = RowFailure("agent", "filtered", input_tokens=5, output_tokens=6)
    outcome = Outcome(None, paid, 1, 200, 5.0, None, 1, 2)
    assert (outcome.input_tokens, outcome.output_tokens) == (6, 8)
    unpaid = Outcome(None, RowFailure("http", "503"), 3, 503, 1.0, None, 4, None)
    assert (unpaid.input_tokens, unpaid.output_tokens) == (4, None)
