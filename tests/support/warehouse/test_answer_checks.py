"""One reply, one outcome: the push-down SQL and the REST fallback read every answer alike.

The example job `triage_foundation_model` (a STRUCT response_format on a foundation model) is
planned for the databricks-sql target and its push-down statement run unchanged on the loopback
warehouse, on DuckDB and on Spark (ANSI mode), while the test agent answers each row with one of
the replies below. Each stored row must equal what the REST fallback makes of the same reply: the
same typed value, or the same error message (push-down adds the `[permanent] ` kind prefix, which
the REST path adds centrally when it writes the row).
"""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import pytest
import sqlglot
from sqlglot import exp

import agentbatch
from agentbatch.agent.replies import AgentReply
from agentbatch.agent.response_format import parse_response_format
from agentbatch.agent.responses import apply_response_format
from agentbatch.results import PERMANENT_ERROR

from .duckdb_executor import DuckDBExecutor
from .server import Warehouse, serve_warehouse
from .spark_executor import SparkExecutor

ROOT = Path(__file__).resolve().parents[3]
JOB = ROOT / "jobs" / "triage_foundation_model.yml"
FORMAT = "STRUCT<label: STRING, urgency: INT>"

REPLIES: dict[str, str | None] = {
    "ok": '{"label": "billing", "urgency": 3}',
    "extra field": '{"label": "bug", "urgency": 1, "why": "crash"}',
    "fenced": '```json\n{"label": "bug", "urgency": 2}\n```',
    "numbers as text": '{"label": 7, "urgency": "4"}',
    "integral float": '{"label": "x", "urgency": 5.0}',
    "absent field": '{"label": "account"}',
    "json null field": '{"label": "account", "urgency": null}',
    "truncated": '{"label": "billing", "urg',
    "empty": "",
    "prose": "The ticket is about billing.",
    "array": '[{"label": "bug"}]',
    "string": '"billing"',
    "null": "null",
    "wrong shape": '{"answer": "billing, urgent"}',
    "empty object": "{}",
    "wrong type": '{"label": "bug", "urgency": "high"}',
    "fraction": '{"label": "bug", "urgency": 2.5}',
    "overflow": '{"label": "bug", "urgency": 99999999999}',
    "boolean": '{"label": "bug", "urgency": true}',
    "object for string": '{"label": {"name": "bug"}, "urgency": 1}',
    "long": '{"label": "' + "é" * 300 + '"',
    # Read as Databricks reads JSON (Jackson: single quotes, raw control characters, the first
    # of repeated keys, what follows the first value ignored); not the rest of JSON5.
    "single quotes": "{'label': 'bug', 'urgency': 2}",
    "raw newline in a string": '{"label": "line one\nline two", "urgency": 1}',
    "repeated key": '{"label": "first", "label": "second", "urgency": 1}',
    "escaped quote in a string": '{"label": "it\\\'s", "urgency": 1}',
    "text after the object": '{"label": "bug", "urgency": 2}\n\nIt crashes on start.',
    "unquoted key": '{label: "bug"}',
    "trailing comma": '{"label": "bug",}',
    "not a number": '{"label": "bug", "urgency": NaN}',
}


# A JSON-schema format (the other form): numbers, booleans, a required field.
SCHEMA = {
    "type": "object",
    "properties": {
        "issue": {"type": "string"},
        "amount": {"type": "number"},
        "seats": {"type": "integer"},
        "refund": {"type": "boolean"},
    },
    "required": ["issue"],
}
SCHEMA_REPLIES: dict[str, str] = {
    "schema ok": '{"issue": "double charge", "amount": 12.5, "seats": 3, "refund": true}',
    "schema number as text": '{"issue": "x", "amount": "12.5", "seats": "2", "refund": "false"}',
    "schema integral float": '{"issue": "x", "seats": 2.0}',
    "schema array for string": '{"issue": ["a", "b"]}',
    "schema required absent": '{"amount": 3}',
    "schema bad number": '{"issue": "x", "amount": "twelve"}',
    "schema yes for boolean": '{"issue": "x", "refund": "yes"}',
    "schema number for boolean": '{"issue": "x", "refund": 1}',
    "schema exponent": '{"issue": "x", "amount": 1.5e3}',
    "schema negative": '{"issue": "x", "amount": -0.25, "seats": -4}',
}

