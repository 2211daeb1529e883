"""Push-down failures on the databricks-sql target keep their kind: ai_query's message for a 503
(after its retries) is stored `[transient]` and the next plain run sends the row again; a 400
stays `[permanent]` until --retry-errors. Before, every push-down failure was `[permanent]`, so
a brief outage left its rows failed for every later scheduled run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import httpx
import pytest

import agentbatch
from agentbatch.errors import JobFailedError, run_summary
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key
from tests.support.databricks_env import isolate
from tests.support.warehouse.ai_query import RETRIES
from tests.support.warehouse.duckdb_executor import DuckDBExecutor
from tests.support.warehouse.server import Warehouse, serve_warehouse

TOKEN = "dapi-failures-test-token"
# Rows 2 and 4 meet an outage (503), row 5 a request the endpoint refuses (400).
REVIEWS = {1: "fine", 2: "OUTAGE two", 3: "fine", 4: "OUTAGE four", 5: "PERMANENT_ERROR five"}
OUTAGE = FaultConfig(permanent={"PERMANENT_ERROR": 400, "OUTAGE": 503})
BACK = FaultConfig(permanent={"PERMANENT_ERROR": 400})
JOB = """\
name: review_answers
source: {table: main.shop.reviews, key: review_id, columns: [review_text]}
request: "concat('Answer: ', review_text)"
agent: {endpoint: review-model, api: chat, fail_on_error: true}
output: {table: main.shop.review_answers, mode: merge}
"""


def serving_ai_query(agent_url: str) -> Any:
    """`ai_query` inside the warehouse: a chat call to the demo agent's Model Serving route; a
    refusal raises httpx's HTTPStatusError, which the loopback reports as Databricks does."""

    def ai_query(endpoint: str, request: Any, **named: Any) -> str:
        reply = httpx.post(
            f"{agent_url}/serving-endpoints/{endpoint}/invocations",
            json={"messages": [{"role": "user", "content": request}]},
            timeout=30,
        )
        reply.raise_for_status()
        content: str = reply.json()["choices"][0]["message"]["content"]
        return content

    return ai_query


@pytest.fixture(autouse=True)
def isolated_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, token=TOKEN)


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent(OUTAGE) as server:
        yield server


@pytest.fixture
def warehouse(agent: AgentServer) -> Iterator[Warehouse]:
    with (
        DuckDBExecutor(ai_query=serving_ai_query(agent.url)) as executor,
        serve_warehouse(executor, token=TOKEN) as wh,
    ):
        with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA main.shop")
            values = ", ".join(f"({k}, '{text}')" for k, text in REVIEWS.items())
            cur.execute(
                "CREATE TABLE main.shop.reviews AS SELECT * FROM VALUES "
                f"{values} AS t(review_id, review_text)"
            )
        yield wh


def run(job: Path, wh: Warehouse, tmp_path: Path, **options: Any) -> tuple[dict[str, Any], Any]:
    """One run: its summary (a run fail_on_error stops included) and the output's rows by key."""
    settings = {"host": f"http://{wh.host}:{wh.port}", "warehouse_id": wh.warehouse_id}
    common = {"project_dir": tmp_path, "state_dir": tmp_path / "state", "progress": False}
    try:
        with agentbatch.run(
            job, target="databricks-sql", settings=settings, **common, **options
        ) as r:
            summary = dict(r.summary)
    except JobFailedError as failed:
        summary = dict(run_summary(failed) or {})
        summary["failed"] = True
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT review_id, response, error FROM main.shop.review_answers")
        rows = {r["review_id"]: r for r in cur.fetchall_arrow().to_pylist()}
    return summary, rows


def test_an_outage_is_transient_and_the_next_plain_run_fills_its_rows(
    warehouse: Warehouse, agent: AgentServer, tmp_path: Path
) -> None:
    job = tmp_path / "jobs" / "review_answers.yml"
    job.parent.mkdir()
    job.write_text(JOB)
    first, rows = run(job, warehouse, tmp_path)
    assert first["strategy"] == "push-down" and first.get("failed")  # fail_on_error counts them
    assert (first["rows"], first["ok"], first["errors"]) == (5, 2, 3)
    for key in (2, 4):
        assert rows[key]["response"] is None
        assert rows[key]["error"] == (
            "[transient] [REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after "
            f"retrying {RETRIES} times; the last failed HTTP error code was 503"
        )
    assert rows[5]["error"].startswith(
        "[permanent] [REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with "
        "code 400, and error message '"
    )
    calls = agent.stats()
    assert calls.requests_for(request_key("Answer: OUTAGE two")) == RETRIES + 1  # ai_query retried
    assert calls.requests_for(request_key("Answer: PERMANENT_ERROR five")) == 1

    agent.configure(BACK)  # the outage is over
    second, rows = run(job, warehouse, tmp_path)  # no --retry-errors
    assert (second["rows"], second["sent"], second["ok"], second["errors"]) == (2, 2, 2, 0)
    assert (second["skipped"], second["skipped_errors"]) == (3, 1)
    assert second.get("failed")  # the 400 is still a failure of the selection
    assert {k: r["error"] is None and r["response"] is not None for k, r in rows.items()} == {
        1: True,
        2: True,
        3: True,
        4: True,
        5: False,
    }
    assert rows[5]["error"].startswith("[permanent] ")
    after = agent.stats()
    assert after.requests_for(request_key("Answer: OUTAGE two")) == RETRIES + 2
    assert after.requests_for(request_key("Answer: PERMANENT_ERROR five")) == 1  # not re-sent

    third, _ = run(job, warehouse, tmp_path, retry_errors=True)  # the 400, sent again
    assert (third["rows"], third["errors"]) == (1, 1)
    assert agent.stats().requests_for(request_key("Answer: PERMANENT_ERROR five")) == 2
