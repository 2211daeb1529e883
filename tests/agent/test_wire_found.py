"""Replies real servers send that the fake agent does not, each run through `agentbatch.run` on
the local engine against a server on 127.0.0.1, and checked in the output table.

* An event stream that starts with a UTF-8 byte order mark (written by, e.g., .NET's
  `StreamWriter` with `Encoding.UTF8`): the WHATWG decoding of an event stream drops it
  ("UTF-8 decode", html.spec.whatwg.org, server-sent events, "Parsing an event stream"); read as
  a character, it made the first line's field name `\\ufeffdata` and the first event was lost: the
  row was stored with its answer missing its first part.
* A Responses reply that ends `incomplete` because of a content filter
  (`incomplete_details.reason` `content_filter`, openai-python `types/responses/response.py`,
  `IncompleteDetails.reason`): its text is what was left after the filter cut it, as a Chat
  choice's `finish_reason` `content_filter` is, and is a row error as that one is; it was stored
  as the answer.
* A reply whose status line, a header or its framing aiohttp's parser refuses (both
  Content-Length and Transfer-Encoding, which llhttp refuses against request smuggling; two
  Content-Lengths; a control character in a header name; a status that is not a number): a reply
  that came and cannot be read, as one with a header over the parser's limit is, so a permanent
  row error; it was a transient connection error, and the row was sent again `max_retries` times,
  each time for the same unreadable reply.
* A `Content-Encoding: deflate` body without a length (read until the connection closes) whose
  connection closed inside its deflate stream: a body cut short, sent again as one with a length
  cut short is (and as a gzip or plain event stream cut short is); it was a permanent row error,
  as aiohttp's decoder refuses the unfinished stream at the end of data. A deflate body that came
  whole (its Content-Length) but does not decode, or bytes that are not deflate, stay permanent.
* A plain JSON body without a length whose connection closed inside it (an agent server that died
  while writing it): `[permanent] reply is not JSON`, sent once and never asked again by a later
  run. It ends inside a string, an array or an object: cut short, sent again; a body whose every
  string and bracket closed (a login page, JSON with a bracket too many) stays permanent.
"""

from __future__ import annotations

import gzip
import json
import socketserver
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiohttp import web

import agentbatch
from agentbatch.agent.sse import StreamEnd
from agentbatch.testing.background import BackgroundServer

JOB = """\
name: wire
source:
  table: main.s.questions
  key: id
  columns: [question]
request: question
agent:
  endpoint: apps/wire-agent
  stream: {stream}
  timeout_seconds: {timeout}
  max_retries: 1
  fail_on_error: false
output:
  table: main.s.answers
  mode: merge
"""


def message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "m1",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


def run(tmp_path: Path, reply: tuple[str, bytes], *, stream: bool) -> list[dict[str, Any]]:
    """The output rows of a one-row job whose agent answers every POST with `reply`."""
    content_type, body = reply
    posts: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        posts.append(await request.text())
        return web.Response(body=body, headers={"Content-Type": content_type})

    def app() -> web.Application:
        application = web.Application()
        application.router.add_post("/responses", answer)
        return application

    with BackgroundServer(app) as server:
        rows = run_job(tmp_path, server.url, stream=stream)
    assert len(posts) == 1  # nothing here is worth paying for twice
    return rows


def run_job(
    tmp_path: Path, url: str, *, stream: bool = False, timeout: float = 300.0
) -> list[dict[str, Any]]:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "job.yml").write_text(JOB.format(stream=str(stream).lower(), timeout=timeout))
    (tmp_path / "questions.csv").write_text("id,question\n1,hello\n")
    out = tmp_path / "out.parquet"
    result = agentbatch.run(
        tmp_path / "job.yml",
        tables={"main.s.questions": tmp_path / "questions.csv", "main.s.answers": out},
        endpoints={"apps/wire-agent": url},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        progress=False,
    )
    assert result.summary["sent"] == 1
    rows: list[dict[str, Any]] = pq.read_table(out).to_pylist()
    assert len(rows) == 1
    return rows


def sse(*events: Any) -> tuple[str, bytes]:
    frames = [
        f"data: {e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)}\n\n"
        for e in events
    ]
    return "text/event-stream", "".join(frames).encode()


def test_a_stream_starting_with_a_byte_order_mark_keeps_its_first_event(tmp_path: Path) -> None:
    content_type, body = sse(
        {"type": "response.output_text.delta", "delta": "Hel"},
        {"type": "response.output_text.delta", "delta": "lo"},
        "[DONE]",
    )
    rows = run(tmp_path, (content_type, b"\xef\xbb\xbf" + body), stream=True)
    # It was "lo": the first event read as a line of an unknown field.
    assert rows[0]["response"] == "Hello" and rows[0]["error"] is None