# A JSON schema's `enum` on top-level fields of each kind.
ENUM_SCHEMA = {
    "type": "object",
    "properties": {
        "team": {"type": "string", "enum": ["billing", "tech"]},
        "level": {"type": "integer", "enum": [1, 2, 3]},
        "share": {"type": "number", "enum": [0.5, 1]},
        "urgent": {"type": "boolean", "enum": [True]},
    },
}
ENUM_REPLIES: dict[str, str] = {
    "enum ok": '{"team": "tech", "level": 2, "share": 1.0, "urgent": true}',
    "enum other text": '{"team": "sales", "level": 1}',
    "enum other case": '{"team": "Billing"}',
    "enum other integer": '{"team": "tech", "level": 4}',
    "enum integral float": '{"level": 3.0, "share": 1}',
    "enum other number": '{"share": 0.25}',
    "enum other boolean": '{"urgent": false}',
    "enum null": '{"team": null, "level": 1}',
    "enum number as text": '{"level": "2"}',
}

# Dates, timestamps and decimals: the ISO forms only (a bare year, a date without zero padding,
# a time without a date, a zone name are errors on both paths, not guesses), naive timestamps in
# UTC whatever the session time zone, decimals rounded half-up (as Databricks' cast rounds).
TYPED = "STRUCT<label: STRING, due: DATE, seen_at: TIMESTAMP, amount: DECIMAL(10,2)>"
TYPED_REPLIES: dict[str, str] = {
    "typed ok": (
        '{"label": "x", "due": "2024-03-01", "seen_at": "2024-03-01T10:00:00Z", "amount": 12.5}'
    ),
    "date year only": '{"due": "2024"}',
    "date unpadded": '{"due": "2024-1-1"}',
    "date compact": '{"due": "20240101"}',
    "date glued text": '{"due": "2024-01-01garbage"}',
    "date spaced text": '{"due": "2024-01-01 garbage"}',
    "date with a time": '{"due": "2024-01-01T10:00:00Z"}',
    "date with a newline": '{"due": "2024-01-01\\n"}',
    "date with a space": '{"due": " 2024-01-01"}',
    "date signed year": '{"due": "+2024-01-01"}',
    "date not in the calendar": '{"due": "2024-02-30"}',
    "date year zero": '{"due": "0000-01-01"}',
    "date as a number": '{"due": 20240101}',
    "timestamp time only": '{"seen_at": "10:00"}',
    "timestamp zone name": '{"seen_at": "2024-01-01T10:00:00 UTC"}',
    "timestamp naive": '{"seen_at": "2024-01-01T10:00:00"}',
    "timestamp space and fraction": '{"seen_at": "2024-01-01 10:00:00.5"}',
    "timestamp offset": '{"seen_at": "2024-01-01T10:00:00.25+05:30"}',
    "timestamp negative offset": '{"seen_at": "2024-01-01T23:00:00-18:00"}',
    "timestamp nanoseconds": '{"seen_at": "2024-01-01T10:00:00.123456789Z"}',
    "timestamp without seconds": '{"seen_at": "2024-01-01T10:00Z"}',
    "timestamp hour only": '{"seen_at": "2024-01-01T10"}',
    "timestamp compact offset": '{"seen_at": "2024-01-01T10:00:00+0530"}',
    "timestamp offset past 18 hours": '{"seen_at": "2024-01-01T10:00:00+18:30"}',
    "timestamp empty fraction": '{"seen_at": "2024-01-01T10:00:00.Z"}',
    "timestamp hour 24": '{"seen_at": "2024-01-01T24:00:00Z"}',
    "decimal half": '{"amount": 1.005}',
    "decimal eighth": '{"amount": 0.125}',
    "decimal negative half": '{"amount": -1.005}',
    "decimal half as text": '{"amount": "0.125"}',
    "decimal exponent": '{"amount": 1e-3}',
    "decimal small exponent": '{"amount": 5e-3}',
    "decimal exponent as text": '{"amount": "1.005e0"}',
    "decimal large integer": '{"amount": 12345678}',
    "decimal rounds over": '{"amount": 99999999.995}',
    "decimal plus sign as text": '{"amount": "+1.5"}',
    "decimal underscore as text": '{"amount": "1_000"}',
    "decimal nan as text": '{"amount": "NaN"}',
    "decimal no-break space": '{"amount": "\u00a05"}',
}
TYPED_ERRORS = {
    "date year only",
    "date unpadded",
    "date compact",
    "date glued text",
    "date spaced text",
    "date with a time",
    "date with a newline",
    "date with a space",
    "date signed year",
    "date not in the calendar",
    "date year zero",
    "date as a number",
    "timestamp time only",
    "timestamp zone name",
    "timestamp without seconds",
    "timestamp hour only",
    "timestamp compact offset",
    "timestamp offset past 18 hours",
    "timestamp empty fraction",
    "timestamp hour 24",
    "decimal rounds over",
    "decimal plus sign as text",
    "decimal underscore as text",
    "decimal nan as text",
    "decimal no-break space",
}


