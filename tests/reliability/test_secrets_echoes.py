"""An agent URL's own credentials (`http://user:password@host/...?code=KEY`, given as a job's
`agent.endpoint` or with `--endpoint NAME=URL`) echoed back by the agent in every way a real server
does it: the path and query it was asked for in a 400, the raw query string in a 500, the `code`
value alone in a 403 (which stops the run), the Basic credential an HTTP client makes of the
password, the password itself, a redirect to a non-HTTP URL carrying a token (aiohttp's error
quotes it), an error event in a reply that is not JSON.

The agent is a real HTTP server on 127.0.0.1; the commands are the CLI's (`run -v --json`, a
second `run`, `show`) and the Python API's. Every surface is searched for the credentials: stdout,
stderr, log records, exception messages, the output table (Parquet, decoded), the ledger (SQLite,
Arrow blobs decoded), every file the runs left.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiohttp import web

import agentbatch
from agentbatch.agent.replies import MESSAGE_CHARS
from agentbatch.cli.main import main
from agentbatch.errors import AgentError
from agentbatch.testing.background import BackgroundServer

from .secret_search import file_texts, leaks

TICKETS = Path(agentbatch.__file__).parent / "data" / "support_tickets.csv"
JOBS = Path(agentbatch.__file__).parent.parent / "jobs"
ROWS = 3


def _answer(text: str) -> dict[str, Any]:
    return {
        "object": "response",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text}],
            }
        ],
    }


class EchoingAgent:
    """Answers every POST as `mode` says, echoing what the request carried."""

    def __init__(self, mode: str, token: str) -> None:
        self.mode = mode
        self.token = token  # carried by the redirect modes' Location
        self.posts = 0
        self.authorizations: list[str] = []

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405)  # the run's probe
        self.posts += 1
        authorization = request.headers.get("Authorization", "")
        self.authorizations.append(authorization)
        credential = authorization.partition(" ")[2]
        mode = self.mode
        if mode == "path_qs_400":
            message = f"no route for POST {request.path_qs}"
            return web.json_response({"error": {"message": message}}, status=400)
        if mode == "query_string_500":
            return web.Response(text=f"bad query {request.query_string}", status=500)
        if mode == "code_403":
            message = f"key {request.query.get('code')} is not valid for this function"
            return web.json_response({"error": {"message": message}}, status=403)
        if mode == "basic_credential_400":
            message = f"credential {credential} refused"
            return web.json_response({"error": {"message": message}}, status=400)
        if mode == "password_400":
            user, _, password = base64.b64decode(credential).decode().partition(":")
            message = f"user {user} password {password} is wrong"
            return web.json_response({"error": {"message": message}}, status=400)
        if mode == "redirect_non_http":
            location = f"ftp://bob:{self.token}@127.0.0.1/drop?sig={self.token}"
            raise web.HTTPTemporaryRedirect(location)
        if mode == "answer_echo":
            return web.json_response(_answer(f"you sent {authorization} to {request.path_qs}"))
        if mode == "authorization_answer":  # a header the run sends is scrubbed from answers
            return web.json_response(_answer(f"you sent {authorization}"))
        if mode == "long_400":  # the password and key fall where a long message is cut
            user, _, password = base64.b64decode(credential).decode().partition(":")
            message = "x" * (MESSAGE_CHARS - 12) + f" {password} {request.query.get('code')}"
            return web.json_response({"error": {"message": message}}, status=400)
        if mode == "error_event_not_json":
            event = {"type": "error", "error": {"message": f"code {request.query.get('code')}"}}
            return web.Response(text=f"data: {json.dumps(event)}\n\n", content_type="text/plain")
        return web.json_response(_answer("fine"))


@contextmanager
def serve_echoing(mode: str, token: str) -> Iterator[tuple[str, EchoingAgent]]:
    agent = EchoingAgent(mode, token)
    with BackgroundServer(agent.build_app, name=f"echoing-agent-{mode}") as server:
        yield server.url, agent


def credentials() -> tuple[str, str, str]:
    """A fresh password, `code` key and redirect token: one test's secrets are no other's."""
    return (
        "pw" + secrets.token_hex(10),
        "key" + secrets.token_hex(10),
        "sig" + secrets.token_hex(10),
    )


def secret_forms(user: str, password: str, *others: str) -> list[str]:
    pair = f"{user}:{password}".encode()
    basic = [base64.b64encode(pair).decode(), base64.urlsafe_b64encode(pair).decode()]
    return [password, *basic, *others]


def write_job(project: Path, endpoint: str) -> Path:
    job = project / "jobs" / "echo.yml"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_text(
        f"""
