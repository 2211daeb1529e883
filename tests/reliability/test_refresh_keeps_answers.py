"""A `--full-refresh` whose new call of a row fails transiently (retries used up on a 5xx) keeps
the row's earlier answer in the target, not the failure: a paid, valid answer to the same request
is not lost. The refresh stays unfinished for those rows, and the next run, plain or
`--full-refresh`, asks exactly them again. A permanent failure is the agent's answer now and
replaces the old one; a row that held an error gets the new error. On the local engine, on the
databricks-sql target's REST fallback (the unmodified connector, the loopback warehouse), and on
its push-down path in each mode (the warehouse's `ai_query` calling the loopback agent's Model
Serving route: a 503 on every attempt is ai_query's RETRY_TIMEOUT `errorMessage`, a `[transient]`
row error), against the loopback agent with injected faults."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key
from tests.support.databricks_env import isolate

from .history import Project, utc
from .warehouse_history import TOKEN, WarehouseProject, serve

# 2, 5, 7: answered, then FLAKY (503 on every attempt) during the refresh. 8: answered, then
# refused for good (400). 9: failed for good at first, then FLAKY.
TEXTS: dict[int, str | None] = {
    **{i: f"text {i}" for i in range(10)},
    2: "FLAKY text 2",
    5: "FLAKY text 5",
    7: "FLAKY text 7",
    8: "GONE text 8",
    9: "FLAKY PERMANENT_ERROR text 9",
}
FLAKY_KEYS = {2, 5, 7}
HEALTHY = FaultConfig(permanent={"PERMANENT_ERROR": 400})
# Markers are tried in order: key 9 fails with the 503 now.
FAILING = FaultConfig(permanent={"FLAKY": 503, "GONE": 400, "PERMANENT_ERROR": 400})


class Runs:
    """A project on the local engine or the loopback warehouse, its source `TEXTS`."""

    def __init__(self, agent: AgentServer, project: Project | WarehouseProject) -> None:
        self.agent = agent
        self.project = project
        self.project.write_source(dict(TEXTS))

    def run(self, **options: Any) -> dict[str, Any]:
        return self.project.run(**options)

    def target(self) -> list[dict[str, Any]]:
        return self.project.target()

    def request(self, key: int) -> str:
        return f"{self.project.settings.prompt}: {TEXTS[key]}"


@pytest.fixture(
    params=[
        "local",
        "databricks-sql",
        "push-down-merge",
        "push-down-append",
        "push-down-overwrite",
    ]
)
def runs(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Runs]:
    with serve_agent(HEALTHY) as agent, contextlib.ExitStack() as stack:
        if request.param == "local":
            yield Runs(agent, Project(tmp_path, agent))
            return
        isolate(monkeypatch, tmp_path / "auth", token=TOKEN)
        project = WarehouseProject(tmp_path / "project", agent, stack.enter_context(serve(agent)))
        if request.param != "databricks-sql":
            project.settings.path = "push-down"
            project.settings.mode = request.param.rsplit("-", 1)[1]
        yield Runs(agent, project)


def rows_by_key(runs: Runs) -> dict[int, dict[str, Any]]:
    rows = runs.target()
    by_key = {r["review_id"]: r for r in rows}
    assert len(by_key) == len(rows) == len(TEXTS)  # one row per key
    return by_key


def calls(runs: Runs) -> dict[int, int]:
    """The agent's calls so far, per key."""
    made = runs.agent.stats().requests_by_key
    return {k: made.get(request_key(runs.request(k)), 0) for k in TEXTS}


def calls_since(runs: Runs, before: dict[int, int]) -> dict[int, int]:
    now = calls(runs)
    return {k: now[k] - before[k] for k in TEXTS if now[k] != before[k]}


def refresh_with_failures(runs: Runs) -> tuple[dict[int, dict[str, Any]], datetime]:
    """Run (all answered but key 9), then `--full-refresh` while FLAKY rows fail transiently:
    (the rows before the refresh, when it began)."""
    first = runs.run()
    assert first["errors"] == 1 and first["table_ok"] == len(TEXTS) - 1, first
    before = rows_by_key(runs)
    runs.agent.configure(FAILING)
    began = datetime.now(timezone.utc)
    refresh = runs.run(full_refresh=True)
    assert refresh["sent"] == len(TEXTS), refresh
    rows = rows_by_key(runs)
    for key in FLAKY_KEYS:  # the earlier answer, as it was
        assert rows[key]["error"] is None, rows[key]
        assert rows[key]["answered_at"] == before[key]["answered_at"]
        assert rows[key]["request_fingerprint"] == before[key]["request_fingerprint"]
    # The summary says how many rows kept their earlier answer.
    assert refresh["kept_previous_answer"] == len(FLAKY_KEYS), refresh
    assert refresh["errors"] == len(FLAKY_KEYS) + 2, refresh  # this run's failed calls
    # A permanent failure replaces the answer; a failure over an error row replaces it.
    assert rows[8]["error"].startswith("[permanent]"), rows[8]
    assert rows[9]["error"].startswith("[transient]"), rows[9]
    for key in set(TEXTS) - FLAKY_KEYS:
        assert utc(rows[key]["answered_at"]) >= began, key
    return before, began


