"""A push-down `--full-refresh` on local Spark continues the one `estimate --full-refresh` began
(as tests/engines/databricks_sql/test_push_down_refresh_continued.py on the warehouse). Spark 4
only: registering ai_query on Spark needs pyspark 4.1 or later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

import agentbatch
from agentbatch.testing.agent_server import AgentServer
from tests.engines.spark.test_spark_run import push_down_job


def test_on_spark_a_refresh_after_estimate_full_refresh_pays_each_key_once(
    agent: AgentServer, spark: SparkSession, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On Spark, with a session time zone other than UTC: the refresh that follows an estimate
    --full-refresh pays only the rows the sample did not."""
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    request.addfinalizer(lambda: spark.conf.set("spark.sql.session.timeZone", "UTC"))
    job, options = push_down_job(tmp_path, agent, 12)

    def run(**more: Any) -> dict[str, Any]:
        with agentbatch.run(job, **options, **more) as result:
            assert result.summary["strategy"] == "push-down"
            return dict(result.summary)

    run()
    found = agentbatch.estimate(job, sample=4, full_refresh=True, **options)
    assert found.sampled == 4
    refresh = run(full_refresh=True)
    assert (refresh["skipped"], refresh["rows"]) == (4, 8)
    assert agent.stats().requests_total == 2 * 12


def test_on_spark_executors_a_rest_refresh_continues_a_push_down_one_then_ends_it(
    agent: AgentServer, spark: SparkSession, tmp_path: Path
) -> None:
    """The REST fallback on the executors continues, from the target, the refresh a push-down
    estimate began (the same requests: the endpoint's own route), and a run that finishes ends
    it: the next --full-refresh pays for every row again. Before, the first paid the sample
    again; and had it continued without ending the refresh, every later --full-refresh would
    have counted the rows answered since as done and sent nothing."""
    job, options = push_down_job(tmp_path, agent, 12)
    route = {"pdmodel": f"{agent.url}/serving-endpoints/pdmodel/invocations"}

    def rest_refresh() -> dict[str, Any]:
        with agentbatch.run(
            job, **options, full_refresh=True, force_fallback=True, endpoints=route
        ) as result:
            assert result.summary["strategy"] == "rest-fallback"
            return dict(result.summary)

    with agentbatch.run(job, **options):
        pass
    assert agentbatch.estimate(job, sample=4, full_refresh=True, **options).sampled == 4
    first = rest_refresh()
    assert (first["skipped"], first["rows"]) == (4, 8)
    second = rest_refresh()
    assert second["rows"] == 12
    assert agent.stats().requests_total == 12 + 4 + 8 + 12
