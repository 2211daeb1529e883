"""The bulk runner against the real loopback agent server: protocols, retries, resume."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from agentbatch.agent.bulk import run_bulk
from agentbatch.agent.calls import CallSpec
from agentbatch.agent.ledger import Ledger
from agentbatch.agent.stats import BulkStats
from agentbatch.errors import AgentError, UsageError
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig

from .conftest import input_batches


def texts(n: int, prefix: str = "question") -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def rows_of(ledger: Ledger) -> dict[Any, dict[str, Any]]:
    table = pa.Table.from_batches(list(ledger.rows_of_run()))
    rows = table.to_pylist()
    keys = [r["id"] for r in rows]
    assert len(keys) == len(set(keys)), "a key appears twice"
    return {r["id"]: r for r in rows}


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger(tmp_path / "ledger.sqlite", key="id") as ledger:
        yield ledger  # type: ignore[misc]


async def run(spec: CallSpec, requests: list[str], ledger: Ledger, **kwargs: Any) -> BulkStats:
    return await run_bulk(
        input_batches(spec, requests), call=spec, key="id", ledger=ledger, **kwargs
    )


STYLES = [
    ("apps responses", {}, {}),
    ("apps responses, MLflow AgentServer minimal", {"minimal": True}, {}),
    ("apps stream, OpenAI events", {}, {"stream": True}),
    ("apps stream, MLflow data-only", {"stream_style": "mlflow"}, {"stream": True}),
    ("chat completion", {}, {"api": "chat"}),
    ("chat stream", {}, {"api": "chat", "stream": True}),
    ("ChatAgent reply", {"chat_reply": "chat_agent"}, {"api": "chat"}),
]


@pytest.mark.parametrize(
    ("name", "server_options", "spec_options"), STYLES, ids=[s[0] for s in STYLES]
)
async def test_every_protocol_answers_every_row_once(
    name: str, server_options: dict[str, Any], spec_options: dict[str, Any], ledger: Ledger
) -> None:
    with serve_agent(**server_options) as server:
        spec = CallSpec(endpoint=server.url, **spec_options)
        stats = await run(spec, texts(60), ledger)
        assert server.stats().requests_total == 60
    assert (stats.ok, stats.errors, stats.sent, stats.rows_seen) == (60, 0, 60, 60)
    rows = rows_of(ledger)
    assert sorted(rows) == list(range(60))
    assert rows[7]["response"] == "answer: question 7"
    assert rows[7]["team"] == "team-1"  # passthrough column kept
    assert rows[7]["attempts"] == 1 and rows[7]["http_status"] == 200
    assert rows[7]["error"] is None and rows[7]["latency_ms"] > 0


async def test_serving_invocations_url_and_usage(ledger: Ledger) -> None:
    with serve_agent() as server:
        spec = CallSpec(endpoint="triage-endpoint")
        overrides = {
            "triage-endpoint": f"{server.url}/serving-endpoints/triage-endpoint/invocations"
        }
        stats = await run(spec, texts(10), ledger, endpoint_overrides=overrides)
    assert stats.ok == 10
    row = rows_of(ledger)[3]
    assert row["input_tokens"] == 2 and row["output_tokens"] == 3
    assert stats.input_tokens == 20


async def test_custom_inputs_and_trace_ids(ledger: Ledger) -> None:
    with serve_agent() as server:
        spec = CallSpec(
            endpoint=server.url,
            custom_inputs={"tenant": "acme"},
            databricks_options={"return_trace": True},
        )
        await run(spec, texts(5), ledger)
    row = rows_of(ledger)[0]
    assert json.loads(row["custom_outputs"]) == {"tenant": "acme"}
    assert row["trace_id"].startswith("tr-")


@pytest.mark.parametrize(
    "options", [{}, {"stream": True}, {"api": "chat"}], ids=["responses", "stream", "chat"]
)
async def test_typed_answers_with_a_response_format(
    options: dict[str, Any], ledger: Ledger
) -> None:
    tickets = ["classify this ticket: the printer is on fire", "triage ticket: refund my invoice"]
    with serve_agent() as server:
        spec = CallSpec(
            endpoint=server.url, response_format="STRUCT<label: STRING, urgency: INT>", **options
        )
        stats = await run(spec, tickets, ledger)
    assert stats.ok == 2
    table = pa.Table.from_batches(list(ledger.rows_of_run()))
    assert table.schema.field("response").type == pa.struct(
        [("label", pa.string()), ("urgency", pa.int32())]
    )
    answers = {r["id"]: r["response"] for r in table.to_pylist()}
    assert set(answers[0]) == {"label", "urgency"} and isinstance(answers[0]["urgency"], int)


async def test_json_requests_carry_per_row_custom_inputs(ledger: Ledger) -> None:
    requests = [
        json.dumps(
            {"input": [{"role": "user", "content": f"q{i}"}], "custom_inputs": {"key": f"k{i}"}}
        )
        for i in range(5)
    ]
    with serve_agent() as server:
        spec = CallSpec(endpoint=server.url, request_is_json=True, custom_inputs={"tenant": "acme"})
        stats = await run(spec, requests, ledger)
        assert server.stats().requests_for("k3") == 1
    assert stats.ok == 5
    assert json.loads(rows_of(ledger)[3]["custom_outputs"]) == {"tenant": "acme", "key": "k3"}


async def test_transient_faults_are_retried_until_answered(ledger: Ledger) -> None:
    faults = FaultConfig(
        seed=3,
        p_rate_limit=0.15,
        p_rate_limit_no_retry_after=0.05,
        p_server_error=0.1,
        p_unavailable=0.1,
        p_connection_reset=0.1,
        retry_after_s=0.05,
        max_faults_per_key=2,
    )
    with serve_agent(faults) as server:
        spec = CallSpec(endpoint=server.url, timeout_s=5)
        stats = await run(spec, texts(300), ledger)
        server_stats = server.stats()
    assert (stats.ok, stats.errors) == (300, 0)
    assert stats.retries > 0 and stats.http_429 > 0
    assert server_stats.requests_total == stats.requests
    assert set(rows_of(ledger)) == set(range(300))
    attempts = [r["attempts"] for r in rows_of(ledger).values()]
    assert max(attempts) == 3 and sum(attempts) == stats.requests


async def test_hung_calls_time_out_and_are_resent(ledger: Ledger) -> None:
    faults = FaultConfig(seed=1, p_hang=0.3, hang_s=10, max_faults_per_key=1)
    with serve_agent(faults) as server:
        spec = CallSpec(endpoint=server.url, timeout_s=0.3)
        stats = await run(spec, texts(40), ledger)
        hung = server.stats().faults.get("hang", 0)
    assert hung > 0
    assert (stats.ok, stats.errors) == (40, 0)
    assert stats.retries >= hung


async def test_truncated_streams_are_resent_and_stream_errors_are_not(ledger: Ledger) -> None:
    faults = FaultConfig(seed=5, p_truncated_stream=0.3, p_stream_error=0.2, max_faults_per_key=1)
    with serve_agent(faults) as server:
        spec = CallSpec(endpoint=server.url, stream=True, timeout_s=5)
        stats = await run(spec, texts(100), ledger)
        injected = server.stats().faults
    rows = rows_of(ledger)
    failed = [r for r in rows.values() if r["error"]]
    assert len(failed) == injected["stream_error"] == stats.errors
    assert all("agent error in stream" in r["error"] and r["response"] is None for r in failed)
    assert all(r["attempts"] == 1 for r in failed)
    assert stats.ok == 100 - len(failed)
    assert stats.errors_by_kind == {"agent": len(failed)}


async def test_permanent_client_errors_are_recorded_once_with_the_server_message(
    ledger: Ledger,
) -> None:
    requests = texts(20)
    requests[4] = "PERMANENT_ERROR please"
    with serve_agent() as server:
        spec = CallSpec(endpoint=server.url)
        stats = await run(spec, requests, ledger)
        assert server.stats().requests_total == 20
    row = rows_of(ledger)[4]
    assert row["error"].startswith("[permanent] HTTP 400")
    assert "it can never succeed" in row["error"]
    assert row["attempts"] == 1 and row["http_status"] == 400 and row["response"] is None
    assert stats.errors_by_kind == {"http_400": 1}


async def test_malformed_replies_are_parse_errors_not_retried(ledger: Ledger) -> None:
    with serve_agent(FaultConfig(p_malformed_json=1.0)) as server:
        stats = await run(CallSpec(endpoint=server.url), texts(5), ledger)
        assert server.stats().requests_total == 5
    assert stats.errors_by_kind == {"parse": 5}
    assert "reply is not JSON" in rows_of(ledger)[0]["error"]


async def test_a_rerun_sends_nothing_and_retry_errors_resends_only_failures(ledger: Ledger) -> None:
    requests = texts(50)
    requests[10] = "PERMANENT_ERROR a"
    requests[20] = "PERMANENT_ERROR b"
    with serve_agent() as server:
        spec = CallSpec(endpoint=server.url)
        first = await run(spec, requests, ledger)
        assert (first.ok, first.errors) == (48, 2)

        server.reset_stats()
        again = await run(spec, requests, ledger)
        assert server.stats().requests_total == 0
        # Answers (and permanent errors) paid for before are reused, not sent again.
        assert (again.reused, again.sent) == (50, 0)

        server.configure(FaultConfig(permanent={"NEVER": 400}))
        retried = await run(spec, requests, ledger, retry_errors=True)
        assert server.stats().requests_total == 2
        assert (retried.reused, retried.ok) == (48, 50)

        server.reset_stats()
        changed = list(requests)
        changed[0] = "an edited prompt"
        await run(spec, changed, ledger)
        assert server.stats().requests_total == 1
    rows = rows_of(ledger)
    assert rows[10]["error"] is None and rows[0]["response"] == "answer: an edited prompt"


async def test_async_input_and_a_progress_reporter(ledger: Ledger) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.events: list[str] = []
            self.last: BulkStats | None = None

        def start(self, total: int | None) -> None:
            self.events.append(f"start {total}")

        def update(self, stats: BulkStats) -> None:
            self.last = stats

        def finish(self, stats: BulkStats) -> None:
            self.events.append(f"finish {stats.done}")

    spec = CallSpec(endpoint="builtin:instant")
    recorder = Recorder()

    async def batches() -> AsyncIterator[pa.RecordBatch]:
        for batch in input_batches(spec, texts(30), batch_rows=7):
            yield batch

    stats = await run_bulk(
        batches(), call=spec, key="id", ledger=ledger, progress=recorder, total_rows=30
    )
    assert recorder.events == ["start 30", "finish 30"]
    assert recorder.last is not None and recorder.last.done == 30
    assert stats.as_dict()["ok"] == 30


async def test_builtin_instant_answers_vectorised(ledger: Ledger) -> None:
    spec = CallSpec(endpoint="builtin:instant")
    requests = ["x" * 100, "short", "naïve"]
    stats = await run(spec, requests, ledger)
    assert stats.ok == 3
    rows = rows_of(ledger)
    assert rows[0]["response"] == "echo: " + "x" * 64
    assert rows[2]["response"] == "echo: naïve"
    again = await run(spec, requests, ledger)
    assert again.reused == 3 and again.sent == 0


async def test_builtin_instant_typed(ledger: Ledger) -> None:
    spec = CallSpec(
        endpoint="builtin:instant",
        response_format="STRUCT<label: STRING, n: INT, even: BOOLEAN, inner: STRUCT<score: DOUBLE>>",
    )
    await run(spec, ["abcd"], ledger)
    assert rows_of(ledger)[0]["response"] == {
        "label": "echo: abcd",
        "n": 4,
        "even": True,
        "inner": {"score": 4.0},
    }


async def test_an_override_can_point_a_name_at_builtin(ledger: Ledger) -> None:
    spec = CallSpec(endpoint="apps/triage")
    stats = await run(spec, texts(3), ledger, endpoint_overrides={"apps/triage": "builtin:instant"})
    assert stats.ok == 3


async def test_missing_input_columns_are_a_usage_error(ledger: Ledger) -> None:
    batch = pa.RecordBatch.from_pydict({"id": pa.array([1]), "_request": pa.array(["x"])})
    with pytest.raises(UsageError, match="request_fingerprint"):
        await run_bulk([batch], call=CallSpec(endpoint="builtin:instant"), key="id", ledger=ledger)


async def test_a_wrong_route_stops_the_run_before_burning_rows(ledger: Ledger) -> None:
    with serve_agent() as server:
        spec = CallSpec(endpoint=f"{server.url}/no/such/invocations")
        with pytest.raises(AgentError, match="HTTP 404"):
            await run(spec, texts(500), ledger)
        # At most the first window of calls was spent.
        assert server.stats().requests_total <= 32
    assert ledger.stats()["answers"] == 0


async def test_an_unreachable_endpoint_stops_the_run(ledger: Ledger) -> None:
    server = AgentServer().start()
    url = server.url
    server.stop()  # nothing listens there any more
    spec = CallSpec(endpoint=url, max_retries=0)
    with pytest.raises(AgentError, match="unreachable"):
        await run(spec, texts(200), ledger)
    assert ledger.stats()["answers"] == 0


async def test_answers_already_received_are_committed_when_the_run_stops(ledger: Ledger) -> None:
    # The first rows are answered, then the endpoint starts refusing: those answers stay.
    requests = texts(300)
    with serve_agent(FaultConfig(permanent={"question 2": 403})) as server:
        spec = CallSpec(endpoint=server.url, max_concurrency=1)
        with pytest.raises(AgentError, match="HTTP 403"):
            await run(spec, requests, ledger)
    rows = rows_of(ledger)
    assert {0, 1} <= set(rows) and all(r["error"] is None for r in rows.values())


async def test_an_input_failure_surfaces_as_itself_and_keeps_answers(ledger: Ledger) -> None:
    from agentbatch.errors import EngineError

    def failing_batches(spec: CallSpec) -> Any:
        yield from input_batches(spec, texts(50), batch_rows=50)
        raise EngineError("the warehouse went away")

    with serve_agent(FaultConfig(latency_ms=20)) as server:
        spec = CallSpec(endpoint=server.url)
        with pytest.raises(EngineError, match="went away"):
            await run_bulk(failing_batches(spec), call=spec, key="id", ledger=ledger)
        sent = server.stats().requests_total
    # Every call that was sent finished and was recorded; nothing was lost.
    assert ledger.stats()["answers"] == sent > 0


async def test_cancelling_a_run_commits_what_was_answered(ledger: Ledger) -> None:
    import asyncio

    committed = asyncio.Event()

    class Watch:
        def start(self, total: int | None) -> None:
            pass

        def update(self, stats: BulkStats) -> None:
            if stats.done >= 50:
                committed.set()

        def finish(self, stats: BulkStats) -> None:
            pass

    with serve_agent(FaultConfig(latency_ms=20)) as server:
        spec = CallSpec(endpoint=server.url, max_concurrency=16)
        task = asyncio.ensure_future(run(spec, texts(2000), ledger, progress=Watch()))
        await committed.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        answered_by_server = server.stats().status_counts.get(200, 0)
    kept = ledger.stats()["answers"]
    assert kept >= 50
    # Lost: at most the calls in flight when the run was cancelled.
    assert answered_by_server - kept <= 16


async def test_empty_input(ledger: Ledger) -> None:
    with serve_agent() as server:
        stats = await run_bulk([], call=CallSpec(endpoint=server.url), key="id", ledger=ledger)
        assert server.stats().requests_total == 0
    assert (stats.rows_seen, stats.sent) == (0, 0)


def test_run_bulk_sync(tmp_path: Path) -> None:
    from agentbatch.agent.bulk import run_bulk_sync

    spec = CallSpec(endpoint="builtin:instant")
    with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
        stats = run_bulk_sync(input_batches(spec, texts(5)), call=spec, key="id", ledger=ledger)
    assert stats.ok == 5


@pytest.mark.parametrize("agent", ["builtin", "http"])
async def test_a_null_request_is_a_row_error_never_a_call(agent: str, ledger: Ledger) -> None:
    batch = next(input_batches(CallSpec(endpoint="x"), ["a", "b"]))
    requests = pa.array(["a", None], type=pa.string())
    columns = batch.columns  # pyarrow 14 (the floor) has no RecordBatch.set_column
    columns[batch.schema.get_field_index("_request")] = requests
    batch = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
    with serve_agent() as server:
        spec = CallSpec(endpoint="builtin:instant" if agent == "builtin" else server.url)
        stats = await run_bulk([batch], call=spec, key="id", ledger=ledger)
        assert server.stats().requests_total == (1 if agent == "http" else 0)
    rows = rows_of(ledger)
    assert rows[1]["error"] == "[permanent] request is NULL" and rows[1]["response"] is None
    assert rows[0]["error"] is None
    assert (stats.ok, stats.errors, stats.errors_by_kind) == (1, 1, {"request": 1})


async def test_answers_share_commits_within_the_commit_window(ledger: Ledger) -> None:
    # A fast agent answers hundreds of rows per window: they reach the ledger in a few group
    # commits (at most one per COMMIT_WINDOW_S, plus the last), not one per answer.
    from agentbatch.agent.bulk import COMMIT_WINDOW_S

    with serve_agent(FaultConfig(latency_ms=2)) as server:
        spec = CallSpec(endpoint=server.url, max_concurrency=64)
        stats = await run(spec, texts(3000), ledger)
    assert stats.ok == 3000
    commits = ledger.stats()["batches"]
    assert commits <= stats.wall_s / COMMIT_WINDOW_S + 2, (commits, stats.wall_s)
    assert len(rows_of(ledger)) == 3000


@pytest.mark.parametrize("rows", [3, 200])
async def test_peak_concurrency_is_the_most_calls_in_flight(ledger: Ledger, rows: int) -> None:
    """Not the limit the run was allowed (16 for a 3-row run): the calls it had in flight."""
    with serve_agent(FaultConfig(latency_ms=20)) as server:
        stats = await run(CallSpec(endpoint=server.url), texts(rows), ledger)
        served = server.stats().max_in_flight
    assert served <= stats.peak_concurrency <= rows  # sent, not all yet arrived
    if rows == 3:
        assert stats.peak_concurrency == 3
