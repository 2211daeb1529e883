"""A killed run's statement that lands beside a recovery run in another mode, on the databricks-sql
target (the gap `kill_then_recover_in_another_mode` in test_histories_warehouse.py leaves: it waits
until the warehouse is idle before changing the mode).

A SIGKILL of the client cancels nothing on a Databricks warehouse: the write the killed run sent
(push-down: the `ai_query` MERGE or CREATE OR REPLACE; REST fallback: the write from its staging
table) goes on and commits later. Here that statement is held in the loopback warehouse
(`Warehouse.hold`: it stays RUNNING, having read the table's version when it arrived), the client
is killed, the job's mode is changed and the recovery run starts at once; the killed run's write
is let go at one of three moments:

- "after": once the recovery has finished. Every write of agentbatch reads its table, so Delta
  fails the orphan (a commit that is not a blind append landed since it started,
  tests/support/warehouse/commits.py): the target is what the recovery alone leaves.
- "between": after the recovery chose its rows (push-down: after its preflight; REST fallback:
  after its inputs query, and the agent's answers), before its write is sent: the orphan commits
  first; the recovery's write reads the table as the orphan left it.
- "overtaken": after the recovery's write was sent (held in turn): the orphan commits first, the
  recovery's write fails a write conflict and is run again.

Between the runs a source row leaves (key 5) and one joins (key 6), and the prompt was edited
before the killed run (every key's request changed), so an orphan landing late would bring back
a row the recovery's overwrite dropped, or add a second row for a key. The target is compared with
the runs one after the other (the orphan's write, then the recovery's, or the recovery's alone): no
(key, request) held twice, none lost, none resurrected; a recovery in mode merge instead
refuses a table the orphan's append left with a key in two rows, as it refuses one a finished
append left: it must, in its write (before, the REST fallback's MERGE by key updated both rows
alike, leaving the key in two identical rows)."""

from __future__ import annotations

import hashlib
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agentbatch.testing.agent_server import AgentServer
from tests.support.databricks_env import isolate
from tests.support.warehouse.operations import Operation, States

from .warehouse_history import TOKEN, WarehouseProject, serve

FIRST = set(range(6))  # the source when the table was first written, and at the killed run
RECOVERY = {0, 1, 2, 3, 4, 6}  # the source at the recovery: key 5 left, key 6 joined
TABLE = "`main`.`shop`.`review_answers`"
# Each mode's write of the answers into the target, as each path sends it.
WRITES = {
    ("rest", "merge"): "ON target.`review_id` = staged.`review_id`\nWHEN MATCHED",
    ("rest", "append"): "AND target.`request_fingerprint` = staged.`request_fingerprint`",
    ("rest", "overwrite"): f"CREATE OR REPLACE TABLE {TABLE} AS",
    ("push-down", "merge"): "ON target.`review_id` = answers.`review_id`\nWHEN MATCHED",
    ("push-down", "append"): "AND target.`request_fingerprint` = answers.`request_fingerprint`",
    ("push-down", "overwrite"): f"CREATE OR REPLACE TABLE {TABLE} AS",
}
# The last statement before the write, after the run chose its rows: on push-down the target's
# creation (the write statement chooses them), on the REST fallback the staging table's (its
# inputs query chose them, and the agent answered them).
BEFORE_WRITE = {
    "push-down": f"CREATE TABLE IF NOT EXISTS {TABLE} AS",
    "rest": "CREATE OR REPLACE TABLE `main`.`shop`.`review_answers__agentbatch_staged_",
}
MODES = ("merge", "append", "overwrite")
PAIRS = [(killed, recovery) for killed in MODES for recovery in MODES if killed != recovery]

Rows = list[tuple[int, str]]  # (key, prompt answered): the target's rows


def write(rows: Rows, mode: str, answered: set[int], prompt: str, selected: set[int]) -> Rows:
    """The target after a run in `mode` answered `answered` for `prompt` over `selected` (every
    answer good; a key not answered holds a row for `prompt`)."""
    new = [(key, prompt) for key in sorted(answered)]
    if mode == "merge":
        return [r for r in rows if r[0] not in answered] + new
    if mode == "append":
        return [r for r in rows if r not in new] + new
    return [(key, prompt) for key in sorted(selected)]  # overwrite: one row per selected key


def todo(rows: Rows, prompt: str, selected: set[int]) -> set[int]:
    return {key for key in selected if (key, prompt) not in rows}


def ended(op: Operation, timeout_s: float = 60.0) -> Operation:
    """The warehouse's statement `op`, once it has ended."""
    assert op.wait(timeout_s), f"still running: {op.sql}"
    return op


