"""The retry policy, as pure functions.

Agents are not idempotent: a re-sent call may run the agent (and bill for it) twice. A call is
re-sent only when the failure says nothing usable came back:

* HTTP 408, 429 and every 5xx (the server said "not now" or failed before answering);
* connection errors (refused, reset, dropped mid-reply) and timeouts. A timed-out call IS re-sent,
  although the agent may have finished the work: the answer never reached us, and an answered row
  must not be lost;
* a stream that ended without its completion event or `[DONE]` (truncated);
* MLflow's AgentServer's in-stream `{"error": ...}`: the agent raised, where the same agent not
  streamed answers HTTP 500.

A call is never re-sent for: other 4xx (the row's error records the server's message), a complete
reply that does not parse or does not match the response format, a reply that came but cannot be
read (a body its Content-Encoding does not decode, a header over the HTTP parser's limit, a status
line, header or framing the parser refuses), a redirect that is not followed (see transport.py),
any other error the agent reported in its reply or stream, a reply over the size cap, or a request
that cannot be built.

401 and 403 are special: auth headers are refreshed once (the SDK mints a new token) and the row
re-sent, since Databricks answers a revoked or expired token with either ("Invalid access token."
is a 403 on its REST APIs); the same status for the fresh token aborts the run with AgentError,
naming the likely cause (no permission). 404 aborts the run at once (app stopped, wrong route).

Delays: capped exponential backoff with full jitter; a server's `Retry-After` (seconds or HTTP
date) is honoured, capped.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import random
from typing import Literal

from agentbatch.agent.redact import safe_url

BASE_DELAY_S = 0.5
MAX_DELAY_S = 30.0
MAX_RETRY_AFTER_S = 120.0

EndpointKind = Literal["app", "serving", "url", "builtin"]


def should_retry(outcome: int | BaseException) -> bool:
    """Whether a call that ended with this HTTP status or exception may be re-sent."""
    if isinstance(outcome, bool):
        raise TypeError("should_retry takes an HTTP status or an exception")
    if isinstance(outcome, int):
        return outcome in (408, 429) or 500 <= outcome <= 599
    retryable = getattr(outcome, "retryable", None)
    if isinstance(retryable, bool):
        return retryable
    return isinstance(outcome, TimeoutError | asyncio.TimeoutError | ConnectionError) or (
        _is_aiohttp_connection_error(outcome)
    )


def _is_aiohttp_connection_error(error: BaseException) -> bool:
    # aiohttp is only imported when such an error can exist, i.e. after a transport was made.
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(
        names
        & {
            "ClientConnectionError",
            "ClientPayloadError",
            "ServerDisconnectedError",
            "ServerTimeoutError",
        }
    ) and not is_unreadable_reply(error)


# aiohttp's errors (aiohttp/http_exceptions.py) for a reply that arrived but cannot be read: a
# body its Content-Encoding does not decode (not gzip although it says gzip; `br` without
# Brotli installed), a header or chunk line over the parser's limit, a status line or header
# the parser refuses (`HTTP/1.1 2OO`, a control character in a header name). A body cut short is
# another error (ContentLengthError, TransferEncodingError) and stays a connection error, as a
# gzip or deflate body without a length whose connection closed inside its stream is
# (transport.py unpacks those codings itself: `_Unpacker`).
_UNREADABLE = frozenset({"ContentEncodingError", "LineTooLong", "BadStatusLine", "InvalidHeader"})
# The parser's other refusals of a reply's framing (both Content-Length and Transfer-Encoding,
# two Content-Lengths, a chunk size that is not hex: aiohttp/_http_parser.pyx,
# `parser_error_from_errno`): the class itself only, as a body cut short is a subclass of it.
_UNREADABLE_EXACT = frozenset({"BadHttpMessage"})


def is_unreadable_reply(error: BaseException) -> bool:
    """Whether `error` says the server's reply came but cannot be read (see _UNREADABLE): the
    agent ran, and re-sending would pay again for the same unreadable reply."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:  # aiohttp wraps the parser's error once or twice
        if type(current).__name__ in _UNREADABLE_EXACT or any(
            cls.__name__ in _UNREADABLE for cls in type(current).__mro__
        ):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def is_overload(status: int | None) -> bool:
    """Statuses that mean "too many requests": the limiter shrinks on them."""
    return status in (429, 503)


def is_fatal(status: int) -> bool:
    """Statuses that make the endpoint unusable for the whole run (after a 401 refresh)."""
    return status in (401, 403, 404)


def parse_retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(
    attempt: int,
    retry_after: str | None,
    rng: random.Random,
    *,
    base_s: float = BASE_DELAY_S,
    cap_s: float = MAX_DELAY_S,
    retry_after_cap_s: float = MAX_RETRY_AFTER_S,
    now: datetime.datetime | None = None,
) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 1).

    With a `Retry-After`, wait that long (capped) plus a little jitter so that rows told the same
    time do not return in one burst; otherwise full jitter over a capped exponential.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    hinted = parse_retry_after(retry_after, now)
    if hinted is not None:
        hinted = min(hinted, retry_after_cap_s)
        return hinted + rng.uniform(0.0, min(1.0, 0.1 * hinted + 0.01))
    ceiling = min(cap_s, base_s * 2 ** min(attempt - 1, 30))
    return rng.uniform(0.0, ceiling)


def describe_status(
    status: int, server_message: str | None, *, endpoint_kind: EndpointKind, endpoint: str
) -> str:
    """The row/run error for an HTTP failure: status, likely cause, the server's message."""
    # The endpoint may be a URL carrying a password or a `?code=` key: never echo those.
    cause = _likely_cause(status, endpoint_kind, safe_url(endpoint))
    text = f"HTTP {status}"
    if cause:
        text += f" ({cause})"
    if server_message:
        text += f": {server_message}"
    return text


def _likely_cause(status: int, kind: EndpointKind, endpoint: str) -> str | None:
    if kind == "app":
        if status == 401:
            return f"the workspace refused the OAuth token for app {endpoint!r}"
        if status == 403:
            return f"no CAN USE permission on app {endpoint!r} for this identity"
        if status == 404:
            return f"app {endpoint!r} is stopped, not deployed, or has no /responses route"
        if status == 502:
            return f"app {endpoint!r} is not running or crashed"
    elif kind == "serving":
        if status == 401:
            return "the workspace refused the credentials"
        if status == 403:
            return f"no CAN QUERY permission on serving endpoint {endpoint!r}"
        if status == 404:
            return f"serving endpoint {endpoint!r} does not exist or does not serve this route"
    elif kind == "url":
        if status in (401, 403):
            return f"{endpoint} refused the request's credentials"
        if status == 404:
            return f"{endpoint} has no such route"
    if status == 429:
        return "rate limited"
    return None