def test_a_stream_sent_to_a_call_not_asked_to_stream_is_its_answer(tmp_path: Path) -> None:
    # An agent that always streams (it ignores `stream: false`) has answered the call: the row
    # was stored as `reply is not JSON`, its answer paid for and lost.
    content_type, body = sse(
        {"type": "response.output_text.delta", "delta": "Hel"},
        {"type": "response.output_text.delta", "delta": "lo"},
        "[DONE]",
    )
    rows = run(tmp_path, (f"{content_type}; charset=utf-8", body), stream=False)
    assert rows[0]["response"] == "Hello" and rows[0]["error"] is None


LATIN_1_ANSWER = "Café crème, señor"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_reply_in_the_charset_it_declares_is_read_in_it(tmp_path: Path, stream: bool) -> None:
    # JSON and event streams are UTF-8, but a server that says `charset=iso-8859-1` and sends
    # it was stored as `reply is not JSON` (paid for, lost) or with its letters replaced.
    if stream:
        _, body = sse({"type": "response.output_text.delta", "delta": LATIN_1_ANSWER}, "[DONE]")
        content_type = "text/event-stream; charset=ISO-8859-1"
    else:
        body = json.dumps({"output": [message(LATIN_1_ANSWER)]}, ensure_ascii=False).encode()
        content_type = "application/json; charset=iso-8859-1"
    latin_1 = body.decode().encode("iso-8859-1")
    rows = run(tmp_path, (content_type, latin_1), stream=stream)
    assert rows[0]["response"] == LATIN_1_ANSWER and rows[0]["error"] is None


def test_a_stream_that_is_not_utf8_is_a_row_error_not_a_misquoted_answer(tmp_path: Path) -> None:
    _, body = sse({"type": "response.output_text.delta", "delta": LATIN_1_ANSWER}, "[DONE]")
    rows = run(tmp_path, ("text/event-stream", body.decode().encode("iso-8859-1")), stream=True)
    # It was stored as the answer "Caf\ufffd cr\ufffdme, se\ufffdor".
    assert rows[0]["response"] is None
    assert "[permanent] stream is not UTF-8 text" in rows[0]["error"]


INCOMPLETE = {
    "id": "resp_1",
    "object": "response",
    "status": "incomplete",
    "incomplete_details": {"reason": "content_filter"},
    "output": [message("The first half of an answer the filter cut")],
}


@pytest.fixture(params=[False, True], ids=["json", "stream"])
def filtered(request: pytest.FixtureRequest) -> Iterator[tuple[bool, tuple[str, bytes]]]:
    if request.param:
        yield True, sse({"type": "response.incomplete", "response": INCOMPLETE}, "[DONE]")
    else:
        yield False, ("application/json", json.dumps(INCOMPLETE).encode())


def test_a_responses_reply_cut_by_a_content_filter_is_a_row_error(
    tmp_path: Path, filtered: tuple[bool, tuple[str, bytes]]
) -> None:
    stream, reply = filtered
    rows = run(tmp_path, reply, stream=stream)
    # It was stored as the answer: "The first half of an answer the filter cut".
    assert rows[0]["response"] is None
    assert rows[0]["error"].startswith("[permanent] reply withheld by a content filter")
    assert rows[0]["attempts"] == 1


def test_a_reply_cut_at_its_token_limit_is_still_the_answer(tmp_path: Path) -> None:
    """`max_output_tokens` stays an answer, as a Chat choice's `finish_reason` `length` is."""
    limited = {**INCOMPLETE, "incomplete_details": {"reason": "max_output_tokens"}}
    rows = run(tmp_path, ("application/json", json.dumps(limited).encode()), stream=False)
    assert rows[0]["response"] == "The first half of an answer the filter cut"


def test_the_end_of_a_stream_starting_with_a_byte_order_mark_is_seen() -> None:
    """The reader stops at the end event (the server may keep the connection open): with the
    mark, the first event was not seen as one, and a stream that was one end event waited for
    the deadline."""
    end = StreamEnd()
    assert end.feed(b'\xef\xbb\xbfdata: {"error": "boom"}\n\n')