def rest_outcome(reply: str, fmt: str | dict[str, Any] = FORMAT) -> tuple[Any, str | None]:
    """(response, error) as the REST fallback stores them for `reply`."""
    outcome = apply_response_format(AgentReply(text=reply), parse_response_format(fmt))
    if isinstance(outcome, AgentReply):
        return outcome.value, None
    return None, PERMANENT_ERROR + outcome.message


def replying_agent(endpoint: str, request: Any, **named: Any) -> str | None:
    """Answers the prompt `Classify ... Ticket: <case>` with that case's reply."""
    case = str(request).split("Ticket: ", 1)[1].split("\n", 1)[0]
    for replies in (REPLIES, SCHEMA_REPLIES, ENUM_REPLIES, TYPED_REPLIES):
        if case in replies:
            return replies[case]
    raise KeyError(case)


@pytest.fixture(scope="module")
def spark_warehouse(spark_session: Any) -> Iterator[Warehouse]:
    executor = SparkExecutor(spark_session, ai_query=replying_agent)
    with serve_warehouse(executor) as wh:
        yield wh


@pytest.fixture(params=["duckdb", pytest.param("spark", marks=[pytest.mark.spark])])
def answering_warehouse(
    request: pytest.FixtureRequest, make_warehouse: Callable[..., Warehouse]
) -> Warehouse:
    if request.param == "spark":
        wh: Warehouse = request.getfixturevalue("spark_warehouse")
        return wh
    return make_warehouse(ai_query=replying_agent)


