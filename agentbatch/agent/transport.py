"""The HTTP seam: a small protocol, and its aiohttp implementation.

aiohttp is used because its per-request overhead is the lowest of the Python clients measured (a
bare aiohttp loop reaches ~82% of ideal throughput at 64 concurrent requests; httpx and the openai
client far less). Replies are read whole, under a size cap and the call's deadline, so a huge or
endless reply becomes a row error instead of a hang or an out-of-memory; a refusal (a status of 300
or more) over the cap keeps its status, and the policy for it, without its message.

Redirects are followed here, not by aiohttp (which follows up to 10 per call, each a POST the
agent may run, and turns a POST into a GET on 301/302/303): only a 307 or 308 within the agent's
origin (or from http to https on the same host), at most MAX_REDIRECTS per call, never back to a
URL already posted to. Any other redirect is a permanent row error naming where it pointed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from agentbatch.agent.redact import redact, safe_url
from agentbatch.agent.retry import is_unreadable_reply
from agentbatch.agent.sse import StreamEnd, stream_ended

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# Redirects followed in one call: each is one more POST the agent may run (and bill).
MAX_REDIRECTS = 2
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MESSAGE_CHARS = 300


@dataclass(slots=True)  # one per call: a frozen dataclass's __init__ costs 3x
class RawReply:
    status: int
    # Looked up by lower-case name (aiohttp's headers are case-insensitive).
    headers: Mapping[str, str]
    body: bytes
    # Redirects followed before this reply: each was one more POST sent.
    redirects: int = 0


# "http": a redirect not followed; "parse": a reply that came but cannot be read.
TransportErrorKind = Literal["timeout", "connection", "too_large", "http", "parse"]


class TransportError(Exception):
    """The call produced no reply to use. `retryable` follows retry.py's policy."""

    def __init__(
        self,
        kind: TransportErrorKind,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        # The HTTP status, when the server answered before the reply went wrong (too large, a
        # body that does not decode, a redirect not followed).
        self.status = status
        # Redirects followed before the failure: each was one more POST sent.
        self.redirects = 0


class Transport(Protocol):
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, stream: bool, timeout_s: float
    ) -> RawReply: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """One ClientSession with a connection pool sized for the concurrency ceiling."""

    def __init__(
        self,
        *,
        max_connections: int = 1024,
        verify_ssl: bool = True,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not verify_ssl:
            log.warning("TLS certificate verification is OFF for agent calls")
        self._max_connections = max_connections
        self._verify_ssl = verify_ssl
        self._max_body = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        # The headers sent for the caller's last headers object (callers reuse one per endpoint).
        self._headers_for: tuple[Mapping[str, str], bool, dict[str, str]] | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ttl_dns_cache=300,
                ssl=self._verify_ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                raise_for_status=False,
            )
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            import aiohttp

            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, stream: bool, timeout_s: float
    ) -> RawReply:
        import aiohttp

        session = self._get_session()
        send = self._send_headers(headers, stream)
        timeout = self._timeout(timeout_s)
        target: str | URL = url
        visited: list[URL] | None = None  # the URLs posted to, once a redirect came
        deadline = time.monotonic() + timeout_s  # the call's, redirects included
        try:
            while True:
                async with session.post(
                    target, data=body, headers=send, timeout=timeout, allow_redirects=False
                ) as resp:
                    status = resp.status
                    if status in _REDIRECT_STATUSES and "Location" in resp.headers:
                        if visited is None:
                            visited = [resp.url]
                        target = _with_credentials(_redirect_target(resp, visited), url)
                        timeout = _remaining(deadline, timeout_s)
                        continue
                    try:
                        data = await self._read(resp, stream=stream and status < 300)
                    except aiohttp.ClientPayloadError as e:
                        if not is_unreadable_reply(e):
                            raise
                        if _cut_short(resp, e):
                            raise TransportError(
                                "connection",
                                f"the connection closed inside the reply's "
                                f"{resp.headers.get('Content-Encoding')} stream (a body "
                                f"without a length, cut short): {_cause(e)}",
                                retryable=True,
                            ) from None
                        data = self._unreadable(status, e)
                    except TransportError as e:
                        if e.kind != "too_large" or status < 300:
                            raise
                        # A refusal over the cap keeps its status without its message, as one
                        # that does not decode does: the policy for that status still applies.
                        data = b""
                    redirects = 0 if visited is None else len(visited) - 1
                    return RawReply(status, resp.headers, data, redirects)
        except TransportError as e:
            e.redirects = 0 if visited is None else len(visited) - 1
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise self._failed(
                TransportError(
                    "timeout", f"no complete reply within {timeout_s:g}s", retryable=True
                ),
                visited,
            ) from None
        except aiohttp.ClientSSLError as e:
            raise self._failed(
                TransportError("connection", _describe(e), retryable=False), visited
            ) from None
        except aiohttp.InvalidURL as e:
            raise self._failed(
                TransportError("connection", f"invalid URL: {_describe(e)}", retryable=False),
                visited,
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            if is_unreadable_reply(e):
                # The status line and headers could not be read: aiohttp keeps no status.
                error = TransportError(
                    "parse", f"the reply's headers could not be read: {_cause(e)}", retryable=False
                )
            else:
                error = TransportError("connection", _describe(e), retryable=True)
            raise self._failed(error, visited) from None

    @staticmethod
    def _failed(error: TransportError, visited: list[URL] | None) -> TransportError:
        error.redirects = 0 if visited is None else len(visited) - 1
        return error

    @staticmethod
    def _unreadable(status: int, error: BaseException) -> bytes:
        """A whole reply whose body cannot be decoded: an answer (2xx) is a permanent row error
        keeping its status; a refusal keeps its status without its message, so the policy for
        that status (retry, refresh, stop) still applies."""
        if 200 <= status < 300:
            raise TransportError(
                "parse",
                f"HTTP {status} reply could not be read: {_cause(error)}",
                retryable=False,
                status=status,
            )
        return b""

    def _send_headers(self, headers: Mapping[str, str], stream: bool) -> dict[str, str]:
        last = self._headers_for
        if last is not None and last[0] is headers and last[1] == stream:
            return last[2]
        send = {"Content-Type": "application/json", **headers}
        if stream:
            send["Accept"] = "text/event-stream"
        self._headers_for = (headers, stream, send)
        return send

    async def _read(self, resp: aiohttp.ClientResponse, *, stream: bool) -> bytes:
        length = _plain_length(resp)
        if length is not None and length > self._max_body:
            raise self._too_large(resp.status)
        if length is not None and not stream:
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        # An SSE stream is complete at its end event: do not wait for a lingering connection.
        end = StreamEnd() if stream else None
        try:
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > self._max_body:
                    raise self._too_large(resp.status)
                chunks.append(chunk)
                if end is not None and end.feed(chunk):
                    break
        except TransportError:
            raise
        except Exception:
            # A stream that already holds its end (one StreamEnd did not see: an end event not
            # at the start of its data, `\r` line breaks) is the whole answer: the deadline or
            # a dropped connection after it loses nothing, and re-sending would pay again.
            if end is not None and chunks:
                data = b"".join(chunks)
                if stream_ended(data):
                    return data
            raise
        return b"".join(chunks)

    def _too_large(self, status: int) -> TransportError:
        return TransportError(
            "too_large",
            f"reply larger than the {self._max_body} byte cap",
            retryable=False,
            status=status,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _plain_length(resp: aiohttp.ClientResponse) -> int | None:
    """The body's length as read, when the headers tell it: not for a compressed body, whose
    Content-Length is what it unpacks from (a small gzip can unpack past any cap)."""
    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    return resp.content_length


def _cut_short(resp: aiohttp.ClientResponse, error: BaseException) -> bool:
    """Whether a body its decoder refused was cut short rather than undecodable: one without a
    length (read until the connection closes, RFC 9112 section 6.3) whose connection closed
    inside its deflate stream. aiohttp's decoder refuses that at the end of data
    (http_parser.py, `DeflateBuffer.feed_eof`: ContentEncodingError "deflate"), raised when the
    connection is lost as "Response payload is not completed" (client_proto.py,
    `connection_lost`), where a body with a length cut short is a ContentLengthError. A body
    with a length that came whole, or bytes that do not decode, are no cut: they stay a reply
    that came and cannot be read (permanent), or re-sending would pay for it again."""
    headers = resp.headers
    if "Content-Length" in headers or "chunked" in headers.get("Transfer-Encoding", "").lower():
        return False
    return str(error).startswith("Response payload is not completed")


def _describe(error: BaseException) -> str:
    text = str(error) or error.__class__.__name__
    return redact(f"{error.__class__.__name__}: {text}")


def _cause(error: BaseException) -> str:
    """aiohttp's message for a reply it could not read, from the parser's own error."""
    text = str(error) or error.__class__.__name__
    current: BaseException | None = error
    while current is not None:
        message = getattr(current, "message", None)
        if isinstance(message, str) and message:
            text = message
            break
        current = current.__cause__
    text = " ".join(text.split())
    if len(text) > _MESSAGE_CHARS:
        text = text[:_MESSAGE_CHARS] + "…"
    return redact(text)


def _redirect_target(resp: aiohttp.ClientResponse, visited: list[URL]) -> URL:
    """Where a redirect sends the POST (added to `visited`), or the permanent error saying why
    it is not followed."""
    from yarl import URL

    status = resp.status
    here = resp.url
    try:
        target = here.join(URL(resp.headers["Location"]))
        target.origin()
    except ValueError:
        target = None
    if target is None:
        raise _not_followed(status, None, "its Location is not a URL")
    if status in (301, 302, 303):
        # aiohttp would re-send it as a GET: an agent answers that with 405, or a sign-in page.
        raise _not_followed(status, target, "it would turn the POST into a GET")
    if not _same_origin(here, target):
        raise _not_followed(
            status,
            target,
            "another origin (the request and its credentials go only to the agent's own; "
            "if the agent has moved, point the endpoint at its new URL)",
        )
    if target.with_fragment(None) in visited and "Set-Cookie" not in resp.headers:
        raise _not_followed(status, target, "a redirect loop")
    if len(visited) > MAX_REDIRECTS:
        raise _not_followed(status, target, f"more than {MAX_REDIRECTS} redirects in a row")
    target = target.with_fragment(None)
    visited.append(target)
    return target


def _with_credentials(target: URL, url: str) -> URL:
    """`target` with the user and password of the endpoint's URL: aiohttp sends them as Basic
    auth, and leaves them out of the reply's URL (the redirect stays within the origin)."""
    from yarl import URL

    first = URL(url)
    if first.user is None:
        return target
    return target.with_user(first.user).with_password(first.password)


def _same_origin(here: URL, target: URL) -> bool:
    if here.origin() == target.origin():
        return True
    # http to https on the same host (default ports): the same agent, over TLS.
    return (
        here.scheme == "http"
        and target.scheme == "https"
        and here.host == target.host
        and here.port == 80
        and target.port == 443
    )


def _not_followed(status: int, target: URL | None, why: str) -> TransportError:
    where = f" to {safe_url(str(target))}" if target is not None else ""
    return TransportError(
        "http",
        redact(f"HTTP {status} redirect{where} not followed: {why}"),
        retryable=False,
        status=status,
    )


def _remaining(deadline: float, timeout_s: float) -> aiohttp.ClientTimeout:
    """The call's deadline covers its redirects: each hop gets what is left of it."""
    import aiohttp

    left = deadline - time.monotonic()
    if left <= 0:
        raise asyncio.TimeoutError
    return aiohttp.ClientTimeout(total=min(left, timeout_s))