ANSWER = json.dumps({"output": [message("fine")]}).encode()
MALFORMED = {
    "content-length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(ANSWER) + 12, len(ANSWER), ANSWER),
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Length: 1\r\n\r\n%s"
    % (len(ANSWER), ANSWER),
    "control-character-in-a-header": b"HTTP/1.1 200 OK\r\nX-Trace\x01: 1\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER),
    "status-not-a-number": b"HTTP/1.1 2OO OK\r\nContent-Length: %d\r\n\r\n%s"
    % (len(ANSWER), ANSWER),
}


class RawAgent(socketserver.ThreadingTCPServer):
    """Answers the n-th POST with the n-th reply (the last one from then on), bytes as they are,
    then closes the connection; counts the POSTs."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: bytes, *then: bytes, hold_s: float = 0.0) -> None:
        self.replies = [reply, *then]
        self.posts = 0
        # Seconds the connection stays open after the reply (a server that does not close it).
        self.hold_s = hold_s
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), RawHandler)

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()

    @property
    def reply(self) -> bytes:
        return self.replies[max(min(self.posts, len(self.replies)), 1) - 1]


class RawHandler(socketserver.StreamRequestHandler):
    server: RawAgent

    def handle(self) -> None:
        request_line = self.rfile.readline()
        length = 0
        while line := self.rfile.readline():
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        else:
            return
        self.rfile.read(length)
        # The run's probe (a bodiless GET) is no call.
        self.server.posts += request_line.startswith(b"POST ")
        self.wfile.write(self.server.reply)
        self.wfile.flush()
        self.server.stopping.wait(self.server.hold_s)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_reply_the_http_parser_refuses_is_a_permanent_row_error(
    tmp_path: Path, name: str
) -> None:
    with RawAgent(MALFORMED[name]) as agent:
        thread = threading.Thread(target=agent.serve_forever, daemon=True)
        thread.start()
        try:
            rows = run_job(tmp_path, f"http://127.0.0.1:{agent.server_address[1]}")
        finally:
            agent.shutdown()
    # It was `[transient] ClientResponseError: 400, ...`, and the row was sent twice (the job's
    # max_retries: 1; 9 times with the default 8).
    assert agent.posts == 1
    assert rows[0]["error"].startswith("[permanent] the reply's headers could not be read: ")
    assert rows[0]["attempts"] == 1


def test_a_refusal_over_the_size_cap_keeps_the_policy_of_its_status(tmp_path: Path) -> None:
    """A 503 whose page is over the reply cap (10 MiB) is still a 503: sent again after its
    Retry-After, as a 503 whose body does not decode is; it was a permanent row error."""
    posts: list[str] = []
    page = b"<html>" + b"busy " * (11 * 1024 * 1024 // 5) + b"</html>"

    async def answer(request: web.Request) -> web.Response:
        posts.append(await request.text())
        if len(posts) == 1:
            return web.Response(status=503, body=page, headers={"Retry-After": "0"})
        return web.json_response({"output": [message("fine")]})

    def app() -> web.Application:
        application = web.Application()
        application.router.add_post("/responses", answer)
        return application

    with BackgroundServer(app) as server:
        rows = run_job(tmp_path, server.url)
    assert len(posts) == 2
    assert rows[0]["response"] == "fine" and rows[0]["attempts"] == 2


def test_a_databricks_error_object_in_a_stream_fails_the_row_as_it_does_not_streamed(
    tmp_path: Path,
) -> None:
    """`{"error_code": ..., "message": ...}` after some text: the reply not streamed is an agent
    error; streamed, the event was skipped and the text before it stored as the answer."""
    error = {"error_code": "INTERNAL_ERROR", "message": "the model crashed"}
    rows = run(
        tmp_path,
        sse({"type": "response.output_text.delta", "delta": "The refund was"}, error, "[DONE]"),
        stream=True,
    )
    assert rows[0]["response"] is None
    assert (
        rows[0]["error"] == "[permanent] agent error in stream: INTERNAL_ERROR: the model crashed"
    )
    not_streamed = run(
        tmp_path / "json", ("application/json", json.dumps(error).encode()), stream=False
    )
    assert not_streamed[0]["error"] == "[permanent] agent error: INTERNAL_ERROR: the model crashed"


def raw_reply(
    body: bytes, *, stream: bool, headers: bytes = b"", coding: bytes = b"deflate"
) -> bytes:
    content_type = b"text/event-stream" if stream else b"application/json"
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Encoding: %s\r\n"
        b"Connection: close\r\n%s\r\n%s" % (content_type, coding, headers, body)
    )


def deflated(data: bytes, *, raw: bool) -> bytes:
    """zlib-wrapped deflate (RFC 1950, as RFC 9110 defines `deflate`), or the bare deflate
    stream (RFC 1951) servers also send, which aiohttp reads as well."""
    packer = zlib.compressobj(wbits=-15 if raw else 15)
    return packer.compress(data) + packer.flush()


def serve_raw(
    tmp_path: Path, *replies: bytes, stream: bool, hold_s: float = 0.0, timeout: float = 300.0
) -> tuple[RawAgent, dict[str, Any]]:
    with RawAgent(*replies, hold_s=hold_s) as agent:
        thread = threading.Thread(target=agent.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{agent.server_address[1]}"
            rows = run_job(tmp_path, url, stream=stream, timeout=timeout)
        finally:
            agent.shutdown()
    return agent, rows[0]


def answer_body(stream: bool) -> bytes:
    if stream:
        return sse({"type": "response.output_text.delta", "delta": "fine"}, "[DONE]")[1]
    return ANSWER


@pytest.mark.parametrize("raw", [False, True], ids=["zlib", "bare"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_deflate_body_without_a_length_cut_short_is_sent_again(
    tmp_path: Path, stream: bool, raw: bool
) -> None:
    whole = deflated(answer_body(stream), raw=raw)
    cut = raw_reply(whole[: len(whole) // 2], stream=stream)  # then the connection closes
    agent, row = serve_raw(tmp_path, cut, raw_reply(whole, stream=stream), stream=stream)
    # It was `[permanent] HTTP 200 reply could not be read: deflate`, sent once: a gzip or plain
    # stream cut so, and any body with a length cut short, was sent again.
    assert agent.posts == 2
    assert row["response"] == "fine" and row["error"] is None and row["attempts"] == 2


def test_a_deflate_body_cut_short_every_time_is_a_transient_row_error(tmp_path: Path) -> None:
    whole = deflated(ANSWER, raw=False)
    agent, row = serve_raw(tmp_path, raw_reply(whole[:20], stream=False), stream=False)
    assert agent.posts == 2  # the job's max_retries: 1
    assert row["error"].startswith(
        "[transient] the connection closed inside the reply's deflate stream"
    )


@pytest.mark.parametrize(
    "name",
    ["stream-unfinished-with-length", "not-deflate-with-length", "not-deflate-without-length"],
)
def test_a_deflate_body_that_came_whole_but_does_not_decode_is_permanent(
    tmp_path: Path, name: str
) -> None:
    """Sending it again would pay for the same reply: a body with its Content-Length all there,
    or bytes the decoder refuses as they come (not at the end of data), are no cut."""
    half = deflated(ANSWER, raw=False)[:40]
    reply = {
        "stream-unfinished-with-length": raw_reply(
            half, stream=False, headers=b"Content-Length: %d\r\n" % len(half)
        ),
        "not-deflate-with-length": raw_reply(
            b"x" * 40, stream=False, headers=b"Content-Length: 40\r\n"
        ),
        "not-deflate-without-length": raw_reply(b"x" * 40, stream=False),
    }[name]
    agent, row = serve_raw(tmp_path, reply, stream=False)
    assert agent.posts == 1
    assert row["error"].startswith("[permanent] ") and row["attempts"] == 1


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("coding", ["gzip", "x-gzip"])
def test_a_gzip_body_without_a_length_cut_short_is_sent_again(
    tmp_path: Path, stream: bool, coding: str
) -> None:
    """gzip ends with its length and CRC (RFC 1952 section 2.3): a body read until the
    connection closed whose gzip stream had not ended is cut short, as a deflate one is. aiohttp
    hands over what it unpacked: the JSON cut short was `[permanent] reply is not JSON`, sent
    once and never asked again by a later run."""
    whole = gzipped(answer_body(stream))
    cut = raw_reply(whole[: len(whole) // 2], stream=stream, coding=coding.encode())
    agent, row = serve_raw(
        tmp_path, cut, raw_reply(whole, stream=stream, coding=coding.encode()), stream=stream
    )
    assert agent.posts == 2
    assert row["response"] == "fine" and row["error"] is None and row["attempts"] == 2


def test_a_gzip_body_cut_short_every_time_is_a_transient_row_error(tmp_path: Path) -> None:
    whole = gzipped(ANSWER)
    cut = raw_reply(whole[: len(whole) - 4], stream=False, coding=b"gzip")  # all but its length
    agent, row = serve_raw(tmp_path, cut, stream=False)
    assert agent.posts == 2  # the job's max_retries: 1
    assert row["error"].startswith(
        "[transient] the connection closed inside the reply's gzip stream"
    )


def test_a_gzip_body_with_its_length_whose_stream_does_not_end_is_permanent(
    tmp_path: Path,
) -> None:
    """Its whole Content-Length came: no cut, and sending it again would pay for the same."""
    part = gzipped(ANSWER)[:-8]
    reply = raw_reply(
        part, stream=False, coding=b"gzip", headers=b"Content-Length: %d\r\n" % len(part)
    )
    agent, row = serve_raw(tmp_path, reply, stream=False)
    assert agent.posts == 1
    assert row["error"].startswith("[permanent] HTTP 200 reply could not be read: ")
    assert row["attempts"] == 1


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_whole_compressed_body_is_read_without_waiting_for_the_connection_to_close(
    tmp_path: Path, coding: str
) -> None:
    """A body without a length whose compressed stream has ended is whole, though the server
    keeps the connection open: it waited for the call's deadline, then was thrown away as a
    timeout and paid for again."""
    body = gzipped(ANSWER) if coding == "gzip" else deflated(ANSWER, raw=False)
    agent, row = serve_raw(
        tmp_path,
        raw_reply(body, stream=False, coding=coding.encode()),
        stream=False,
        hold_s=30.0,
        timeout=4.0,
    )
    # It was `[transient] no complete reply within 4s`, sent twice (the job's max_retries: 1).
    assert row["response"] == "fine" and row["error"] is None and row["attempts"] == 1
    assert agent.posts == 1


# A plain JSON reply without a length (read until the connection closes): an agent server that
# dies while writing it closes the connection inside the JSON.
PLAIN_CUTS = {
    "inside-a-string": ANSWER[: ANSWER.index(b"fine") + 2],
    "between-values": ANSWER[: ANSWER.index(b"[") + 1],
    "after-a-backslash": b'{"output": [{"type": "message", "content": "a \\',
}


@pytest.mark.parametrize("asked_stream", [False, True], ids=["json", "asked-stream"])
@pytest.mark.parametrize("cut", PLAIN_CUTS, ids=list(PLAIN_CUTS))
def test_a_plain_json_body_without_a_length_cut_short_is_sent_again(
    tmp_path: Path, cut: str, asked_stream: bool
) -> None:
    # A call that asked for a stream reads a JSON reply as its answer: the same cut.
    reply = raw_reply(PLAIN_CUTS[cut], stream=False, coding=b"identity")
    agent, row = serve_raw(
        tmp_path, reply, raw_reply(ANSWER, stream=False, coding=b"identity"), stream=asked_stream
    )
    # It was `[permanent] reply is not JSON`, sent once: no later run asked again.
    assert agent.posts == 2
    assert row["response"] == "fine" and row["error"] is None and row["attempts"] == 2


def test_a_plain_json_body_cut_short_every_time_is_a_transient_row_error(tmp_path: Path) -> None:
    reply = raw_reply(ANSWER[:30], stream=False, coding=b"identity")
    agent, row = serve_raw(tmp_path, reply, stream=False)
    assert agent.posts == 2  # the job's max_retries: 1
    assert row["error"].startswith("[transient] the connection closed inside the reply's JSON")


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Sign in</body></html>", ANSWER + b"}", b'{"output": [oops]}'],
    ids=["html", "closed-extra-bracket", "closed-bad-value"],
)
def test_a_plain_body_without_a_length_whose_brackets_all_closed_is_no_cut(
    tmp_path: Path, body: bytes
) -> None:
    """Its every string and bracket closed: the server sent what it meant to; sending it again
    would pay for the same reply."""
    agent, row = serve_raw(
        tmp_path, raw_reply(body, stream=False, coding=b"identity"), stream=False
    )
    assert agent.posts == 1
    assert row["error"].startswith("[permanent] ") and row["attempts"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b'<html><script>t.replace(/"/g,"&quot;")</script>Sign in</html>',
        b'Service unavailable: "apps/reviewer',
        b"Busy :-[ try later",
    ],
    ids=["page-with-a-script-quote", "text-with-an-open-quote", "text-with-an-open-bracket"],
)
def test_a_body_without_a_length_that_is_no_json_text_is_no_cut(
    tmp_path: Path, body: bytes
) -> None:
    """Not JSON from its first byte (a proxy's page, a plain text): its quotes and brackets say
    nothing of where it ends. It was `[transient] the connection closed inside the reply's JSON`,
    sent again by every later run."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n" + body
    agent, row = serve_raw(tmp_path, reply, stream=False)
    assert agent.posts == 1
    assert row["error"].startswith("[permanent] ") and row["attempts"] == 1