def run_push_down(
    warehouse: Warehouse, tmp_path: Path, cases: list[str], response_format: Any = None
) -> list[dict[str, Any]]:
    """The example job's push-down statements on `warehouse` over one ticket per case."""
    on_spark = isinstance(warehouse.service._executor, SparkExecutor)
    text = JOB.read_text()
    if on_spark:
        # The Spark executor keeps tables as Parquet, which has no MERGE: mode overwrite instead.
        text = text.replace("mode: merge", "mode: overwrite")
    if response_format is not None:
        text = text.replace(json.dumps(FORMAT), json.dumps(response_format))
    job = tmp_path / JOB.name
    job.write_text(text)
    plan = agentbatch.plan(job, target="databricks-sql")
    assert plan.strategy == "push-down"
    statements = [s.sql for s in plan.statements]
    rows = ", ".join(
        f"({number}, {json.dumps(case)}, '')" for number, case in enumerate(cases, start=1)
    )
    with (
        databricks.sql.connect(**warehouse.connect_kwargs()) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE SCHEMA IF NOT EXISTS main.support")
        cur.execute("DROP TABLE IF EXISTS main.support.tickets")
        cur.execute("DROP TABLE IF EXISTS main.support.ticket_labels")
        cur.execute(
            "CREATE TABLE main.support.tickets AS SELECT * FROM VALUES "
            f"{rows} AS t(ticket_id, subject, body)".replace('"', "'")
        )
        for statement in statements:
            cur.execute(statement)
        cur.execute(
            "SELECT subject, response, error FROM main.support.ticket_labels ORDER BY ticket_id"
        )
        stored: list[dict[str, Any]] = cur.fetchall_arrow().to_pylist()
    assert [r["subject"] for r in stored] == cases
    return stored


def test_push_down_and_rest_store_the_same_outcome_for_each_reply(
    answering_warehouse: Warehouse, tmp_path: Path
) -> None:
    stored = run_push_down(answering_warehouse, tmp_path, list(REPLIES))
    for row in stored:
        reply = REPLIES[row["subject"]]
        assert reply is not None
        assert (row["response"], row["error"]) == rest_outcome(reply), row["subject"]
    errors = {r["subject"] for r in stored if r["error"] is not None}
    assert errors == {
        "truncated",
        "empty",
        "prose",
        "array",
        "string",
        "null",
        "wrong shape",
        "empty object",
        "wrong type",
        "fraction",
        "overflow",
        "boolean",
        "long",
        "unquoted key",
        "trailing comma",
        "not a number",
    }
    by_case = {r["subject"]: r for r in stored}
    assert by_case["single quotes"]["response"] == {"label": "bug", "urgency": 2}
    assert by_case["repeated key"]["response"] == {"label": "first", "urgency": 1}
    assert by_case["escaped quote in a string"]["response"] == {"label": "it's", "urgency": 1}
    assert by_case["text after the object"]["response"] == {"label": "bug", "urgency": 2}
    assert by_case["wrong shape"]["error"] == (
        "[permanent] response_format: answer has none of the declared fields (label, urgency): "
        '{"answer": "billing, urgent"}'
    )
    assert by_case["truncated"]["error"] == (
        '[permanent] response_format: answer is not valid JSON: {"label": "billing", "urg'
    )
    assert by_case["absent field"]["response"] == {"label": "account", "urgency": None}


def test_a_json_schema_format_reads_alike_on_both_paths(
    answering_warehouse: Warehouse, tmp_path: Path
) -> None:
    stored = run_push_down(answering_warehouse, tmp_path, list(SCHEMA_REPLIES), SCHEMA)
    for row in stored:
        expected = rest_outcome(SCHEMA_REPLIES[row["subject"]], SCHEMA)
        assert (row["response"], row["error"]) == expected, row["subject"]
    errors = {r["subject"] for r in stored if r["error"] is not None}
    assert errors == {
        "schema required absent",
        "schema bad number",
        "schema yes for boolean",
        "schema number for boolean",
    }


def test_an_enum_is_checked_alike_on_both_paths(
    answering_warehouse: Warehouse, tmp_path: Path
) -> None:
    """A value outside a field's `enum` was stored as a valid answer on both paths."""
    stored = run_push_down(answering_warehouse, tmp_path, list(ENUM_REPLIES), ENUM_SCHEMA)
    for row in stored:
        expected = rest_outcome(ENUM_REPLIES[row["subject"]], ENUM_SCHEMA)
        assert (row["response"], row["error"]) == expected, row["subject"]
    errors = {r["subject"]: r["error"] for r in stored if r["error"] is not None}
    assert set(errors) == {
        "enum other text",
        "enum other case",
        "enum other integer",
        "enum other number",
        "enum other boolean",
    }
    assert errors["enum other text"] == (
        '[permanent] response_format: answer field team is not one of "billing", "tech": '
        '{"team": "sales", "level": 1}'
    )


def test_dates_timestamps_and_decimals_read_alike_on_both_paths(
    answering_warehouse: Warehouse, tmp_path: Path
) -> None:
    stored = run_push_down(answering_warehouse, tmp_path, list(TYPED_REPLIES), TYPED)
    differ = {}  # every case that differs, not only the first
    for row in stored:
        rest = rest_outcome(TYPED_REPLIES[row["subject"]], TYPED)
        if (row["response"], row["error"]) != rest:
            differ[row["subject"]] = {"push-down": (row["response"], row["error"]), "rest": rest}
    assert differ == {}
    by_case = {r["subject"]: r for r in stored}
    assert {case for case, r in by_case.items() if r["error"] is not None} == TYPED_ERRORS
    assert by_case["date year only"]["error"] == (
        '[permanent] response_format: answer field due does not fit DATE: {"due": "2024"}'
    )
    assert by_case["timestamp zone name"]["error"].startswith(
        "[permanent] response_format: answer field seen_at does not fit TIMESTAMP: "
    )
    assert by_case["decimal rounds over"]["error"].startswith(
        "[permanent] response_format: answer field amount does not fit DECIMAL(10, 2): "
    )
    utc = datetime.timezone.utc
    seen_at = {case: r["response"] and r["response"]["seen_at"] for case, r in by_case.items()}
    assert seen_at["timestamp naive"] == datetime.datetime(2024, 1, 1, 10, tzinfo=utc)
    assert seen_at["timestamp offset"] == datetime.datetime(2024, 1, 1, 4, 30, 0, 250000, utc)
    assert seen_at["timestamp nanoseconds"] == datetime.datetime(2024, 1, 1, 10, 0, 0, 123456, utc)
    amount = {case: r["response"] and r["response"]["amount"] for case, r in by_case.items()}
    # Half-up, as Databricks' cast rounds (Python's own default rounds half to even).
    assert amount["decimal half"] == decimal.Decimal("1.01")
    assert amount["decimal eighth"] == decimal.Decimal("0.13")
    assert amount["decimal negative half"] == decimal.Decimal("-1.01")
    assert amount["decimal half as text"] == decimal.Decimal("0.13")
    assert amount["decimal small exponent"] == decimal.Decimal("0.01")


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("spark", marks=[pytest.mark.spark])])
def test_a_naive_timestamp_is_utc_whatever_the_session_time_zone(
    request: pytest.FixtureRequest,
    make_warehouse: Callable[..., Warehouse],
    tmp_path: Path,
    engine: str,
) -> None:
    """Databricks reads a timestamp without an offset in the session's TIMEZONE, which an admin
    may set; the REST fallback reads it as UTC. Push-down reads it as UTC too."""
    zone = "America/New_York"
    if engine == "spark":
        warehouse: Warehouse = request.getfixturevalue("spark_warehouse")
        spark = request.getfixturevalue("spark_session")  # the session the warehouse runs on
        spark.conf.set("spark.sql.session.timeZone", zone)
        request.addfinalizer(lambda: spark.conf.set("spark.sql.session.timeZone", "UTC"))
    else:
        warehouse = make_warehouse(ai_query=replying_agent, time_zone=zone)
    cases = ["timestamp naive", "timestamp space and fraction", "timestamp offset"]
    stored = run_push_down(warehouse, tmp_path, cases, TYPED)
    for row in stored:
        expected = rest_outcome(TYPED_REPLIES[row["subject"]], TYPED)
        assert (row["response"], row["error"]) == expected, row["subject"]
    assert stored[0]["response"]["seen_at"] == datetime.datetime(
        2024, 1, 1, 10, tzinfo=datetime.timezone.utc
    )


