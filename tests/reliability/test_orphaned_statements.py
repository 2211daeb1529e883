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
alike, leaving the key in two identical rows).

The same with the recovery on the other path (its requests have another fingerprint), and with
the recovery a `--full-refresh` while the agent fails a key transiently: the orphan's good answer
to that key's request must survive the refresh's failure however the two interleave (before, the
REST fallback decided what it kept before its write, so an orphan landing in between lost its
paid answer to the refresh's failure)."""

from __future__ import annotations

import hashlib
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agentbatch.agent.ledger import refresh_began
from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key
from tests.support.databricks_env import isolate
from tests.support.warehouse.ai_query import RETRIES as AI_QUERY_RETRIES
from tests.support.warehouse.operations import Operation, States

from .warehouse_history import TOKEN, WRITES, WarehouseProject, serve, statement_to_hold

FIRST = set(range(6))  # the source when the table was first written, and at the killed run
RECOVERY = {0, 1, 2, 3, 4, 6}  # the source at the recovery: key 5 left, key 6 joined
MODES = ("merge", "append", "overwrite")
PAIRS = [(killed, recovery) for killed in MODES for recovery in MODES if killed != recovery]


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
    orphan_beside_recovery(
        agent,
        tmp_path,
        killed_path=path,
        recovery_path=path,
        killed=killed,
        recovery=recovery,
        moment=moment,
    )


# -- a killed run's write landing beside a recovery on the other path, or a --full-refresh -------

FLAKY_KEY = 3  # while the agent is flaky, its request fails with a 503 (a transient failure)
FLAKY = FaultConfig(permanent={"FLAKY": 503})
TEXTS = {k: f"FLAKY text {k}" if k == FLAKY_KEY else f"text {k}" for k in FIRST | RECOVERY}
Row = tuple[int, str, str]  # (key, request answered: "<path> <prompt>", "ok" or "transient")


def written(
    rows: list[Row], mode: str, new: dict[int, Row], selected: set[int], label: str
) -> list[Row]:
    """The target after a run in `mode` asking `label` wrote `new` over `rows` (selection
    `selected`)."""
    if mode == "merge":
        return [r for r in rows if r[0] not in new] + list(new.values())
    if mode == "append":
        return [r for r in rows if not (r[0] in new and r[1] == new[r[0]][1])] + list(new.values())
    # overwrite: one row per selected key, this run's answer, else the one for the same request
    held = {r[0]: r for r in rows if r[1] == label}
    return [new.get(k) or held[k] for k in sorted(selected) if k in new or k in held]


def answered(
    rows: list[Row], label: str, selected: set[int], *, refresh: bool, flaky: bool
) -> tuple[dict[int, Row], set[int]]:
    """A run's answers for `label` over `rows` (its choice: every selected key on a refresh, else
    those without a good answer to the request), and the keys whose transient failure keeps the
    good answer the target holds to the same request (a refresh's rule)."""
    todo = selected if refresh else {k for k in selected if (k, label, "ok") not in rows}
    new = {k: (k, label, "transient" if flaky and k == FLAKY_KEY else "ok") for k in todo}
    kept = {
        k for k, r in new.items() if refresh and r[2] == "transient" and (k, label, "ok") in rows
    }
    return {k: r for k, r in new.items() if k not in kept}, kept


def orphan_beside_recovery(
    agent: AgentServer,
    tmp_path: Path,
    *,
    killed_path: str,
    recovery_path: str,
    killed: str,
    recovery: str,
    moment: str,
    full_refresh: bool = False,
    flaky: bool = False,
) -> None:
    """The killed run (prompt edited, mode `killed`, on `killed_path`) held in its write and
    released at `moment` beside the recovery (mode `recovery`, on `recovery_path`, a
    `--full-refresh` or not, the agent failing key 3 transiently or not), then the target
    compared with the model: the runs one after the other."""
    with serve(agent) as wh:
        project = WarehouseProject(tmp_path / "project", agent, wh)
        s = project.settings
        labels: dict[str, str] = {}

        def learn(path: str, prompt: str) -> None:
            s.path, s.prompt = path, prompt
            call = project.call_fingerprint()
            for text in TEXTS.values():
                digest = hashlib.sha256(f"{call}{prompt}: {text}".encode()).hexdigest()
                labels[digest] = f"{path} {prompt}"

        for path in {killed_path, recovery_path}:
            for prompt in ("Review", "Judge"):
                learn(path, prompt)

        def paid() -> Counter[int]:
            """The calls made so far for each key's request (the prompt edited), since the start."""
            by_key = agent.stats().requests_by_key
            now = Counter({k: by_key.get(request_key(f"Judge: {t}"), 0) for k, t in TEXTS.items()})
            return now - start

        start: Counter[int] = Counter()
        start = paid()

        project.write_source({k: TEXTS[k] for k in FIRST})
        s.path, s.mode, s.prompt = killed_path, "merge", "Review"
        project.run()
        initial: list[Row] = [(k, f"{killed_path} Review", "ok") for k in sorted(FIRST)]

        # The killed run: SIGKILL while its write is held on the warehouse.
        s.prompt, s.mode = "Judge", killed
        klabel = f"{killed_path} Judge"
        orphan_sql = WRITES[killed_path, killed]
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
        killed_paid = paid()
        # Its rows (REST: those it staged; push-down: those its statement selects when the
        # loopback runs it, after the source changed).
        chose = FIRST if killed_path == "rest" else RECOVERY
        # (Push-down: its calls are made then, the agent flaky or not.)
        late = flaky and killed_path == "push-down"
        new, _ = answered(initial, klabel, chose, refresh=False, flaky=late)
        orphaned = written(initial, killed, new, chose, klabel)

        # The recovery, at once, in another mode or on the other path, over a changed source.
        project.write_source({k: TEXTS[k] for k in RECOVERY})
        s.mode, s.path = recovery, recovery_path
        rlabel = f"{recovery_path} Judge"
        settings = {**project.target_settings, "conflict_backoff_s": 0.05}
        errors: list[BaseException] = []
        summaries: list[dict[str, Any]] = []

        def recover() -> None:
            try:
                summaries.append(project.run(settings=settings, full_refresh=full_refresh))
            except Exception as err:
                errors.append(err)

        agent.configure(FLAKY if flaky else FaultConfig())
        try:
            if moment == "after":
                recover()
                orphan_gate.set()
                op = ended(orphan)
                assert op.state == States.ERROR_STATE, op.sql
                assert "DELTA_CONCURRENT" in str(op.error) or "more than one row" in str(op.error)
            else:
                paused = statement_to_hold(recovery_path, recovery, moment)
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
        finally:
            agent.configure(FaultConfig())

        found = project.target()
        rows: list[Row] = [
            (r["review_id"], labels[r["request_fingerprint"]], kind(r["error"])) for r in found
        ]
        twice = [row for row, n in Counter((k, lab) for k, lab, _ in rows).items() if n > 1]
        assert not twice, f"(key, request) held twice: {twice}; rows {sorted(rows)}"

        # The runs one after the other: the recovery alone (the orphan failed), or the orphan's
        # write then the recovery's. The recovery chose its rows on the REST fallback before
        # the orphan landed, on push-down in its write statement; a refresh's transient
        # failure keeps the good answer to the same request the target holds when it writes.
        before = initial if moment == "after" else orphaned
        chosen = initial if recovery_path == "rest" else before
        new, _ = answered(chosen, rlabel, RECOVERY, refresh=full_refresh, flaky=flaky)
        _, kept = answered(before, rlabel, RECOVERY, refresh=full_refresh, flaky=flaky)
        new = {k: r for k, r in new.items() if k not in kept}
        expected = written(before, recovery, new, RECOVERY, rlabel)
        several = any(n > 1 for n in Counter(k for k, _, _ in before).values())
        if recovery == "merge" and several:
            assert errors and "mode overwrite" in str(errors[0]), errors
            expected = before
        else:
            assert not errors, errors
        assert sorted(rows) == sorted(expected), (
            f"rows {sorted(rows)} != expected {sorted(expected)}"
        )
        if not errors:
            good = {k for k, lab, outcome in rows if lab == rlabel and outcome == "ok"}
            assert good >= RECOVERY - ({FLAKY_KEY} if flaky else set()), sorted(rows)
            if recovery == "overwrite":
                assert sorted(k for k, _, _ in rows) == sorted(RECOVERY), "a dropped key is back"
            # What the refresh says it kept is what its write kept, however late the orphan
            # landed; and it stays unfinished for those rows only (the next run asks them).
            (summary,) = summaries
            assert summary.get("kept_previous_answer", 0) == len(kept), (summary, kept)
            unfinished = any(
                refresh_began(p) is not None for p in project.state.glob("*.ledger.sqlite")
            )
            assert unfinished == bool(kept), f"refresh unfinished: {unfinished}; kept {kept}"

        # Calls: each request paid by the killed run (REST: before the kill) at most once, and
        # by the recovery at most once (a refresh asks again; the REST fallback reuses the
        # checkpoint's answers to its request otherwise); a push-down write that lost a write
        # conflict made its calls, and its retry makes them again.
        total = paid()
        reused = killed_path == recovery_path == "rest" and not full_refresh

        def tries(path: str, key: int) -> int:
            """Calls per asking: ai_query retries a 503 itself (the REST fallback here does not:
            max_retries 0); the killed run's push-down calls are made when it lands, the agent
            flaky."""
            failing = flaky and key == FLAKY_KEY and path == "push-down"
            return 1 + AI_QUERY_RETRIES if failing else 1

        for key in RECOVERY | FIRST:
            recovery_calls = (not reused or key not in chose) + (
                recovery_path == "push-down" and moment == "overtaken"
            )
            bound = (
                tries(killed_path, key) * (key in chose)
                + tries(recovery_path, key) * recovery_calls
            )
            assert total[key] <= bound, f"key {key} paid {total[key]} times (at most {bound})"
        if killed_path == "rest":
            assert all(killed_paid[k] == 1 for k in chose), killed_paid


def kind(error: str | None) -> str:
    if error is None:
        return "ok"
    assert error.startswith("[transient]"), error
    return "transient"


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["between"])
@pytest.mark.parametrize(("killed", "recovery"), [("append", "merge"), ("overwrite", "append")])
@pytest.mark.parametrize(
    ("killed_path", "recovery_path"), [("push-down", "rest"), ("rest", "push-down")]
)
def test_a_killed_runs_write_landing_beside_a_recovery_on_the_other_path(
    agent: AgentServer,
    databricks_auth: Any,
    tmp_path: Path,
    killed_path: str,
    recovery_path: str,
    killed: str,
    recovery: str,
    moment: str,
) -> None:
    """A push-down run's orphaned statement beside a REST recovery, and the reverse: the other
    path's requests have another fingerprint, so the recovery answers every key again, and its
    write must keep each (key, request) once over whatever the orphan left."""
    orphan_beside_recovery(
        agent,
        tmp_path,
        killed_path=killed_path,
        recovery_path=recovery_path,
        killed=killed,
        recovery=recovery,
        moment=moment,
    )


