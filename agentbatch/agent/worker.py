"""One row's call: build the body, send it through the limiter, parse the reply, retry per the
policy in retry.py. Returns an Outcome; raises AgentError only when the endpoint is unusable for
the whole run."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from agentbatch.agent.bodies import BodyBuilder, RequestError
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.content import RowFile
from agentbatch.agent.endpoints import Endpoint
from agentbatch.agent.limiter import Limiter
from agentbatch.agent.redact import answers_have_secrets, redact, redact_known
from agentbatch.agent.replies import AgentReply, RowFailure, error_message, truncate
from agentbatch.agent.response_format import ResponseFormat
from agentbatch.agent.responses import apply_response_format, loads, parse_json_reply
from agentbatch.agent.retry import (
    backoff_delay,
    describe_status,
    is_fatal,
    is_overload,
    parse_retry_after,
    should_retry,
)
from agentbatch.agent.sse import parse_sse
from agentbatch.agent.stats import BulkStats
from agentbatch.agent.transport import RawReply, Transport, TransportError
from agentbatch.errors import AgentError

# A row re-sent after this many forced refreshes, each refused again, fails the run: however often
# a long run sees its tokens rotated, one row never sees that many rotations in its own attempts.
MAX_REFRESHES_PER_ROW = 8


# json.dumps with any option builds a new JSONEncoder on every call (several microseconds):
# per row, one made once gives the same text (json.dumps(value, ensure_ascii=False, default=str)).
_CUSTOM_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


def _plus(a: int | None, b: int | None) -> int | None:
    """Two token counts added, either unknown (None) counting as nothing; None if both are."""
    if b is None:
        return a
    return b if a is None else a + b


@dataclass(slots=True, init=False)  # one per row: its __init__ written out, see below
class Outcome:
    reply: AgentReply | None
    failure: RowFailure | None
    attempts: int
    http_status: int | None
    latency_ms: float | None
    answered_at_us: int
    # The usage the row's earlier attempts reported, paid for and then sent again (an MLflow
    # error in a stream, a stream that ended early: see sse.py), None when none reported any.
    earlier_input_tokens: int | None
    earlier_output_tokens: int | None
    # The usage the agent reported for this row: its last reply's, an answer's or that of a reply
    # paid for that holds none (see RowFailure), plus its earlier attempts'. Added up once: the
    # stats, the budget and the commit each read it.
    input_tokens: int | None
    output_tokens: int | None

    def __init__(
        self,
        reply: AgentReply | None = None,
        failure: RowFailure | None = None,
        attempts: int = 0,
        http_status: int | None = None,
        latency_ms: float | None = None,
        answered_at_us: int | None = None,
        earlier_input_tokens: int | None = None,
        earlier_output_tokens: int | None = None,
    ) -> None:
        # One function, not a dataclass __init__ calling a default factory, __post_init__ and
        # _plus twice: a third of the instructions, once per row.
        self.reply = reply
        self.failure = failure
        self.attempts = attempts
        self.http_status = http_status
        self.latency_ms = latency_ms
        self.answered_at_us = time.time_ns() // 1000 if answered_at_us is None else answered_at_us
        self.earlier_input_tokens = earlier_input_tokens
        self.earlier_output_tokens = earlier_output_tokens
        # Read from the answer, else the failure (which holds the usage of a reply paid for
        # without an answer, see RowFailure).
        paid = reply if reply is not None else failure
        if paid is None:
            self.input_tokens = earlier_input_tokens
            self.output_tokens = earlier_output_tokens
        elif earlier_input_tokens is None and earlier_output_tokens is None:
            self.input_tokens = paid.input_tokens  # the common row: one attempt
            self.output_tokens = paid.output_tokens
        else:
            self.input_tokens = _plus(paid.input_tokens, earlier_input_tokens)
            self.output_tokens = _plus(paid.output_tokens, earlier_output_tokens)

    @property
    def custom_outputs_json(self) -> str | None:
        if self.reply is None or self.reply.custom_outputs is None:
            return None
        return _CUSTOM_JSON.encode(self.reply.custom_outputs)


@dataclass(slots=True)
class _Sent:
    """What one attempt produced: a reply, or a failure (with what the retry policy needs)."""

    result: AgentReply | RowFailure
    status: int | None
    latency_ms: float
    retry_after: str | None
    # The credentials generation the attempt used (see AuthHeaders).
    generation: int


class Caller:
    def __init__(
        self,
        *,
        call: CallSpec,
        endpoint: Endpoint,
        fmt: ResponseFormat | None,
        limiter: Limiter,
        transport: Transport,
        stats: BulkStats,
        rng: random.Random,
        stop: asyncio.Event,
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        self._call = call
        self._endpoint = endpoint
        self._fmt = fmt
        self._limiter = limiter
        self._transport = transport
        self._stats = stats
        self._rng = rng
        self._stop = stop
        # Asked once a slot is granted, right before a call is sent (the budget guard).
        self._may_send = may_send
        self._static_headers = dict(endpoint.headers)
        # Calls sent and not returned yet (redirects followed within one call count once).
        self.calls_out = 0

    async def call(
        self, bodies: BodyBuilder, request: str | None, file: RowFile | None = None
    ) -> Outcome | None:
        """The row's outcome, or None when the run stopped before the row was answered."""
        try:
            body = bodies.build(request, file)
        except RequestError as e:
            return Outcome(failure=RowFailure("request", truncate(str(e))))
        auth = self._endpoint.auth
        attempt = 0
        refreshes = 0
        # The usage of the attempts sent again: each was paid for (see Outcome).
        spent_in: int | None = None
        spent_out: int | None = None
        while True:
            if self._stop.is_set():
                return None
            attempt += 1
            sent = await self._attempt(body)
            if sent is None:
                return None
            failure = sent.result
            if isinstance(failure, AgentReply):
                # By position (reply, failure, attempts, http_status, latency_ms, answered_at_us,
                # earlier_input_tokens, earlier_output_tokens): one per row.
                return Outcome(
                    failure, None, attempt, sent.status, sent.latency_ms, None, spent_in, spent_out
                )
            if (
                failure.kind == "http"
                # Databricks refuses a revoked or expired token with 403 "Invalid access token."
                # as well as 401: both get one new token; a 403 that is no lack of credentials
                # comes back for the fresh token and stops the run as before.
                and sent.status in (401, 403)
                and auth is not None
                and refreshes < MAX_REFRESHES_PER_ROW
                and not auth.refused_after_refresh(sent.generation)
            ):
                # The token expired or was revoked (a rotation): one new token per generation,
                # however many calls saw the 401. Only a token a forced refresh minted that is
                # refused before any call succeeded with it stops the run (see AuthHeaders).
                refreshes += 1
                await auth.refresh(sent.generation)
                self._stats.retries += 1
                continue
            # Only a refusal stops the run; a reply gone wrong after its status is a row error.
            if failure.kind == "http" and sent.status is not None and is_fatal(sent.status):
                raise AgentError(failure.message)
            if failure.retryable and attempt <= self._call.max_retries:
                self._stats.retries += 1
                spent_in = _plus(spent_in, failure.input_tokens)
                spent_out = _plus(spent_out, failure.output_tokens)
                await self._pause(backoff_delay(attempt, sent.retry_after, self._rng))
                continue
            return Outcome(
                None, failure, attempt, sent.status, sent.latency_ms, None, spent_in, spent_out
            )

    async def _attempt(self, body: bytes) -> _Sent | None:
        """One HTTP attempt through the limiter; None if the run stopped while waiting."""
        limiter = self._limiter
        permit = limiter.acquire_now() or await limiter.acquire()
        if self._stop.is_set() or (self._may_send is not None and not self._may_send()):
            self._limiter.release(permit, "neutral")
            return None
        headers = self._static_headers
        generation = 0
        auth = self._endpoint.auth
        if auth is not None:
            # Read after the slot is granted: a refresh may have happened while waiting.
            auth_headers, generation = await auth.get()
            headers = {**auth_headers, **self._static_headers}
        self._stats.requests += 1
        started = time.perf_counter()
        self.calls_out += 1
        try:
            raw = await self._transport.post(
                self._endpoint.url,
                body,
                headers,
                stream=self._call.stream,
                timeout_s=self._call.timeout_s,
            )
        except TransportError as e:
            self._stats.requests += e.redirects  # each hop followed was one more request
            latency_ms = (time.perf_counter() - started) * 1000.0
            self._limiter.release(permit, "timeout" if e.kind == "timeout" else "neutral")
            failure = RowFailure(e.kind, redact(str(e)), retryable=should_retry(e))
            return _Sent(failure, e.status, latency_ms, None, generation)
        finally:
            self.calls_out -= 1
        latency_s = time.perf_counter() - started
        self._stats.requests += raw.redirects
        status = raw.status
        if 200 <= status < 300:
            self._limiter.release(permit, "ok", latency_s=latency_s)
            if auth is not None:
                auth.note_success(generation)
            return _Sent(self._parse(raw), status, latency_s * 1000.0, None, generation)
        retry_after = raw.headers.get("retry-after")
        if status == 429:
            self._stats.http_429 += 1
        # Only answers teach the limiter about latency: a fast refusal is no sample.
        self._limiter.release(
            permit,
            "overload" if is_overload(status) else "neutral",
            retry_after_s=parse_retry_after(retry_after),
        )
        failure = RowFailure(
            "http", self._describe(status, raw.body), retryable=should_retry(status), status=status
        )
        return _Sent(failure, status, latency_s * 1000.0, retry_after, generation)

    async def _pause(self, seconds: float) -> None:
        """Sleep before a retry, waking early if the run stops."""
        # asyncio.TimeoutError: on Python 3.10 it is not yet the builtin TimeoutError.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def _parse(self, raw: RawReply) -> AgentReply | RowFailure:
        content_type = raw.headers.get("content-type", "")
        body = _as_utf8(raw.body, content_type)
        # An agent that streams a call not asked to stream has answered it all the same.
        if (
            _is_sse(raw.body, content_type)
            if self._call.stream
            else "text/event-stream" in content_type
        ):
            parsed = parse_sse(body)
        else:
            parsed = parse_json_reply(body)
        if isinstance(parsed, AgentReply) and (
            self._endpoint.auth is not None or answers_have_secrets()
        ):
            # An agent must not be able to write our credentials into the output table (the
            # workspace's token, the Basic credential of a URL's user name and password).
            parsed = _without_secrets(parsed)
        if isinstance(parsed, AgentReply):
            parsed = apply_response_format(parsed, self._fmt)
        if isinstance(parsed, RowFailure):
            return dataclasses.replace(parsed, message=redact(parsed.message))
        return parsed

    def _describe(self, status: int, body: bytes) -> str:
        try:
            server = error_message(loads(body)) if body else None
        except ValueError:
            server = None
        if server is None and body:
            server = body.decode("utf-8", "replace").strip()
        return redact(
            describe_status(
                status,
                truncate(server) if server else None,
                endpoint_kind=self._endpoint.kind,
                endpoint=self._endpoint.name,
            )
        )