@pytest.mark.parametrize("error_message", [None, ""])
def test_an_empty_error_message_is_no_error(tmp_path: Path, error_message: str | None) -> None:
    """Documented: errorMessage is NULL on success; one public report shows ''. Both are no
    error, so a platform change cannot turn every answered row into an error."""
    job = tmp_path / JOB.name
    job.write_text(JOB.read_text().replace("mode: merge", "mode: overwrite"))
    # Create the target, then the overwrite (which keeps the rows the target already holds).
    *setup, statement = [s.sql for s in agentbatch.plan(job, target="databricks-sql").statements]
    tree = sqlglot.parse_one(statement, read="databricks")
    [call] = [f for f in tree.find_all(exp.Anonymous) if f.name.lower() == "ai_query"]
    answer = exp.Literal.string(REPLIES["ok"]).sql("databricks")
    failure = (
        exp.Literal.string(error_message).sql("databricks") if error_message is not None else "NULL"
    )
    call.replace(
        sqlglot.parse_one(
            f"named_struct('result', {answer}, 'errorMessage', CAST({failure} AS STRING))",
            read="databricks",
        )
    )
    with DuckDBExecutor() as executor:
        executor("CREATE SCHEMA main.support", {})
        executor(
            "CREATE TABLE main.support.tickets AS SELECT 1 AS ticket_id, 'ok' AS subject, '' AS body",
            {},
        )
        for sql in setup:
            executor(sql, {})
        executor(tree.sql("databricks"), {})
        stored = executor("SELECT response, error FROM main.support.ticket_labels", {})
    assert stored is not None
    assert stored.to_pylist() == [{"response": {"label": "billing", "urgency": 3}, "error": None}]


def test_a_null_request_is_not_sent_and_is_done_like_on_the_rest_path(
    make_warehouse: Callable[..., Warehouse], tmp_path: Path
) -> None:
    """ai_query's answer to a NULL request is not documented: push-down does not send it, and
    stores the REST fallback's row error with a fingerprint, so the next run holds it as done."""
    requests: list[Any] = []

    def agent(endpoint: str, request: Any, **named: Any) -> str | None:
        requests.append(request)
        return replying_agent(endpoint, request, **named)

    warehouse = make_warehouse(ai_query=agent)
    job = tmp_path / JOB.name
    job.write_text(JOB.read_text())
    with (
        databricks.sql.connect(**warehouse.connect_kwargs()) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE SCHEMA IF NOT EXISTS main.support")
        cur.execute(
            "CREATE TABLE main.support.tickets AS SELECT * FROM VALUES "
            "(1, 'ok', ''), (2, CAST(NULL AS STRING), '') AS t(ticket_id, subject, body)"
        )
        stored = []
        for _ in range(2):
            for statement in agentbatch.plan(job, target="databricks-sql").statements:
                cur.execute(statement.sql)
            cur.execute(
                "SELECT ticket_id, response, error, request_fingerprint, answered_at "
                "FROM main.support.ticket_labels ORDER BY ticket_id"
            )
            stored.append(cur.fetchall_arrow().to_pylist())
    first, second = stored
    assert len(requests) == 1 and requests[0] is not None
    assert first[1]["response"] is None
    assert first[1]["error"] == f"{PERMANENT_ERROR}request is NULL"
    assert first[1]["request_fingerprint"]
    assert first[0]["error"] is None
    assert second == first  # nothing redone: not the answer, not the NULL request's error