@pytest.mark.parametrize("then", ["plain", "full_refresh"])
def test_a_transient_failure_in_a_refresh_keeps_the_earlier_answer(runs: Runs, then: str) -> None:
    _, began = refresh_with_failures(runs)
    runs.agent.configure(HEALTHY)
    before = calls(runs)
    # The refresh is unfinished for the kept rows only: the next run asks them (and key 9,
    # whose row is a transient failure), nothing else.
    again = runs.run(full_refresh=then == "full_refresh")
    assert calls_since(runs, before) == dict.fromkeys([*FLAKY_KEYS, 9], 1), again
    assert again.get("kept_previous_answer", 0) == 0, again
    rows = rows_by_key(runs)
    for key in TEXTS:
        assert utc(rows[key]["answered_at"]) >= began, key  # every row refreshed
    assert {k for k, r in rows.items() if r["error"] is not None} == {8, 9}
    # The refresh finished: a plain run sends nothing, the next refresh every row.
    before = calls(runs)
    assert runs.run()["sent"] == 0
    assert calls_since(runs, before) == {}
    assert runs.run(full_refresh=True)["sent"] == len(TEXTS)


def test_rows_failing_again_keep_their_answer_until_answered(runs: Runs) -> None:
    """Still failing at the next run: the rows keep their earlier answer again, and the refresh
    stays unfinished; a run that finishes before they are answered never claims it finished."""
    before_refresh, _ = refresh_with_failures(runs)
    before = calls(runs)
    still = runs.run()  # the agent still fails them (each call retried as the job says)
    assert set(calls_since(runs, before)) == FLAKY_KEYS | {9}
    assert still["kept_previous_answer"] == len(FLAKY_KEYS), still
    rows = rows_by_key(runs)
    for key in FLAKY_KEYS:
        assert rows[key]["answered_at"] == before_refresh[key]["answered_at"]
    runs.agent.configure(HEALTHY)
    before = calls(runs)
    runs.run()
    assert calls_since(runs, before) == dict.fromkeys([*FLAKY_KEYS, 9], 1)
    before = calls(runs)
    assert runs.run()["sent"] == 0


def test_a_limited_run_leaves_the_rest_of_the_kept_rows_for_the_next(runs: Runs) -> None:
    """`--limit 1` after such a refresh asks one of the rows left; the others stay left for the
    next run (the refresh is not ended by a run that did not reach them)."""
    refresh_with_failures(runs)
    runs.agent.configure(HEALTHY)
    before = calls(runs)
    runs.run(limit=1)
    first = calls_since(runs, before)
    assert sum(first.values()) == 1 and set(first) <= FLAKY_KEYS | {9}, first
    before = calls(runs)
    runs.run()
    assert calls_since(runs, before) == dict.fromkeys((FLAKY_KEYS | {9}) - set(first), 1)
    assert runs.run()["sent"] == 0


def test_a_killed_refresh_with_failing_rows_keeps_their_answers(tmp_path: Path) -> None:
    """SIGKILL a `--full-refresh` midway while FLAKY rows fail; the continuing `--full-refresh`
    (still failing) keeps their earlier answers; once the agent is healthy a plain run asks
    exactly them."""
    texts: dict[int, str | None] = {
        i: (f"FLAKY text {i}" if i % 4 == 0 else f"text {i}") for i in range(40)
    }
    flaky = {k for k in texts if k % 4 == 0}
    with serve_agent(HEALTHY) as agent:
        project = Project(tmp_path, agent)
        project.write_source(texts)
        project.run()
        answered = {r["review_id"]: r["answered_at"] for r in project.target()}
        agent.configure(FaultConfig(**{**vars(FAILING), "latency_ms": 100}))
        child = project.start_cli("--full-refresh")
        try:
            deadline = time.monotonic() + 60
            while agent.stats().requests_total < len(texts) + 8:
                assert child.poll() is None, "the refresh ended before it was killed"
                assert time.monotonic() < deadline, "the refresh never called the agent"
                time.sleep(0.002)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        agent.configure(FAILING)
        continued = project.run(full_refresh=True)
        assert continued["kept_previous_answer"] == len(flaky), continued
        rows = {r["review_id"]: r for r in project.target()}
        assert len(rows) == len(texts)
        for key in flaky:
            assert rows[key]["error"] is None and rows[key]["answered_at"] == answered[key]
        agent.configure(HEALTHY)
        made = dict(agent.stats().requests_by_key)
        project.run()
        now = agent.stats().requests_by_key
        asked = {
            k
            for k in texts
            if now.get(request_key(f"Review: {texts[k]}"), 0)
            != made.get(request_key(f"Review: {texts[k]}"), 0)
        }
        assert asked == flaky
        assert all(r["error"] is None for r in project.target())