name: echo
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
  where: "status = 'open'"
request: "concat('Reply to: ', subject)"
agent:
  endpoint: {json.dumps(endpoint)}
  timeout_seconds: 5
  max_retries: 0
output:
  table: main.support.echo_out
  mode: merge
"""
    )
    return job


ECHO_MODES = [
    "path_qs_400",
    "query_string_500",
    "code_403",
    "basic_credential_400",
    "password_400",
    "redirect_non_http",
    "error_event_not_json",
    "authorization_answer",
    "long_400",
]


@pytest.mark.parametrize("mode", ECHO_MODES)
def test_an_agent_echoing_its_url_credentials_leaks_them_nowhere_through_the_cli(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password, code, token = credentials()
    user = "u" + secrets.token_hex(3)  # a user name is masked down to three characters
    with serve_echoing(mode, token) as (url, agent):
        endpoint = url.replace("http://", f"http://{user}:{password}@") + f"/agent?code={code}"
        job = write_job(tmp_path / "project", "support-agent")
        out = tmp_path / "project" / "out.parquet"
        run = [
            "run",
            str(job),
            "--table",
            f"main.support.tickets={TICKETS}",
            "--table",
            f"main.support.echo_out={out}",
            "--endpoint",
            f"support-agent={endpoint}",
            "--state-dir",
            str(tmp_path / "project" / "state"),
            "--limit",
            str(ROWS),
        ]
        first = main(["-v", *run, "--json"])
        printed_first = capsys.readouterr()
        second = main([*run, "--retry-errors"])
        printed_second = capsys.readouterr()
        shown = main(["show", "main.support.echo_out", "--table", f"main.support.echo_out={out}"])
        printed_show = capsys.readouterr()
    assert agent.posts >= 1, "the agent was never called"
    assert f"{user}:{password}".encode() in base64.b64decode(
        agent.authorizations[0].partition(" ")[2]
    ), "the URL's password did not reach the agent"
    if mode == "code_403":
        assert first == second == 6  # the refusal stops the run, quoting the server's words
        assert "is not valid for this function" in printed_first.err
    elif mode == "authorization_answer":
        assert first == second == shown == 0
        responses = pq.read_table(out).column("response").to_pylist()
        assert len(responses) >= ROWS and set(responses) == {"you sent Basic ***"}, responses
    else:
        assert first == second == shown == 0
        errors = pq.read_table(out).column("error").to_pylist()
        assert len(errors) == ROWS and all(errors), errors  # each row is the echo, masked
        assert all("***" in e for e in errors), errors
    places: dict[str, Any] = {
        "run -v --json stdout": printed_first.out,
        "run -v --json stderr": printed_first.err,
        "run --retry-errors stdout": printed_second.out,
        "run --retry-errors stderr": printed_second.err,
        "show stdout": printed_show.out,
        "show stderr": printed_show.err,
    }
    places.update(file_texts(tmp_path / "project"))
    # A secret cut in two by a message's length limit is still a secret: its first characters.
    parts = [password[:8], code[:8]]
    found = leaks([user, *parts, *secret_forms(user, password, code, token)], places)
    assert not found, found


def test_a_job_endpoint_url_echoed_back_leaks_nowhere_through_the_api(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The URL in the job file itself (no override); the Python API; log records at DEBUG."""
    password, code, token = credentials()
    places: dict[str, Any] = {}
    with serve_echoing("query_string_500", token) as (url, _):
        endpoint = url.replace("http://", f"http://alice:{password}@") + f"/agent?code={code}"
        job = write_job(tmp_path / "project", endpoint)
        out = tmp_path / "project" / "out.parquet"
        tables = {"main.support.tickets": str(TICKETS), "main.support.echo_out": str(out)}
        with caplog.at_level(logging.DEBUG):
            result = agentbatch.run(
                str(job),
                tables=tables,
                limit=ROWS,
                state_dir=tmp_path / "project" / "state",
                progress=False,
            )
            with result:
                rows = result.to_pandas().to_dict("records")
            places["summary"] = json.dumps(result.summary, default=str)
            places["rows"] = rows
            assert rows and all("HTTP 500" in r["error"] for r in rows), rows
    with serve_echoing("code_403", token) as (url, _):
        endpoint = url.replace("http://", f"http://alice:{password}@") + f"/agent?code={code}"
        job = write_job(tmp_path / "refused", endpoint)
        with caplog.at_level(logging.DEBUG), pytest.raises(AgentError) as refused:
            agentbatch.run(
                str(job),
                tables={"main.support.tickets": str(TICKETS)},
                limit=ROWS,
                state_dir=tmp_path / "refused" / "state",
                progress=False,
            )
        places["AgentError"] = f"{refused.value!s} {refused.value!r}"
    places["log records"] = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    # Every file the runs left; not the job files, which hold the URL they were given.
    places.update({k: v for k, v in file_texts(tmp_path).items() if "/jobs/" not in k})
    found = leaks(secret_forms("alice", password, code, token), places)
    assert not found, found


