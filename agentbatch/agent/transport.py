"""The HTTP seam: a small protocol, and its aiohttp implementation.

aiohttp is used because its per-request overhead is the lowest of the Python clients measured (a
bare aiohttp loop reaches ~82% of ideal throughput at 64 concurrent requests; httpx and the openai
client far less). Replies are read whole, under a size cap and the call's deadline, so a huge or
endless reply becomes a row error instead of a hang or an out-of-memory; a refusal (a status of 300
or more) over the cap keeps its status, and the policy for it, without its message.

Compressed replies (`gzip`, `deflate`, the only codings asked for) are unpacked here, not by
aiohttp, whose gzip decoder takes a stream that ends unfinished for a whole one: a body without a
length (read until the connection closes, RFC 9112 section 6.3) is complete when its stream's
end came, cut short when the connection closed before it (transient, sent again), and read
without waiting for a connection the server keeps open after it. A plain JSON body without a
length is cut short when it ends inside a string, an array or an object.

Redirects are followed here, not by aiohttp (which follows up to 10 per call, each a POST the
agent may run, and turns a POST into a GET on 301/302/303): only a 307 or 308 within the agent's
origin (or from http to https on the same host), at most MAX_REDIRECTS per call, never back to a
URL already posted to. Any other redirect is a permanent row error naming where it pointed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
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
# The codings unpacked here (RFC 9110 section 8.4.1), asked for in every request's
# Accept-Encoding; a reply in another one aiohttp reads as it reads an unknown coding.
_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
_UNSUPPORTED_CODINGS = frozenset({"br", "zstd"})
_ACCEPT_ENCODING = "gzip, deflate"


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
                    target,
                    data=body,
                    headers=send,
                    timeout=timeout,
                    allow_redirects=False,
                    auto_decompress=False,
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
    def _unreadable(status: int, error: BaseException, coding: str | None = None) -> bytes:
        """A whole reply whose body cannot be decoded: an answer (2xx) is a permanent row error
        keeping its status; a refusal keeps its status without its message, so the policy for
        that status (retry, refresh, stop) still applies."""
        if 200 <= status < 300:
            raise TransportError(
                "parse",
                f"HTTP {status} reply could not be read: "
                + (f"Can not decode content-encoding: {coding}: " if coding else "")
                + _cause(error),
                retryable=False,
                status=status,
            )
        return b""

    def _send_headers(self, headers: Mapping[str, str], stream: bool) -> dict[str, str]:
        last = self._headers_for
        if last is not None and last[0] is headers and last[1] == stream:
            return last[2]
        send = {"Content-Type": "application/json", "Accept-Encoding": _ACCEPT_ENCODING, **headers}
        if stream:
            send["Accept"] = "text/event-stream"
        self._headers_for = (headers, stream, send)
        return send

    async def _read(self, resp: aiohttp.ClientResponse, *, stream: bool) -> bytes:
        coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if coding in _UNSUPPORTED_CODINGS:
            # Not asked for, and not read here: a reply that came and cannot be read.
            return self._unreadable(
                resp.status, ValueError(f"Can not decode content-encoding: {coding}")
            )
        unpack = _Unpacker(coding) if coding in _CODINGS else None
        length = resp.content_length if unpack is None else None
        if length is not None and length > self._max_body:
            raise self._too_large(resp.status)
        if length is not None and not stream:
            return await resp.read()
        # Read until the connection closes (RFC 9112 section 6.3): complete at the end of its
        # compressed stream, if it has one.
        until_close = "Content-Length" not in resp.headers and (
            "chunked" not in resp.headers.get("Transfer-Encoding", "").lower()
        )
        chunks: list[bytes] = []
        size = 0
        # An SSE stream is complete at its end event: do not wait for a lingering connection.
        end = StreamEnd() if stream else None
        try:
            async for chunk in resp.content.iter_any():
                if unpack is not None:
                    try:
                        chunk = unpack.feed(chunk, self._max_body - size)
                    except zlib.error as e:
                        return self._unreadable(resp.status, e, coding)
                size += len(chunk)
                if size > self._max_body:
                    raise self._too_large(resp.status)
                chunks.append(chunk)
                if end is not None and end.feed(chunk):
                    break
                if unpack is not None and unpack.done and until_close:
                    break
            else:
                if unpack is not None and not unpack.done and unpack.fed:
                    if until_close:
                        raise TransportError(
                            "connection",
                            f"the connection closed inside the reply's {coding} stream (a "
                            "body without a length, cut short)",
                            retryable=True,
                        )
                    # Its whole length came, and its stream does not end: no cut, re-sending
                    # would pay for the same reply.
                    return self._unreadable(
                        resp.status, ValueError("the compressed stream ends unfinished"), coding
                    )
                if (
                    until_close
                    and unpack is None
                    and 200 <= resp.status < 300
                    and not resp.content_type.endswith("event-stream")
                    and _json_left_open(b"".join(chunks))
                ):
                    raise TransportError(
                        "connection",
                        "the connection closed inside the reply's JSON (a body without a "
                        "length, cut short)",
                        retryable=True,
                    )
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


class _Unpacker:
    """A `gzip` or `deflate` body unpacked as it comes, knowing when its stream has ended."""

    __slots__ = ("_coding", "_inflate", "done", "fed")

    def __init__(self, coding: str) -> None:
        self._coding = _CODINGS[coding]
        self._inflate: zlib._Decompress | None = None
        self.done = False  # the stream's end came
        self.fed = False

    def feed(self, data: bytes, room: int) -> bytes:
        """What `data` unpacks to: at most `room + 1` bytes, so a small body that unpacks past
        the size cap is refused without unpacking it all. Raises zlib.error for bytes that do
        not decode."""
        out = b""
        while data:
            if self._inflate is None or self.done:
                # Another gzip member (RFC 1952 section 2.2); deflate has one stream.
                # Trailing zero bytes some servers pad with are no member.
                if self.done and (self._coding == "deflate" or not data.strip(b"\0")):
                    break
                # RFC 9110's deflate is zlib-wrapped (RFC 1950); servers also send the bare
                # deflate stream (RFC 1951), read as aiohttp reads it (by its first byte).
                wbits = 31 if self._coding == "gzip" else 15 if data[0] & 0x0F == 8 else -15
                self._inflate = zlib.decompressobj(wbits)
                self.done = False
            self.fed = True
            out += self._inflate.decompress(data, max(room - len(out), 0) + 1)
            if len(out) > room:
                return out
            self.done = self._inflate.eof
            data = self._inflate.unused_data if self.done else self._inflate.unconsumed_tail
        return out


# A JSON string, escapes included (the unrolled loop: linear on any text).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _json_left_open(body: bytes) -> bool:
    """Whether a JSON text ends inside a string, an array or an object: what a body read until
    the connection closed holds when the server died while writing it. A text whose every
    string and bracket closed is what the server meant to send, read as it is."""
    if b"\0" in body:  # UTF-16 or UTF-32: not JSON this reads
        return False
    # Only a text that begins as JSON text does (after a BOM and whitespace) was cut inside its
    # JSON: a page or a plain text's quotes and brackets say nothing (minified script quotes).
    if not body.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n").startswith((b"{", b"[", b'"')):
        return False
    outside = _JSON_STRING.sub(b"", body)
    if b'"' in outside:
        return True
    return outside.count(b"{") + outside.count(b"[") > outside.count(b"}") + outside.count(b"]")


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
