"""Push-down failures on the spark target keep their kind: the registered ai_query reports a 503
its retries did not get past as Databricks does, the SQL stores it `[transient]`, and the next
plain run sends exactly those rows again; a 400 stays `[permanent]` until --retry-errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.engines.spark.ai_query import error_message
from agentbatch.errors import JobFailedError, run_summary
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key
from tests.engines.spark.file_project import PUSH_DOWN, Project

OUTAGE = FaultConfig(permanent={"PERMANENT_ERROR": 400, "OUTAGE": 503})
BACK = FaultConfig(permanent={"PERMANENT_ERROR": 400})
TEXTS = {1: "fine", 2: "OUTAGE two", 3: "fine", 4: "OUTAGE four", 5: "PERMANENT_ERROR five"}
JOB = """\
name: pd_failures
source: {table: main.s.src, key: id, columns: [txt]}
request: "concat('Q: ', txt)"
agent: {endpoint: pdmodel, api: chat, fail_on_error: true}
output: {table: main.s.out, mode: merge}
"""


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent(OUTAGE) as server:
        yield server


def test_an_outage_is_transient_and_the_next_plain_run_fills_its_rows(
    agent: AgentServer, tmp_path: Path, make_engine: Any
) -> None:
    make_engine()  # the suite's session is the active one: the runs use it
    project = Project(tmp_path, agent, TEXTS, JOB, "pd.yml")

    def run(**options: Any) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
        try:
            # One retry a call: the REST client's back-off stays short.
            with agentbatch.run(project.job, **project.options(PUSH_DOWN), **options) as result:
                summary = dict(result.summary)
        except JobFailedError as failed:
            summary = {**(run_summary(failed) or {}), "failed": True}
        rows = {r["id"]: r for r in pq.read_table(project.out).to_pylist()}
        return summary, rows

    first, rows = run()
    assert first["strategy"] == "push-down" and first.get("failed")  # fail_on_error counts them
    assert (first["rows"], first["ok"], first["errors"]) == (5, 2, 3)
    for key in (2, 4):
        assert rows[key]["response"] is None
        assert rows[key]["error"] == (
            "[transient] [REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after "
            "retrying 1 times; the last failed HTTP error code was 503"
        )
    assert rows[5]["error"].startswith(
        "[permanent] [REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with "
        "code 400, and error message 'HTTP 400"
    )
    assert agent.stats().requests_for(request_key("Q: OUTAGE two")) == 2

    agent.configure(BACK)  # the outage is over
    second, rows = run()  # no --retry-errors
    assert (second["rows"], second["ok"], second["errors"]) == (2, 2, 0)
    assert (second["skipped"], second["skipped_errors"]) == (3, 1)
    assert second.get("failed")  # the 400 is still a failure of the selection
    answered = sorted(k for k, r in rows.items() if r["error"] is None and r["response"])
    assert answered == [1, 2, 3, 4]
    assert rows[5]["error"].startswith("[permanent] ")
    assert agent.stats().requests_for(request_key("Q: OUTAGE two")) == 3
    assert agent.stats().requests_for(request_key("Q: PERMANENT_ERROR five")) == 1  # not re-sent

    third, _ = run(retry_errors=True)  # the 400, sent again
    assert (third["rows"], third["errors"]) == (1, 1)
    assert agent.stats().requests_for(request_key("Q: PERMANENT_ERROR five")) == 2


@pytest.mark.parametrize(
    ("error", "status", "attempts", "message"),
    [
        (None, 200, 1, None),
        (
            "[transient] HTTP 429 (rate limited): slow down",
            429,
            9,
            "[REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying 8 "
            "times; the last failed HTTP error code was 429",
        ),
        (
            "[transient] no complete reply within 300s",
            None,
            9,
            "[REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying 8 "
            "times; the last failure was: no complete reply within 300s",
        ),
        (
            "[permanent] HTTP 400: bad request",
            400,
            1,
            "[REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with code 400, "
            "and error message 'HTTP 400: bad request'",
        ),
        (
            "[permanent] response_format: answer is not valid JSON: {",
            200,
            1,
            "response_format: answer is not valid JSON: {",
        ),
    ],
)
def test_row_errors_become_the_messages_databricks_gives(
    error: str | None, status: int | None, attempts: int, message: str | None
) -> None:
    assert error_message(error, status, attempts) == message