@pytest.fixture
def databricks_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path / "auth", token=TOKEN)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["after", "between", "overtaken"])
@pytest.mark.parametrize(("killed", "recovery"), PAIRS)
@pytest.mark.parametrize("path", ["rest", "push-down"])
def test_a_killed_runs_write_landing_beside_a_recovery_in_another_mode(
    agent: AgentServer,
    databricks_auth: Any,
    tmp_path: Path,
    path: str,
    killed: str,
    recovery: str,
    moment: str,
) -> None:
    with serve(agent) as wh:
        project = WarehouseProject(tmp_path / "project", agent, wh)
        s = project.settings
        s.path = path

        def fingerprints() -> dict[str, str]:
            call = project.call_fingerprint()
            return {
                hashlib.sha256(f"{call}{s.prompt}: text {key}".encode()).hexdigest(): s.prompt
                for key in FIRST | RECOVERY
            }

        project.write_source({k: f"text {k}" for k in FIRST})
        s.mode, s.prompt = "merge", "Review"
        project.run()
        initial: Rows = [(key, "Review") for key in sorted(FIRST)]
        s.prompt = "Judge"  # every key's request changes: the killed run answers all of them
        prompts = {**fingerprints()}
        s.prompt = "Review"
        prompts.update(fingerprints())
        s.prompt = "Judge"

        # The killed run: SIGKILL while its write is on the warehouse (held, RUNNING).
        s.mode = killed
        orphan_sql = WRITES[path, killed]
        orphan_gate = wh.hold(orphan_sql)
        child = project.start_cli()
        try:
            wh.wait_until_running(orphan_sql, timeout_s=120)
            child.send_signal(signal.SIGKILL)
            orphan = wh.service.operations(orphan_sql)[-1]
        finally:
            child.kill()
            child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL
        # Its rows: on the REST fallback those it staged; on push-down those its statement
        # selects when it runs (the loopback warehouse reads the source when the held statement
        # is let go, after the source changed; Databricks at its start).
        chose = FIRST if path == "rest" else RECOVERY
        orphaned = write(initial, killed, todo(initial, "Judge", chose), "Judge", chose)

        # The recovery, at once, in another mode, over a changed source.
        project.write_source({k: f"text {k}" for k in RECOVERY})
        s.mode = recovery
        settings = {**project.target_settings, "conflict_backoff_s": 0.05}
        errors: list[BaseException] = []

        def recover() -> None:
            try:
                project.run(settings=settings)
            except Exception as err:
                errors.append(err)

        if moment == "after":
            recover()
            orphan_gate.set()
            op = ended(orphan)
            # It read the table before the recovery's commit: Delta fails it (a write conflict;
            # the loopback warehouse first runs it over the newest table, rolled back, where a
            # merge may fail sooner on the recovery's append: `_one_row_per_key.sql`).
            assert op.state == States.ERROR_STATE, op.sql
            assert "DELTA_CONCURRENT" in str(op.error) or "more than one row" in str(op.error)
        else:
            paused = BEFORE_WRITE[path] if moment == "between" else WRITES[path, recovery]
            hold = wh.hold(paused)
            runner = threading.Thread(target=recover)
            runner.start()
            try:
                wh.wait_until_running(paused, timeout_s=60)
                orphan_gate.set()
                op = ended(orphan)
                assert op.state == States.FINISHED_STATE, op.error
            finally:
                orphan_gate.set()
                hold.set()
                runner.join(timeout=120)
        assert wh.wait_until_idle(timeout_s=60)

        found = project.target()
        assert all(r["error"] is None for r in found), [r["error"] for r in found]
        rows: Rows = [(r["review_id"], prompts[r["request_fingerprint"]]) for r in found]
        twice = [row for row, n in Counter(rows).items() if n > 1]
        assert not twice, f"(key, request) held twice: {twice}; rows {sorted(rows)}"

        # The runs one after the other: the recovery alone (the orphan failed), or the orphan's
        # write then the recovery's, which chose its rows on the REST fallback before the orphan
        # landed (from the first table), on push-down in its write statement.
        before = initial if moment == "after" else orphaned
        chosen = initial if path == "rest" else before
        expected = write(before, recovery, todo(chosen, "Judge", RECOVERY), "Judge", RECOVERY)
        several = any(n > 1 for n in Counter(k for k, _ in before).values())
        if recovery == "merge" and several:
            # A merge over keys the orphan's append left in two rows refuses, in its write, as
            # its preflight refuses a table a finished append left.
            assert errors and "mode overwrite" in str(errors[0]), errors
            expected = before
        else:
            assert not errors, errors
        assert sorted(rows) == sorted(expected), (
            f"{errors} rows {sorted(rows)} != {sorted(expected)}"
        )
        # Every selected key answers the current request (unless the recovery refused).
        if not errors:
            assert {k for k, p in rows if p == "Judge"} >= RECOVERY
            if recovery == "overwrite":
                assert sorted(k for k, _ in rows) == sorted(RECOVERY), "a dropped key is back"
