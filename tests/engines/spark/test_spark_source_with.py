"""A `source.query` with its own WITH on the spark target. Every statement embeds the source in a
CTE of its own (`src`), the preflight a second time beside it: sqlglot printed Spark SQL with
every WITH moved to the top, so the source's CTEs were defined twice (DUPLICATED_CTE_NAMES), and
a source CTE named like one of agentbatch's (`src`, `todo`) clashed with it even once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

import agentbatch
from agentbatch.testing.agent_server import AgentServer

ENDPOINT = "withmodel"
# Its own CTE names, and agentbatch's (`src`, `todo`): a CTE shadows the table named `src`.
QUERIES = {
    "own_names": (
        "WITH recent AS (SELECT * FROM {{ table('main.s.src') }} WHERE id > 4) SELECT * FROM recent"
    ),
    "agentbatch_names": (
        "WITH src AS (SELECT * FROM {{ table('main.s.src') }} WHERE id > 4), "
        "todo AS (SELECT id, upper(txt) AS txt FROM src) SELECT * FROM todo"
    ),
}
SELECTED = 8  # ids 5..12


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobs").mkdir()
    source = tmp_path / "src.csv"
    source.write_text("id,txt\n" + "".join(f"{i},t{i}\n" for i in range(1, 13)))
    return tmp_path


def write_job(project: Path, query: str) -> Path:
    job = project / "jobs" / "with_source.yml"
    job.write_text(
        f'name: with_source\nsource: {{query: "{query}", key: id, columns: [txt]}}\n'
        f"request: \"concat('Q: ', txt)\"\nagent: {{endpoint: {ENDPOINT}, api: chat}}\n"
        "output: {table: main.s.out, mode: merge}\n"
    )
    return job


def options(project: Path, agent: AgentServer, push_down: bool) -> dict[str, Any]:
    url = f"{agent.url}/serving-endpoints/{ENDPOINT}/invocations"
    settings: dict[str, Any] = {"warehouse_dir": str(project / "wh")}
    if push_down:  # the registered ai_query reaches the endpoint
        settings["ai_query_endpoints"] = {ENDPOINT: url}
    return {
        "target": "spark",
        "tables": {"main.s.src": project / "src.csv", "main.s.out": project / "out.parquet"},
        **({} if push_down else {"endpoints": {ENDPOINT: url}}),
        "state_dir": project / "state",
        "project_dir": project,
        "settings": settings,
        "progress": False,
    }


@pytest.fixture(params=["CORRECTED", "EXCEPTION"])
def cte_policy(request: pytest.FixtureRequest, spark: SparkSession) -> Iterator[str]:
    """Spark 4's default, and Spark 3.5's (`spark.sql.legacy.ctePrecedencePolicy`: EXCEPTION
    refuses an inner CTE name that shadows an outer one in some positions)."""
    key = "spark.sql.legacy.ctePrecedencePolicy"
    before = str(spark.conf.get(key))
    spark.conf.set(key, request.param)
    yield str(request.param)
    spark.conf.set(key, before)


@pytest.mark.parametrize("query", QUERIES, ids=list(QUERIES))
@pytest.mark.parametrize("push_down", [True, False], ids=["push-down", "rest-fallback"])
def test_a_source_query_with_its_own_with_runs_and_a_second_run_sends_nothing(
    project: Path,
    agent: AgentServer,
    make_engine: Any,
    cte_policy: str,
    query: str,
    push_down: bool,
) -> None:
    make_engine()  # the suite's session is the active one: the runs use it
    job = write_job(project, QUERIES[query])
    run_options = options(project, agent, push_down)
    strategy = "push-down" if push_down else "rest-fallback"

    dry = agentbatch.run(job, dry_run=True, **run_options)  # the preflight, no target yet
    assert dry.summary["rows"] == SELECTED
    with agentbatch.run(job, **run_options) as result:
        assert (result.summary["strategy"], result.summary["rows"]) == (strategy, SELECTED)
    assert agent.stats().requests_total == SELECTED
    rows = pq.read_table(project / "out.parquet").to_pylist()
    assert sorted(r["id"] for r in rows) == list(range(5, 13))
    assert all(r["error"] is None and r["response"].startswith("answer: Q: ") for r in rows)
    if query == "agentbatch_names":  # the source's own `todo`, not agentbatch's
        assert all(r["txt"] == r["txt"].upper() for r in rows)

    with agentbatch.run(job, **run_options) as again:
        assert again.summary["rows"] == 0
    assert agent.stats().requests_total == SELECTED  # nothing new is sent
    assert agentbatch.run(job, dry_run=True, **run_options).summary["rows"] == 0


@pytest.mark.parametrize("push_down", [True, False], ids=["push-down", "rest-fallback"])
def test_an_estimate_of_a_with_source_samples_and_the_run_keeps_the_sample(
    project: Path, agent: AgentServer, make_engine: Any, push_down: bool
) -> None:
    make_engine()
    job = write_job(project, QUERIES["agentbatch_names"])
    run_options = options(project, agent, push_down)
    found = agentbatch.estimate(job, sample=3, seed=1, **run_options)
    assert (found.to_send, found.sampled, found.sample_ok) == (SELECTED, 3, 3)
    with agentbatch.run(job, **run_options) as result:
        assert result.summary["rows"] == SELECTED - 3
    assert agent.stats().requests_total == SELECTED