# A REST refresh after a REST orphan (it chooses its rows, then writes: the orphan may land
# between, or overtake its write), in every mode; in mode merge, each other pair of paths (the
# other path's answers are to other requests: the refresh keeps none of them).
PATHS = ("rest", "push-down")
REFRESH_CASES = [
    *[
        ("rest", "rest", recovery, moment)
        for moment in ("between", "overtaken")
        for recovery in MODES
    ],
    *[
        (killed_path, recovery_path, "merge", "between")
        for killed_path in PATHS
        for recovery_path in PATHS
        if (killed_path, recovery_path) != ("rest", "rest")
    ],
]


@pytest.mark.slow
@pytest.mark.parametrize(("killed_path", "recovery_path", "recovery", "moment"), REFRESH_CASES)
def test_a_killed_runs_write_landing_beside_a_full_refresh_while_the_agent_is_flaky(
    agent: AgentServer,
    databricks_auth: Any,
    tmp_path: Path,
    killed_path: str,
    recovery_path: str,
    recovery: str,
    moment: str,
) -> None:
    """The recovery is a `--full-refresh` while the agent fails key 3 transiently: the orphan
    (mode merge) paid a good answer to key 3's request; the refresh's failure must not replace
    it once it landed, whichever run chose its rows first: the target decides when it is
    written."""
    orphan_beside_recovery(
        agent,
        tmp_path,
        killed_path=killed_path,
        recovery_path=recovery_path,
        killed="merge",
        recovery=recovery,
        moment=moment,
        full_refresh=True,
        flaky=True,
    )
