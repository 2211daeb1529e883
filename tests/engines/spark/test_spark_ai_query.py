"""Push-down on open-source Spark: the rendered SQL runs unchanged with a registered ai_query."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from agentbatch.engines.spark.engine import SparkEngine
from agentbatch.errors import EngineError
from agentbatch.planning.builder import build_plan
from agentbatch.planning.definition import PushDown
from agentbatch.planning.targets import Target
from agentbatch.spec.loader import load_job_text
from agentbatch.testing.agent_server import AgentServer

ROOT = Path(__file__).resolve().parents[3]
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"
PEOPLE = "FROM VALUES (1, 'ann'), (2, 'bob'), (3, 'PERMANENT_ERROR') AS t(id, name)"

SUMMARY_JOB = """
name: summarise
source:
  table: main.support.tickets
  key: ticket_id
  columns: [subject]
  where: "ticket_id <= 1040"
request: "concat('Summarise: ', subject)"
agent:
  endpoint: summariser
  api: chat
  model_parameters: {max_tokens: 64, temperature: 0}
output:
  table: main.support.summaries
  mode: merge
"""


def engine_for(make_engine: Any, agent: AgentServer, **kwargs: Any) -> SparkEngine:
    url = f"{agent.url}/serving-endpoints/summariser/invocations"
    engine: SparkEngine = make_engine({"ai_query_endpoints": {"summariser": url}}, **kwargs)
    return engine


def rows(engine: SparkEngine, sql: str) -> list[dict[str, Any]]:
    return sorted(pa.Table.from_batches(list(engine.fetch_batches(sql))).to_pylist(), key=str)


def test_named_arguments_any_case_and_errors_as_values(
    make_engine: Any, agent: AgentServer
) -> None:
    engine = engine_for(make_engine, agent)
    got = rows(
        engine,
        "SELECT id, ai_query('summariser', concat('Say hi to ', name), FAILONERROR => false, "
        f"modelParameters => named_struct('max_tokens', 16, 'temperature', 0.0)) AS a {PEOPLE}",
    )
    by_id = {r["id"]: r["a"] for r in got}
    assert by_id[1] == {"result": "answer: Say hi to ann", "errorMessage": None}
    assert by_id[2] == {"result": "answer: Say hi to bob", "errorMessage": None}
    assert by_id[3]["result"] is None
    assert "HTTP 400" in by_id[3]["errorMessage"]
    assert agent.stats().requests_total == 3  # the permanent error is not retried


def test_response_format_gives_json_text_for_from_json(
    make_engine: Any, agent: AgentServer
) -> None:
    engine = engine_for(make_engine, agent)
    schema = json.dumps(
        {
            "type": "json_schema",
            "json_schema": {
                "name": "triage",
                "schema": {
                    "type": "object",
                    "properties": {"label": {"type": "string"}, "urgency": {"type": "integer"}},
                },
            },
        }
    )
    sql = (
        "SELECT from_json(ai_query('summariser', 'Classify this ticket. Ticket: my invoice is wrong', "
        f"failOnError => false, responseFormat => '{schema}').result, "
        "'label STRING, urgency INT') AS r"
    )
    assert engine.fetch_one(sql) == {"r": {"label": "billing", "urgency": 3}}


@pytest.mark.parametrize(
    ("call", "error_class"),
    [
        # Databricks: a DDL responseFormat has exactly one top-level field wrapping the struct.
        (
            "ai_query('summariser', 'hi', failOnError => false, "
            "responseFormat => 'STRUCT<label: STRING, urgency: INT>')",
            "AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT.DDL_STRING",
        ),
        # Databricks: the endpoint is a STRING literal.
        ("ai_query(concat('summ', 'ariser'), 'hi', failOnError => false)", "NOT_A_CONSTANT_STRING"),
        # Databricks: a foundation model takes a STRING request; a STRUCT is for custom models.
        (
            "ai_query('summariser', named_struct('messages', array(named_struct('role', 'user', "
            "'content', 'hi'))), failOnError => false)",
            "DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE",
        ),
    ],
)
def test_calls_databricks_refuses_are_refused(
    make_engine: Any, agent: AgentServer, call: str, error_class: str
) -> None:
    engine = engine_for(make_engine, agent)
    with pytest.raises(EngineError, match=re.escape(error_class)):
        engine.fetch_one(f"SELECT {call} AS a")
    assert agent.stats().requests_total == 0


def test_registered_ai_query_runs_in_ansi_mode_and_odd_answers_never_fail_the_statement(
    make_engine: Any, agent: AgentServer
) -> None:
    engine = engine_for(make_engine, agent)
    engine.fetch_one("SELECT ai_query('summariser', 'warm up', failOnError => false) AS a")
    assert engine.fetch_one("SELECT try_cast('x' AS INT) AS v") == {"v": None}
    with pytest.raises(EngineError, match="CAST_INVALID_INPUT"):
        engine.fetch_one("SELECT CAST('not a number' AS INT) AS v")


def test_struct_request_is_sent_as_the_body(make_engine: Any, agent: AgentServer) -> None:
    url = f"{agent.url}/serving-endpoints/summariser/invocations"
    engine = make_engine(
        {"ai_query_endpoints": {"summariser": url}, "ai_query_custom_models": ["summariser"]}
    )
    sql = (
        "SELECT ai_query('summariser', named_struct('messages', array(named_struct('role', 'user', "
        "'content', 'hello there')), 'custom_inputs', named_struct('key', 'k-1')), failOnError => false) AS a"
    )
    assert engine.fetch_one(sql)["a"] == {"result": "answer: hello there", "errorMessage": None}
    assert agent.stats().requests_for("k-1") == 1


def test_without_fail_on_error_a_row_error_fails_the_query(
    make_engine: Any, agent: AgentServer
) -> None:
    engine = engine_for(make_engine, agent)
    ok = engine.fetch_one("SELECT ai_query('summariser', 'plain') AS a")
    assert ok == {"a": "answer: plain"}
    with pytest.raises(
        EngineError, match=r"ai_query failed for a row: \[REMOTE_FUNCTION_HTTP_FAILED_ERROR\].* 400"
    ):
        rows(engine, f"SELECT ai_query('summariser', name) AS a {PEOPLE}")


def test_planned_push_down_job_runs_unchanged_and_resumes(
    make_engine: Any, agent: AgentServer, tmp_path: Path
) -> None:
    job = load_job_text(SUMMARY_JOB, "jobs/summarise.yml")
    plan = build_plan(job, Target("spark", "spark"))
    assert plan.strategy == "push-down" and isinstance(plan.steps, PushDown)
    out = tmp_path / "summaries"
    tables = {"main.support.tickets": TICKETS, "main.support.summaries": out}
    engine = engine_for(make_engine, agent, tables=tables, output_tables=["main.support.summaries"])
    for statement in plan.steps.statements:
        engine.execute(statement.sql)
    table = engine.read_table("main.support.summaries").to_pylist()
    assert len(table) == 40 == len({r["ticket_id"] for r in table})
    assert all(
        r["error"] is None and r["response"].startswith("answer: Summarise: ") for r in table
    )
    assert agent.stats().requests_total == 40
    summary = engine.fetch_one(plan.summary.sql)
    assert summary["rows"] == 40 and summary["ok"] == 40
    # A second run of the same MERGE finds every key answered: nothing is sent.
    again = make_engine(
        {"ai_query_endpoints": {"summariser": "http://127.0.0.1:9/unused"}},
        tables=tables,
        output_tables=["main.support.summaries"],
    )
    for statement in plan.steps.statements:
        again.execute(statement.sql)
    assert agent.stats().requests_total == 40
    assert len(again.read_table("main.support.summaries")) == 40
    assert json.dumps(table[0], default=str)  # plain values all the way
