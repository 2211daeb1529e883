"""A push-down `--full-refresh` on local Spark continues the one `estimate --full-refresh` began
(as tests/engines/databricks_sql/test_push_down_refresh_continued.py on the warehouse). Spark 4
only: registering ai_query on Spark needs pyspark 4.1 or later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import agentbatch
from agentbatch.testing.agent_server import AgentServer
from tests.engines.databricks_sql import test_databricks_sql_run as runs

agent = runs.agent


def paid(agent: AgentServer) -> int:
    return agent.stats().requests_total


@pytest.mark.spark
# PySpark 4.3 warns on import that it does not fully support pandas 3 (as tests/engines/spark).
@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
def test_on_spark_a_refresh_after_estimate_full_refresh_pays_each_key_once(
    agent: AgentServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On Spark, with a session time zone other than UTC: the refresh that follows an estimate
    --full-refresh pays only the rows the sample did not."""
    from tests.support.warehouse.spark_parser import shared_session

    spark = shared_session()
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    request.addfinalizer(lambda: spark.conf.set("spark.sql.session.timeZone", "UTC"))
    source = tmp_path / "src.csv"
    source.write_text("id,txt\n" + "".join(f"{i},t{i}\n" for i in range(1, 13)))
    job = tmp_path / "jobs" / "pd.yml"
    job.parent.mkdir()
    job.write_text(
        "name: pd\nsource: {table: main.s.src, key: id, columns: [txt]}\n"
        "request: \"concat('Q: ', txt)\"\nagent: {endpoint: pdmodel, api: chat}\n"
        "output: {table: main.s.out, mode: merge}\n"
    )
    options: dict[str, Any] = {
        "target": "spark",
        "tables": {"main.s.src": source, "main.s.out": tmp_path / "out.parquet"},
        "state_dir": tmp_path / "state",
        "project_dir": tmp_path,
        "settings": {
            "warehouse_dir": str(tmp_path / "wh"),
            "ai_query_endpoints": {"pdmodel": f"{agent.url}/serving-endpoints/pdmodel/invocations"},
        },
        "progress": False,
    }

    def run(**more: Any) -> dict[str, Any]:
        with agentbatch.run(job, **options, **more) as result:
            assert result.summary["strategy"] == "push-down"
            return dict(result.summary)

    run()
    found = agentbatch.estimate(job, sample=4, full_refresh=True, **options)
    assert found.sampled == 4
    refresh = run(full_refresh=True)
    assert (refresh["skipped"], refresh["rows"]) == (4, 8)
    assert paid(agent) == 2 * 12
