"""The retry policy (pure functions, table-driven)."""

from __future__ import annotations

import asyncio
import datetime
import random

import aiohttp
import pytest

from agentbatch.agent.retry import (
    MAX_DELAY_S,
    MAX_RETRY_AFTER_S,
    backoff_delay,
    describe_status,
    is_fatal,
    is_overload,
    parse_retry_after,
    should_retry,
)
from agentbatch.agent.transport import TransportError

NOW = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (413, False),
        (422, False),
        (200, False),
        (TimeoutError(), True),
        (asyncio.TimeoutError(), True),
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientPayloadError("cut"), True),
        (TransportError("timeout", "t", retryable=True), True),
        (TransportError("too_large", "big", retryable=False), False),
        (ValueError("bad"), False),
    ],
)
def test_should_retry(outcome: int | BaseException, expected: bool) -> None:
    assert should_retry(outcome) is expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("-1", None),
        ("soon", None),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
        ("Sat, 01 Mar 2025 11:59:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(1, 20):
        ceiling = min(MAX_DELAY_S, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        # Full jitter: spread over the whole range, not clustered at the top.
        assert min(delays) < ceiling * 0.2 and max(delays) > ceiling * 0.8


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("2", 2.0, 2.3),
        ("0", 0.0, 0.02),
        ("100000", MAX_RETRY_AFTER_S, MAX_RETRY_AFTER_S + 1.0),
        ("Sat, 01 Mar 2025 12:00:10 GMT", 10.0, 11.1),
    ],
)
def test_backoff_honours_retry_after(header: str, low: float, high: float) -> None:
    rng = random.Random(2)
    for attempt in (1, 5):
        delay = backoff_delay(attempt, header, rng, now=NOW)
        assert low <= delay <= high


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, None, random.Random())


def test_overload_and_fatal_statuses() -> None:
    assert [s for s in (400, 401, 403, 404, 429, 500, 503) if is_overload(s)] == [429, 503]
    assert [s for s in (400, 401, 403, 404, 429, 500, 503) if is_fatal(s)] == [401, 403, 404]


@pytest.mark.parametrize(
    ("status", "kind", "cause"),
    [
        (403, "app", "no CAN USE permission on app 'triage'"),
        (404, "app", "stopped, not deployed, or has no /responses route"),
        (401, "app", "refused the OAuth token"),
        (403, "serving", "no CAN QUERY permission"),
        (404, "serving", "does not exist"),
        (429, "url", "rate limited"),
    ],
)
def test_describe_status_names_the_likely_cause(status: int, kind: str, cause: str) -> None:
    text = describe_status(status, "server says no", endpoint_kind=kind, endpoint="triage")  # type: ignore[arg-type]
    assert text.startswith(f"HTTP {status}")
    assert cause in text
    assert text.endswith(": server says no")
