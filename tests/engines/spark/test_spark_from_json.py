"""The platform rule that keeps nested response_format fields off push-down, on real Spark:
`from_json` (PERMISSIVE, the default mode) fills the part of a nested value that does not fit
with NULL instead of returning NULL, so SQL cannot tell a wrong nested answer from a good one
(docs/databricks-behaviour.md; the planner answers such jobs over REST)."""

from __future__ import annotations

from typing import Any

import pytest
from pyspark.sql import SparkSession

from agentbatch.agent.replies import AgentReply
from agentbatch.agent.response_format import parse_response_format
from agentbatch.agent.responses import apply_response_format

FORMAT = "STRUCT<inner: STRUCT<a: BIGINT, b: BOOLEAN>>"


@pytest.mark.parametrize(
    ("field", "spark_reads"),
    [
        ('{"a": 1.5, "b": true}', {"a": None, "b": True}),
        ('{"a": 1, "b": "yes"}', {"a": 1, "b": None}),
    ],
)
def test_from_json_keeps_a_nested_value_that_does_not_fit(
    spark: SparkSession, field: str, spark_reads: dict[str, Any]
) -> None:
    [row] = spark.sql(
        "SELECT from_json(:field, 'STRUCT<a: BIGINT, b: BOOLEAN>') AS v", args={"field": field}
    ).collect()
    assert row.v is not None and row.v.asDict() == spark_reads  # not NULL: looks answered
    # The REST fallback refuses the same answer: a row error, not a half-empty struct.
    outcome = apply_response_format(
        AgentReply(text='{"inner": ' + field + "}"), parse_response_format(FORMAT)
    )
    assert not isinstance(outcome, AgentReply)
    assert "inner" in outcome.message
