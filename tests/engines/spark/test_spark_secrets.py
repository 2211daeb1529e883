"""A job's env() values are masked in the error column on the executors as on the driver.

An executor's Python worker is a process of its own: what the driver registered to mask (the
values the job read with env()) reaches it with the call it runs, as the auth headers do. The agent
here quotes the request's `custom_inputs` (holding the env() value) in the message of a 400, which
becomes the row's error."""

from __future__ import annotations

import csv
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiohttp import web

import agentbatch
from agentbatch.testing.background import BackgroundServer

ROWS = 6
JOB = """
name: echo
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
request: "concat('Reply to: ', subject)"
agent:
  endpoint: apps/echo-agent
  api: responses
  max_retries: 0
  custom_inputs: {api_key: "{{ env('SUPPORT_API_KEY') }}"}
output:
  table: main.support.echo_out
  mode: merge
env: [SUPPORT_API_KEY]
"""


def _echo_app() -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405)  # the run's probe
        body = await request.json()
        if "messages" in body:  # a chat call of the registered ai_query: quote the prompt
            message = f"refused prompt {body['messages'][-1]['content']}"
        else:
            message = f"refused custom_inputs {json.dumps(body.get('custom_inputs'))}"
        return web.json_response({"error": {"message": message}}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
def echo_agent() -> Iterator[str]:
    with BackgroundServer(_echo_app, name="custom-inputs-echo") as server:
        yield server.url


@pytest.mark.parametrize("place", ["executors", "driver"])
def test_an_env_value_an_agent_quotes_in_its_error_is_masked_in_the_error_column(
    echo_agent: str,
    make_engine: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    place: str,
) -> None:
    make_engine()  # the suite's session is the active one: the run uses it
    value = "envkey-" + secrets.token_hex(10)
    monkeypatch.setenv("SUPPORT_API_KEY", value)
    tickets = tmp_path / "tickets.csv"
    with tickets.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ticket_id", "subject"])
        out.writerows([i, f"subject {i}"] for i in range(ROWS))
    job = tmp_path / "jobs" / "echo.yml"
    job.parent.mkdir()
    job.write_text(JOB)
    output = tmp_path / "echo_out.parquet"
    with agentbatch.run(
        job,
        target="spark",
        tables={"main.support.tickets": tickets, "main.support.echo_out": output},
        endpoints={"apps/echo-agent": echo_agent},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        settings={
            "warehouse_dir": str(tmp_path / "warehouse"),
            "rest_fallback_on": place,
            "partitions": 2,
        },
        progress=False,
    ) as result:
        assert result.summary["strategy"] == "rest-fallback"
    errors = [row["error"] for row in pq.read_table(output).to_pylist()]
    assert len(errors) == ROWS
    assert all('refused custom_inputs {"api_key": "***"}' in (e or "") for e in errors), errors
    assert not [e for e in errors if value in (e or "")], errors


PUSH_DOWN_JOB = """
name: echo_pd
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
request: "concat('Reply to: ', subject, ' with key ', {{ env('SUPPORT_API_KEY') }})"
agent: {endpoint: pdmodel, api: chat}
output: {table: main.support.echo_pd, mode: merge}
env: [SUPPORT_API_KEY]
"""


def test_an_env_value_in_a_prompt_quoted_back_is_masked_in_push_down_errors(
    echo_agent: str, make_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registered ai_query calls from the executors too (an Arrow UDF): its errorMessage,
    quoting the 400's message, is masked there."""
    make_engine()  # the suite's session is the active one: the run uses it
    value = "envkey-" + secrets.token_hex(10)
    monkeypatch.setenv("SUPPORT_API_KEY", value)
    tickets = tmp_path / "tickets.csv"
    tickets.write_text("ticket_id,subject\n" + "".join(f"{i},s{i}\n" for i in range(ROWS)))
    job = tmp_path / "jobs" / "echo_pd.yml"
    job.parent.mkdir()
    job.write_text(PUSH_DOWN_JOB)
    output = tmp_path / "echo_pd.parquet"
    with agentbatch.run(
        job,
        target="spark",
        tables={"main.support.tickets": tickets, "main.support.echo_pd": output},
        state_dir=tmp_path / "state",
        project_dir=tmp_path,
        settings={
            "warehouse_dir": str(tmp_path / "warehouse"),
            "ai_query_endpoints": {
                "pdmodel": f"{echo_agent}/serving-endpoints/pdmodel/invocations"
            },
            "max_retries": 0,
        },
        progress=False,
    ) as result:
        assert result.summary["strategy"] == "push-down"
    errors = [row["error"] for row in pq.read_table(output).to_pylist()]
    assert len(errors) == ROWS
    assert all("with key ***" in (e or "") for e in errors), errors
    assert not [e for e in errors if value in (e or "")], errors
