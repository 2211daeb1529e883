"""ai_query's failure messages: the loopback gives them the shape Databricks does, and the
push-down SQL (`agentbatch.planning.failures`) reads their kind by the REST fallback's rule, on
DuckDB and on Spark alike: a 429, 5xx (408 too) or timeout is transient, anything else
permanent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import databricks.sql
import httpx
import pytest

from agentbatch.planning.failures import kind_sql
from agentbatch.sql import quoting
from agentbatch.sql.quoting import Sql
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key

from .ai_query import RETRIES
from .server import Warehouse, serve_warehouse
from .spark_executor import SparkExecutor

RETRY_TIMEOUT = "[REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying"
FAILED = "[REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with code"

# message -> transient? The first two shapes are the ones public reports show.
MESSAGES: dict[str, bool] = {
    f"{RETRY_TIMEOUT} 10 times; the last failed HTTP error code was 429": True,
    f"{RETRY_TIMEOUT} 10 times; the last failed HTTP error code was 503": True,
    f"{FAILED} 429, and error message 'limit'": True,
    f"{FAILED} 500, and error message 'boom'": True,
    f"{FAILED} 504, and error message 'upstream request timeout'": True,
    f"{FAILED} 408, and error message 'request timeout'": True,
    f"{RETRY_TIMEOUT} 10 times; the last request timed out": True,
    "Read timed out": True,
    "Rate limit exceeded for endpoint ep": True,
    "429 Too Many Requests": True,
    f"{FAILED} 400, and error message 'the request timeout is too long'": False,
    f"{FAILED} 400, and error message 'upstream said status 503'": False,
    f'{FAILED} 404: {{"error_code":"RESOURCE_DOES_NOT_EXIST"}}': False,
    f"{FAILED} 501, and error message 'not implemented'": True,  # the REST rule: any 5xx
    "endpoint ep refused the request": False,
    "request is NULL": False,
    "runtime out of memory": False,
    "accurate limit of 503 tokens": False,
}


@pytest.fixture(scope="module")
def spark_warehouse(spark_session: Any) -> Iterator[Warehouse]:
    with serve_warehouse(SparkExecutor(spark_session)) as wh:
        yield wh


@pytest.fixture(params=["duckdb", pytest.param("spark", marks=[pytest.mark.spark])])
def any_warehouse(
    request: pytest.FixtureRequest, make_warehouse: Callable[..., Warehouse]
) -> Warehouse:
    if request.param == "spark":
        wh: Warehouse = request.getfixturevalue("spark_warehouse")
        return wh
    return make_warehouse()


def test_each_message_gets_the_kind_the_rest_fallback_gives_its_failure(
    any_warehouse: Warehouse,
) -> None:
    values = ", ".join(f"({n}, {quoting.literal(m)})" for n, m in enumerate(MESSAGES))
    sql = (
        f"SELECT n, concat({kind_sql(Sql('m'))}, m) AS error "
        f"FROM VALUES {values}, ({len(MESSAGES)}, NULL) AS t(n, m) ORDER BY n"
    )
    with databricks.sql.connect(**any_warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(sql)
        errors = [row.error for row in cur.fetchall()]
    expected = [
        ("[transient] " if transient else "[permanent] ") + message
        for message, transient in MESSAGES.items()
    ]
    assert errors == [*expected, None]


def serving_ai_query(agent_url: str) -> Any:
    """A chat call to the demo agent's Model Serving route; a refusal raises HTTPStatusError."""

    def ai_query(endpoint: str, request: Any, **named: Any) -> str:
        url = f"{agent_url}/serving-endpoints/{endpoint}/invocations"
        reply = httpx.post(url, json={"messages": [{"role": "user", "content": request}]})
        reply.raise_for_status()
        content: str = reply.json()["choices"][0]["message"]["content"]
        return content

    return ai_query


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    faults = FaultConfig(permanent={"PERMANENT_ERROR": 400, "OUTAGE": 503, "BUSY": 429})
    with serve_agent(faults) as server:
        yield server


def test_a_failed_call_is_retried_and_reported_as_databricks_reports_it(
    make_warehouse: Callable[..., Warehouse], agent: AgentServer
) -> None:
    wh = make_warehouse(ai_query=serving_ai_query(agent.url))
    requests = ["fine", "OUTAGE now", "BUSY now", "PERMANENT_ERROR now"]
    values = ", ".join(f"({n}, {quoting.literal(r)})" for n, r in enumerate(requests))
    with databricks.sql.connect(**wh.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT n, ai_query('model', r, failOnError => false) AS a "
            f"FROM VALUES {values} AS t(n, r) ORDER BY n"
        )
        messages = [row.a["errorMessage"] for row in cur.fetchall()]
    assert messages[:3] == [
        None,
        f"{RETRY_TIMEOUT} {RETRIES} times; the last failed HTTP error code was 503",
        f"{RETRY_TIMEOUT} {RETRIES} times; the last failed HTTP error code was 429",
    ]
    assert messages[3].startswith(f"{FAILED} 400, and error message '")
    stats = agent.stats()
    assert stats.requests_for(request_key("OUTAGE now")) == RETRIES + 1
    assert stats.requests_for(request_key("PERMANENT_ERROR now")) == 1  # a 400 is not retried
