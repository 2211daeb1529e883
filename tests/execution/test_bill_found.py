"""The bill, end to end through the CLI against the loopback demo agent (it reports usage):
a reply paid for that holds no answer still counts, and an estimate counts and samples only
the rows a run sends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentbatch.testing.agent_server import serve_agent

# The demo agent answers "answer: Q: text 7" (4 output tokens) to "Q: text 7" (3 input tokens);
# under a response_format it answers {"answer": ...}, which has no field `label`: every reply
# is a response_format row error, after the agent answered (and billed) it.
JOB = """\
name: b
source: {table: main.s.src, key: id, columns: [txt]}
request: "concat('Q: ', txt)"
agent:
  endpoint: apps/a
  response_format: "STRUCT<label: STRING>"
  price: {input_per_million: 1000000, output_per_million: 1000000}
output: {table: main.s.out}
"""


def cli(tmp_path: Path, agent: Any, command: str, job: str, *args: str) -> Any:
    (tmp_path / "b.yml").write_text(job, encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agentbatch",
            command,
            str(tmp_path / "b.yml"),
            "--table",
            f"main.s.src={tmp_path / 'src.csv'}",
            "--table",
            f"main.s.out={tmp_path / 'out.parquet'}",
            "--endpoint",
            f"apps/a={agent.url}",
            "--state-dir",
            str(tmp_path / "state"),
            "--project-dir",
            str(tmp_path),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_replies_that_fail_the_response_format_are_paid_and_count_toward_the_budget(
    tmp_path: Path,
) -> None:
    rows = 60
    lines = ["id,txt", *(f"{i},text {i}" for i in range(1, rows + 1))]
    (tmp_path / "src.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with serve_agent() as agent:
        done = cli(
            tmp_path,
            agent,
            "run",
            JOB,
            "--max-tokens",
            "100",
            "--max-error-rate",
            "1",
            "--no-progress",
            "--show",
            "0",
        )
        sent = agent.stats().requests_total
    # Every reply used tokens: the limit stops the run long before its 60 rows.
    assert done.returncode == 7, done.stderr
    assert "budget reached (max_tokens 100" in done.stderr
    assert sent < rows
    written = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(written) == sent
    assert all(r["error"].startswith("[permanent] response_format") for r in written)
    # Each error row says what its reply used; the summary's tokens and cost are their sum.
    assert all(r["input_tokens"] and r["output_tokens"] for r in written)
    used = sum(r["input_tokens"] + r["output_tokens"] for r in written)
    summary = json.loads(done.stdout)["summary"]
    assert summary["input_tokens"] + summary["output_tokens"] == used
    assert summary["cost"] == used
    # Stopped at the limit: within one row's tokens of it (the rows use about the same).
    row = max(r["input_tokens"] + r["output_tokens"] for r in written)
    assert 100 - row < used <= 100 + row


def test_estimate_counts_and_samples_only_rows_with_a_request(tmp_path: Path) -> None:
    # Rows 2, 4, 6, 8 have no text: their request is NULL, answered without a call.
    lines = ["id,txt", *(f"{i}," + ("" if i in (2, 4, 6, 8) else f"t{i}") for i in range(1, 11))]
    (tmp_path / "src.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    job = JOB.replace('  response_format: "STRUCT<label: STRING>"\n', "")
    with serve_agent() as agent:
        done = cli(tmp_path, agent, "estimate", job, "--sample", "2", "--seed", "1")
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        assert agent.stats().requests_total == 2
    assert found["to_send"] == 6
    assert found["sampled"] == 2
    assert found["sample_errors"] == 0
    assert found["remaining"] == 4
    assert found["projected_tokens"] is not None


class _Backlogged(ThreadingHTTPServer):
    # The run opens about 60 connections at once: past socketserver's listen backlog (5) the
    # connects fail or wait for a SYN resend, and rows retrying when the budget stops are not sent
    # again (seen with aiohttp 3.9.5, the floor, to 3.11.0; not with 3.14).
    request_queue_size = 128


class _Redirecting(BaseHTTPRequestHandler):
    """An agent behind a 307 within its origin (followed: the same call), 10 tokens a row."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.endswith("/responses"):
            self.send_response(307)
            self.send_header("Location", "/answer")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(
            {
                "output": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "hi"}],
                    }
                ],
                "usage": {"input_tokens": 5, "output_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_redirect_followed_is_one_call_in_flight_not_two(tmp_path: Path) -> None:
    """Each call is two requests (the 307 and its answer): the guard counted every request sent
    minus the calls answered as in flight, so each answered row left one phantom call out and a
    run whose rows all fit stopped near half its limit."""
    rows = 200
    lines = ["id,txt", *(f"{i},text {i}" for i in range(1, rows + 1))]
    (tmp_path / "src.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    job = JOB.replace('  response_format: "STRUCT<label: STRING>"\n', "")
    server = _Backlogged(("127.0.0.1", 0), _Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        agent = SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}")
        done = cli(tmp_path, agent, "run", job, "--max-tokens", "1000", "--no-progress")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 7, done.stderr
    summary = json.loads(done.stdout)["summary"]
    # 100 rows of 10 tokens fit 1,000 exactly: all of them are sent, and no more.
    assert summary["input_tokens"] + summary["output_tokens"] == 1000
    assert summary["sent"] == 100


# A stream paid for and sent again: its usage chunk (a Chat stream's comes before `[DONE]`), then
# MLflow's in-stream error (retried as the HTTP 500 the agent answers not streamed), or the end
# of the body without `[DONE]` (truncated, retried).
RETRIED_USAGE = {"prompt_tokens": 10, "completion_tokens": 20}
ANSWER_USAGE = {"prompt_tokens": 10, "completion_tokens": 5}
STREAM_JOB = """\
name: b
source: {table: main.s.src, key: id, columns: [txt]}
request: "concat('Q: ', txt)"
agent:
  endpoint: apps/a
  api: chat
  stream: true
  max_retries: %d
  max_concurrency: 1
  price: {input_per_million: 1000000, output_per_million: 1000000}
output: {table: main.s.out}
"""


def _chunks(*events: Any) -> bytes:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode()


def _retried_stream(ending: str) -> bytes:
    paid = _chunks(
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hal"}}]},
        {"object": "chat.completion.chunk", "choices": [], "usage": RETRIED_USAGE},
    )
    return paid + (_chunks({"error": "the model crashed"}) if ending == "mlflow-error" else b"")


ANSWER_STREAM = (
    _chunks(
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "fine"}, "finish_reason": "stop"}],
        },
        {"object": "chat.completion.chunk", "choices": [], "usage": ANSWER_USAGE},
    )
    + b"data: [DONE]\n\n"
)


