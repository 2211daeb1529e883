"""CallSpec validation and the fingerprints that make resume safe."""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

from agentbatch.agent.calls import CallSpec, call_fingerprint, canonical_json, row_fingerprint

BASE = CallSpec(
    endpoint="apps/triage",
    model_parameters={"temperature": 0.0, "max_tokens": 200},
    custom_inputs={"tenant": "acme"},
    databricks_options={"return_trace": True},
    response_format="STRUCT<label: STRING>",
)


@pytest.mark.parametrize(
    "change",
    [
        {"endpoint": "apps/other"},
        {"api": "chat"},
        {"model_parameters": {"temperature": 0.5, "max_tokens": 200}},
        {"custom_inputs": {"tenant": "globex"}},
        {"databricks_options": {}},
        {"response_format": "STRUCT<label: STRING, urgency: INT>"},
        {"request_is_json": True},
    ],
)
def test_fingerprint_changes_with_what_determines_the_answer(change: dict[str, object]) -> None:
    assert call_fingerprint(dataclasses.replace(BASE, **change)) != call_fingerprint(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"timeout_s": 10.0},
        {"max_retries": 0},
        {"max_concurrency": 4},
        {"requests_per_second": 2.0},
        {"stream": True},
    ],
)
def test_fingerprint_ignores_how_calls_are_made(change: dict[str, object]) -> None:
    assert call_fingerprint(dataclasses.replace(BASE, **change)) == call_fingerprint(BASE)


def test_fingerprint_is_independent_of_mapping_order() -> None:
    reordered = dataclasses.replace(BASE, model_parameters={"max_tokens": 200, "temperature": 0.0})
    assert call_fingerprint(reordered) == call_fingerprint(BASE)
    assert len(call_fingerprint(BASE)) == 64


@pytest.mark.parametrize("text", ["hello", "", "naïve ☃ ünïcode", "a'b\"c\nd"])
def test_row_fingerprint_matches_sql_sha2_of_concat(text: str) -> None:
    call_fp = call_fingerprint(BASE)
    # DuckDB's sha256 over concat is the same function the inputs SQL computes with sha2(..., 256).
    with duckdb.connect() as conn:
        expected = conn.execute("SELECT sha256(concat(?, ?))", [call_fp, text]).fetchall()
    assert row_fingerprint(call_fp, text) == expected[0][0]


def test_canonical_json_is_sorted_and_compact() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint": " "}, "endpoint"),
        ({"endpoint": "x", "api": "completions"}, "api"),
        ({"endpoint": "x", "timeout_s": 0}, "timeout_s"),
        ({"endpoint": "x", "max_retries": -1}, "max_retries"),
        ({"endpoint": "x", "max_concurrency": 0}, "max_concurrency"),
        ({"endpoint": "x", "requests_per_second": 0}, "requests_per_second"),
    ],
)
def test_bad_call_specs_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CallSpec(**kwargs)  # type: ignore[arg-type]


def test_the_mapped_url_is_part_of_the_fingerprint_unless_it_is_the_endpoints_own() -> None:
    """Another agent's answers are not this one's; the same agent reached another way is."""
    plain = call_fingerprint(BASE)
    builtin = call_fingerprint(BASE, route="builtin:instant")
    staging = call_fingerprint(BASE, route="https://staging.example.com/agent")
    assert len({plain, builtin, staging}) == 3
    # Credentials and query values are not the agent; nor is a local server's port.
    assert call_fingerprint(BASE, route="https://u:p@staging.example.com/agent?code=1") == staging
    local = call_fingerprint(BASE, route="http://127.0.0.1:8001/")
    assert call_fingerprint(BASE, route="http://127.0.0.1:9002/") == local != plain
    assert call_fingerprint(BASE, route="http://127.0.0.1:8001") == local  # the same route
    assert call_fingerprint(BASE, route="https://staging.example.com/agent/") == staging
    # The endpoint's own Databricks route: its app, or a serving endpoint's invocations URL.
    app = "https://triage-1234567890.aws.databricksapps.com"
    assert call_fingerprint(BASE, route=app) == plain
    assert call_fingerprint(BASE, route="https://other-1.aws.databricksapps.com") != plain
    serving = dataclasses.replace(BASE, endpoint="my-model")
    own = "https://adb-1.azuredatabricks.net/serving-endpoints/my-model/invocations"
    assert call_fingerprint(serving, route=own) == call_fingerprint(serving)