def test_eval_and_compare_against_credentialed_urls_leak_them_nowhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`compare --endpoint-a/--endpoint-b` and `eval --endpoint`, with reports: the agents echo
    the URL's path and query in a 400 and the Authorization header in an answer; the answers,
    scores, metrics and comparison tables (local warehouse, decoded), the ledgers, report.md,
    report.html and metrics.json, stdout and stderr are searched."""
    password, code, token = credentials()
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    job = project / "jobs" / "eval_triage.yml"
    job.write_text((JOBS / "eval_triage.yml").read_text())
    common = ["--table", f"main.support.tickets={TICKETS}", "--limit", "4", "--no-mlflow"]
    common += ["--state-dir", str(project / "state"), "--project-dir", str(project)]
    with (
        serve_echoing("path_qs_400", token) as (url_a, agent_a),
        serve_echoing("answer_echo", token) as (url_b, agent_b),
    ):
        a = url_a.replace("http://", f"http://alice:{password}@") + f"/a?code={code}"
        b = url_b.replace("http://", f"http://alice:{password}@") + f"/b?code={code}"
        compared = main(
            [
                "-v",
                "compare",
                str(job),
                "--endpoint-a",
                f"apps/triage-agent={a}",
                "--endpoint-b",
                f"apps/triage-agent={b}",
                "--report",
                str(project / "out" / "ab"),
                "--json",
                *common,
            ]
        )
        printed_compare = capsys.readouterr()
        evaluated = main(
            [
                "eval",
                str(job),
                "--endpoint",
                f"apps/triage-agent={a}",
                "--report",
                str(project / "out" / "eval"),
                *common,
            ]
        )
        printed_eval = capsys.readouterr()
        # Bare URLs, `=` in their query strings: taken whole, as the same agents.
        bare = main(["compare", str(job), "--endpoint-a", a, "--endpoint-b", b, *common])
        printed_bare = capsys.readouterr()
    assert agent_a.posts >= 8 and agent_b.posts >= 4
    assert compared == evaluated == 0, printed_compare.err + printed_eval.err
    assert bare == 0, printed_bare.err
    reports = sorted(p.name for p in (project / "out").rglob("*") if p.is_file())
    assert {"report.md", "report.html"} <= set(reports), reports
    places: dict[str, Any] = {
        "compare -v --json": printed_compare.out + printed_compare.err,
        "eval": printed_eval.out + printed_eval.err,
        "compare with bare URLs": printed_bare.out + printed_bare.err,
    }
    places.update({k: v for k, v in file_texts(project).items() if "/jobs/" not in k})
    assert any("duckdb (decoded)" in k for k in places)
    found = leaks(secret_forms("alice", password, code, token), places)
    assert not found, found