class _PaidThenAnswered(BaseHTTPRequestHandler):
    """Each row's first `server.failing` calls are paid-for streams that are sent again."""

    server: Any

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.server.lock:
            self.server.posts.append(body)
            seen = self.server.posts.count(body)
        reply = self.server.retried if seen <= self.server.failing else ANSWER_STREAM
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def _run_paid_then_answered(
    tmp_path: Path, ending: str, *, rows: int, failing: int, max_retries: int, args: list[str]
) -> tuple[Any, list[bytes]]:
    lines = ["id,txt", *(f"{i},text {i}" for i in range(1, rows + 1))]
    (tmp_path / "src.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _PaidThenAnswered)
    server.posts, server.lock, server.failing = [], threading.Lock(), failing
    server.retried = _retried_stream(ending)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        agent = SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}")
        done = cli(tmp_path, agent, "run", STREAM_JOB % max_retries, "--no-progress", *args)
    finally:
        server.shutdown()
        server.server_close()
    return done, server.posts


ENDINGS = ["mlflow-error", "truncated"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_an_attempt_paid_for_and_sent_again_counts_in_the_rows_usage(
    tmp_path: Path, ending: str
) -> None:
    """The row's token columns, the summary and the cost add every attempt's usage: they had the
    last attempt's only (15 tokens, not 45), and a truncated stream's usage was dropped."""
    done, posts = _run_paid_then_answered(
        tmp_path, ending, rows=1, failing=1, max_retries=2, args=["--show", "1"]
    )
    assert done.returncode == 0, done.stderr
    assert len(posts) == 2
    [row] = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert row["response"] == "fine" and row["attempts"] == 2
    assert (row["input_tokens"], row["output_tokens"]) == (20, 25)
    summary = json.loads(done.stdout)["summary"]
    assert (summary["input_tokens"], summary["output_tokens"], summary["cost"]) == (20, 25, 45)


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_row_failing_after_its_retries_counts_every_attempts_usage(
    tmp_path: Path, ending: str
) -> None:
    done, posts = _run_paid_then_answered(
        tmp_path, ending, rows=1, failing=99, max_retries=2, args=["--show", "1"]
    )
    assert len(posts) == 3
    [row] = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert row["error"].startswith("[transient] ") and row["attempts"] == 3
    assert (row["input_tokens"], row["output_tokens"]) == (30, 60)
    summary = json.loads(done.stdout)["summary"]
    assert (summary["input_tokens"], summary["output_tokens"]) == (30, 60)


def test_the_budget_counts_the_attempts_sent_again(tmp_path: Path) -> None:
    """45 tokens a row (30 for the attempt retried, 15 for the answer), one call at a time: a
    100-token limit stops the run after 2 rows (90). Counting only the answers (15), it let 6
    rows go, 270 tokens paid for."""
    done, posts = _run_paid_then_answered(
        tmp_path,
        "mlflow-error",
        rows=20,
        failing=1,
        max_retries=2,
        args=["--max-tokens", "100", "--show", "0"],
    )
    assert done.returncode == 7, done.stderr
    assert "budget reached (max_tokens 100" in done.stderr
    assert len(posts) == 4
    written = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(written) == 2
    summary = json.loads(done.stdout)["summary"]
    assert summary["input_tokens"] + summary["output_tokens"] == 90
