"""A VARIANT passthrough column through the REST fallback on the spark target, on the driver and
on the executors. Spark hands a VARIANT to Arrow as a struct of two binaries declared
non-nullable: a NULL one failed the executors' checkpoint after its calls were paid, and without
one the write refused to cast the struct back to VARIANT (every rerun too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import agentbatch
from agentbatch.testing.agent_server import AgentServer

JOB = """\
name: variant_triage
source:
  table: main.shop.tickets
  key: id
  columns: [subject, details]
request: "concat('Classify this support ticket: ', subject)"
agent:
  endpoint: apps/triage-agent
  api: responses
  response_format: "STRUCT<label: STRING, urgency: INT>"
output:
  table: main.shop.triaged
  mode: merge
"""
SOURCE = """
SELECT * FROM VALUES
  (1L, 'parcel late', parse_json('{"a": 1, "b": [1,2]}')),
  (2L, 'wrong size', parse_json('[1, "two", {"three": 3.5}]')),
  (3L, 'refund', parse_json('"just text"')),
  (4L, 'no details', CAST(NULL AS VARIANT)),
  (5L, 'json null', parse_json('null'))
AS t(id, subject, details)
"""


def variant_values(spark: Any, path: Path) -> dict[int, tuple[Any, ...]]:
    """Each key's VARIANT as Spark shows it: its JSON text, its schema, whether it is NULL."""
    rows = spark.read.parquet(str(path)).selectExpr(
        "id", "to_json(details) AS j", "schema_of_variant(details) AS s", "details IS NULL AS n"
    )
    return {r.id: (r.j, r.s, r.n) for r in rows.collect()}


@pytest.mark.parametrize("place", ["driver", "executors"])
def test_a_variant_passthrough_column_keeps_its_values(
    agent: AgentServer, tmp_path: Path, make_engine: Any, spark: Any, place: str
) -> None:
    make_engine()  # the suite's session is the active one: the run uses it
    source, out = tmp_path / "tickets.parquet", tmp_path / "triaged.parquet"
    spark.sql(SOURCE).write.parquet(str(source))
    job = tmp_path / "jobs" / "variant_triage.yml"
    job.parent.mkdir()
    job.write_text(JOB)
    for sent in (5, 0):
        with agentbatch.run(
            job,
            target="spark",
            tables={"main.shop.tickets": source, "main.shop.triaged": out},
            endpoints={"apps/triage-agent": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            settings={"warehouse_dir": str(tmp_path / "warehouse"), "rest_fallback_on": place},
            progress=False,
        ) as result:
            assert (result.summary["sent"], result.summary["errors"]) == (sent, 0)
            if sent:  # this run's rows
                shown = result.to_arrow().select(["id", "details"]).to_pylist()
        assert variant_values(spark, out) == variant_values(spark, source)
    assert agent.stats().requests_total == 5
    # Read back through the engine, a VARIANT is its JSON text, as a SQL warehouse sends it.
    assert sorted((r["id"], r["details"]) for r in shown) == [
        (1, '{"a":1,"b":[1,2]}'),
        (2, '[1,"two",{"three":3.5}]'),
        (3, '"just text"'),
        (4, None),
        (5, "null"),
    ]
