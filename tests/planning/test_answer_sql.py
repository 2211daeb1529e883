"""The push-down answer SQL: how a response_format is asked for and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

import agentbatch
from agentbatch.agent.response_format import parse_response_format
from agentbatch.errors import SpecError

JOB = """\
name: t
source: {table: main.s.tickets, key: id, columns: [subject]}
request: "concat('Q: ', subject)"
agent:
  endpoint: my-model
  api: chat
  response_format: %s
output: {table: main.s.out, mode: merge}
"""


def push_down_sql(tmp_path: Path, response_format: str) -> str:
    job = tmp_path / "t.yml"
    job.write_text(JOB % response_format)
    plan = agentbatch.plan(job, target="databricks-sql")
    assert plan.strategy == "push-down"
    return plan.statements[-1].sql


def test_a_struct_format_is_asked_for_as_the_json_schema_rest_sends(tmp_path: Path) -> None:
    """Never the DDL form, which Databricks refuses unless one field wraps the struct."""
    sql = push_down_sql(tmp_path, '"STRUCT<label: STRING, urgency: INT>"')
    [call] = [
        f
        for f in sqlglot.parse_one(sql, read="databricks").find_all(exp.Anonymous)
        if f.name.lower() == "ai_query"
    ]
    [fmt] = [a.expression for a in call.expressions if isinstance(a, exp.Kwarg)][-1:]
    sent = json.loads(fmt.this)
    rest = parse_response_format("STRUCT<label: STRING, urgency: INT>").chat_response_format()
    assert sent == rest
    assert sent["type"] == "json_schema"


def test_casts_of_model_output_never_raise_in_ansi_mode(tmp_path: Path) -> None:
    sql = push_down_sql(tmp_path, '"STRUCT<label: STRING, urgency: INT, score: DOUBLE>"')
    tree = sqlglot.parse_one(sql, read="databricks")
    casts = [c for c in tree.find_all(exp.Cast) if not isinstance(c, exp.TryCast)]
    # Only the typed NULLs of the fixed result columns, and the request made text (a cast to
    # STRING never fails), are plain casts.
    assert all(
        isinstance(c.this, exp.Null) or c.to.is_type(exp.DataType.Type.TEXT) for c in casts
    ), [c.sql() for c in casts]
    assert not [c for c in casts if c.to.is_type(exp.DataType.Type.TEXT) and "_answer" in c.sql()]
    assert "errorMessage, '')" in sql  # '' is no error


def test_date_and_timestamp_casts_read_only_the_iso_forms(tmp_path: Path) -> None:
    """Databricks' cast reads `2024` as a date and `10:00` as today's time; the push-down guards
    each cast with the patterns the REST fallback reads (tests/support/warehouse/
    test_answer_checks.py runs both on the same replies)."""
    fmt = '"STRUCT<due: DATE, seen_at: TIMESTAMP, amount: DECIMAL(10,2)>"'
    tree = sqlglot.parse_one(push_down_sql(tmp_path, fmt), read="databricks")
    t = exp.DataType.Type
    types = (t.DATE, t.TIMESTAMP, t.TIMESTAMPLTZ, t.TIMESTAMPTZ)
    casts = [c for c in tree.find_all(exp.TryCast) if c.to.is_type(*types)]
    assert len(casts) == 2
    for cast in casts:
        guard = cast if isinstance(cast.this, exp.Case) else cast.find_ancestor(exp.Case)
        assert guard is not None and guard.find(exp.RegexpLike) is not None, cast.sql()


@pytest.mark.parametrize(
    "response_format",
    [
        '{type: object, properties: {"first name": {type: string}}}',
        '{type: object, properties: {who: {type: object, properties: {"last name": {type: string}}}}}',
        '"STRUCT<label: STRING, `urgency level`: INT>"',
    ],
)
def test_a_field_name_delta_refuses_is_refused_when_the_job_is_loaded(
    tmp_path: Path, response_format: str
) -> None:
    """The answer is a STRUCT column of the output table, and Delta refuses a space in a field
    name at any depth: refused on every target, naming the field, before any call."""
    job = tmp_path / "t.yml"
    job.write_text(JOB % response_format)
    with pytest.raises(SpecError, match=r"response_format: answer field '\w+ \w+' has a space"):
        agentbatch.plan(job, target="local")


@pytest.mark.parametrize(
    "response_format",
    [
        '"STRUCT<label: STRING, tags: ARRAY<STRING>>"',
        '"STRUCT<label: STRING, inner: STRUCT<a: BIGINT, b: BOOLEAN>>"',
        '"STRUCT<scores: MAP<STRING, INT>>"',
        "{type: object, properties: {tags: {type: array, items: {type: integer}}}}",
    ],
)
def test_nested_answer_fields_are_answered_over_rest(tmp_path: Path, response_format: str) -> None:
    """ai_query's answer would be read into a nested field with from_json, which fills the part
    that does not fit with NULL (a wrong answer stored as a good one): such a job is answered
    over REST, which checks every value, on every target that has ai_query."""
    job = tmp_path / "t.yml"
    job.write_text(JOB % response_format)
    for target in ("databricks-sql", "spark"):
        plan = agentbatch.plan(job, target=target)
        assert plan.strategy == "rest-fallback"
        assert "nested" in plan.reason
    flat = tmp_path / "flat.yml"
    flat.write_text(JOB % '"STRUCT<label: STRING, urgency: INT>"')
    assert agentbatch.plan(flat, target="databricks-sql").strategy == "push-down"


def test_a_field_a_json_path_cannot_spell_is_answered_over_rest(tmp_path: Path) -> None:
    """Push-down reads each field by JSON path (`$.name`); a field named `unit-price` made
    `plan` and `run` fail on a warehouse. Such a job is answered over REST, which reads by name."""
    job = tmp_path / "t.yml"
    job.write_text(JOB % "{type: object, properties: {unit-price: {type: number}}}")
    assert agentbatch.plan(job, target="local").strategy == "rest-fallback"
    plan = agentbatch.plan(job, target="databricks-sql")
    assert plan.strategy == "rest-fallback"
    assert "'unit-price'" in plan.reason