def _without_secrets(reply: AgentReply) -> AgentReply:
    """Every field the agent wrote that reaches the output table and the checkpoint."""
    text = redact_known(reply.text)
    trace_id = redact_known(reply.trace_id) if reply.trace_id is not None else None
    custom = reply.custom_outputs
    if custom is not None:
        dumped = _CUSTOM_JSON.encode(custom)
        cleaned = redact_known(dumped)
        if cleaned != dumped:
            custom = json.loads(cleaned)
    if text is reply.text and trace_id is reply.trace_id and custom is reply.custom_outputs:
        return reply
    return dataclasses.replace(reply, text=text, trace_id=trace_id, custom_outputs=custom)


def _as_utf8(body: bytes, content_type: str) -> bytes:
    """The body in UTF-8: JSON and event streams are UTF-8 (RFC 8259 section 8.1; WHATWG), but a
    server that says it sent another charset (`charset=iso-8859-1`) is read in that one, so its
    accented letters are neither refused nor replaced. An unknown or undecodable charset leaves
    the bytes to the UTF-8 rules."""
    lowered = content_type.lower()
    if "charset" not in lowered or "utf-8" in lowered:  # the common replies: nothing to parse
        return body
    import email.message

    message = email.message.Message()
    message["content-type"] = content_type
    charset = message.get_content_charset()
    try:
        if charset is None or codecs.lookup(charset).name in ("utf-8", "utf-8-sig"):
            return body
        return body.decode(charset).encode()
    except (LookupError, UnicodeDecodeError):
        return body


def _is_sse(body: bytes, content_type: str) -> bool:
    if "text/event-stream" in content_type:
        return True
    if "json" in content_type:
        return False
    head = body[:16].removeprefix(b"\xef\xbb\xbf").lstrip()  # a byte order mark: see sse.py
    return head.startswith((b"data:", b"event:", b":"))
