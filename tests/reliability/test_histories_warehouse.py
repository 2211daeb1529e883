"""Histories of runs on the databricks-sql target against a reference model (hypothesis stateful
testing), through the unmodified connector and the loopback warehouse.

Random sequences of: run / --full-refresh / --retry-errors on either path (the REST fallback to an
Apps agent, or push-down `ai_query` served by the warehouse), SIGKILL of a CLI run mid-run (then a
recovery run), DROP / TRUNCATE of the target through the warehouse, rows added to and removed from
the source, the prompt edited (and back), the mode changed, the agent failing some rows for a
while (transient) or for good (permanent), two runs at once, runs with `--limit N`, `estimate`
with a small sample, a --full-refresh killed midway (then continued by --full-refresh, or given up
by a plain run). After each run the target, read through the warehouse, is compared with a plain
model: the rows (key, fingerprint, outcome) it holds, and the calls paid per request: no request
is paid twice except under --full-refresh (once per refresh: a killed one is continued, on the
REST fallback from its checkpoint, on push-down from the target's answers since it began) or
when it was in flight at a kill.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule

from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig
from tests.support.databricks_env import isolate
from tests.support.warehouse.operations import States

from .conftest import record_figures
from .history import HistoryModel, Row, history_settings
from .warehouse_history import OUTPUT, TOKEN, WRITES, WarehouseProject, serve, statement_to_hold

# Key 6's text is NULL: a row error, never sent. FLAKY rows fail with a 503 while the agent is
# flaky (`[transient]`, sent again by the next run), PERMANENT_ERROR rows always with a 400.
TEXTS: dict[int, str | None] = {
    **{i: f"text {i}" for i in range(5)},
    5: "PERMANENT_ERROR text 5",
    6: None,
    7: "FLAKY text 7",
    8: "text 8",
    9: "text 9",
}
START = frozenset(range(8))  # keys 8 and 9 join the source later
PROMPTS = ("Review", "Judge")
STEADY = FaultConfig(permanent={"PERMANENT_ERROR": 400})
FLAKY = FaultConfig(permanent={"PERMANENT_ERROR": 400, "FLAKY": 503})

TOTALS: Counter[str] = Counter()


class WarehouseHistories(HistoryModel):
    texts = TEXTS
    totals = TOTALS
    project: WarehouseProject
    child_deadline_s = 120.0

    @initialize(path=st.sampled_from(["rest", "push-down"]))
    def start(self, path: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="wh-histories-"))
        self.stack = contextlib.ExitStack()
        self.agent.configure(STEADY)
        self.flaky = False
        wh = self.stack.enter_context(serve(self.agent))
        self.project = WarehouseProject(self.root, self.agent, wh)
        self.project.settings.path = path
        self.reset_model(set(START))
        self.project.write_source({k: TEXTS[k] for k in self.present})
        self.fingerprints: dict[tuple[str, str], str] = {}

    def teardown(self) -> None:
        self.stack.close()
        self.agent.configure(STEADY)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the target: a table in the warehouse; the REST fallback's checkpoint -------------------

    @property
    def rest(self) -> bool:
        return self.project.settings.path == "rest"

    @property
    def checkpointed(self) -> bool:
        return self.rest  # push-down keeps no checkpoint: its answers are the target's rows

    def call_fingerprint(self) -> str:
        s = self.project.settings
        if (s.path, s.prompt) not in self.fingerprints:
            self.fingerprints[s.path, s.prompt] = self.project.call_fingerprint()
        return self.fingerprints[s.path, s.prompt]

    def made(self, key: int, calls: Counter[str]) -> int:
        made = super().made(key, calls)
        if not self.rest and self.kind_of(key) == "transient":
            return min(made, 1)  # ai_query retries a 503 itself: one row, many attempts
        return made

    def send_estimate(self, sample: int, full_refresh: bool) -> Any:
        found = self.project.estimate(sample=sample, full_refresh=full_refresh, seed=sample)
        assert self.project.wh.wait_until_idle(timeout_s=60)
        return found

    # -- rules -----------------------------------------------------------------------------------

    limited_run = rule(
        limit=st.integers(min_value=1, max_value=3),
        full_refresh=st.booleans(),
        retry_errors=st.booleans(),
    )(HistoryModel.limited_run)

    @precondition(lambda self: not self.merge_refused())
    @rule(
        after=st.integers(min_value=1, max_value=4),
        delay=st.floats(0.0, 0.1),
        wait=st.booleans(),
    )
    def kill_mid_run_then_recover(self, after: int, delay: float, wait: bool) -> None:
        """SIGKILL a CLI run, then run again: at once (`wait` False: a statement the killed run
        left running goes on in the warehouse beside the recovery, as on Databricks), or once
        the warehouse is idle."""
        TOTALS["kills"] += 1
        self.clock += 1
        before = self.observed()
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        self.agent.configure(FaultConfig(**{**vars(self.faults()), "latency_ms": 40}))
        try:
            running = self.kill_child(min(after, max(len(must) - 1, 0)), delay)
            if wait:
                assert self.project.wh.wait_until_idle(timeout_s=60)
        finally:
            self.agent.configure(self.faults())
        killed = self.calls_since()
        TOTALS["kills_mid_run"] += running and sum(killed.values()) > 0
        for key in self.sent():
            assert self.made(key, killed) <= (key in must | may), f"key {key} paid twice"
        landed = self.observed()
        assert landed in (before, sorted(rows, key=repr)), "the table is neither before nor after"
        if wait and (landed != before or not running):
            # The killed run's write landed: that was a whole run.
            self.apply(rows, {k for k in self.present if self.made(k, killed)})
            return
        in_flight = {k for k in self.sent() if self.made(k, killed)}
        if not wait and not self.rest:
            in_flight |= must | may  # the orphaned ai_query statement may still pay them all
        self.maybe_held(in_flight)
        if landed != before:
            self.target = sorted(rows, key=repr)
        self.clock += 1
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        self.project.run()
        assert self.project.wh.wait_until_idle(timeout_s=60)
        recovery = self.calls_since()
        # A key in flight at the kill may be paid by both runs; any other at most once in all.
        for key in in_flight:
            assert self.made(key, killed + recovery) <= 2, f"key {key}"
        paid = self.check_calls(must - in_flight, may | (must & in_flight), recovery)
        self.apply(rows, paid)

    @precondition(lambda self: not self.merge_refused() and self.refresh is None)
    @rule(
        after=st.integers(min_value=1, max_value=4),
        delay=st.floats(0.0, 0.1),
        mode=st.sampled_from(["merge", "append", "overwrite"]),
    )
    def kill_then_recover_in_another_mode(self, after: int, delay: float, mode: str) -> None:
        """SIGKILL a CLI run (calling, or writing its answers), let the warehouse finish what
        the killed run left running, then change the mode and run again: the killed run's write
        landed whole or not at all, and the recovery writes over whichever table it left in
        its own mode, paying nothing the checkpoint received (push-down keeps none: a killed
        statement that did not write leaves its calls to be paid again)."""
        TOTALS["kills"] += 1
        self.clock += 1
        before = self.observed()
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        self.agent.configure(FaultConfig(**{**vars(self.faults()), "latency_ms": 40}))
        try:
            running = self.kill_child(min(after, max(len(must) - 1, 0)), delay)
            assert self.project.wh.wait_until_idle(timeout_s=60)
        finally:
            self.agent.configure(self.faults())
        killed = self.calls_since()
        TOTALS["kills_mid_run"] += running and sum(killed.values()) > 0
        for key in self.sent():
            assert self.made(key, killed) <= (key in must | may), f"key {key} paid twice"
        landed = self.observed()
        assert landed in (before, sorted(rows, key=repr)), "the table is neither before nor after"
        paid = {k for k in self.sent() if self.made(k, killed)}
        if landed != before or not running:
            # The killed run's write landed (on push-down the warehouse finished its statement),
            # or it finished first: that was a whole run.
            self.apply(rows, paid)
        else:
            self.maybe_held(paid)  # the checkpoint may hold what it was paid for
        self.change_mode(mode)
        self.run(False, False)

    # A modest weight (a CLI child and two or three runs): drawn only every third tick.
    @precondition(lambda self: not self.merge_refused() and self.clock % 3 == 0)
    @rule(
        after=st.integers(min_value=1, max_value=4),
        delay=st.floats(0.0, 0.1),
        continued=st.booleans(),
    )
    def kill_full_refresh_then_continue(self, after: int, delay: float, continued: bool) -> None:
        """SIGKILL a `--full-refresh` CLI run midway (then the warehouse idles); then
        `--full-refresh` again (`continued`: on the REST fallback it reuses what the refresh
        received and pays only the rest; on push-down the warehouse finished the killed run's
        statement, and the target's answers since the refresh began are not paid again), or a
        plain run, which gives the refresh up: the next `--full-refresh` pays every row again."""
        TOTALS["kills"] += 1
        self.clock += 1
        since = self.clock if self.refresh is None else self.refresh
        began = self.refresh_began or datetime.now(timezone.utc)
        before = self.observed()
        rows, must, may = self.predict(full_refresh=True, retry_errors=False)
        self.agent.configure(FaultConfig(**{**vars(self.faults()), "latency_ms": 40}))
        try:
            running = self.kill_child(min(after, max(len(must) - 1, 0)), delay, "--full-refresh")
            assert self.project.wh.wait_until_idle(timeout_s=60)
        finally:
            self.agent.configure(self.faults())
        killed = self.calls_since()
        sent = self.sent()
        for key in sent:
            assert self.made(key, killed) <= (key in must | may), f"key {key} paid twice"
        landed = self.observed()
        assert landed in (before, sorted(rows, key=repr)), "the table is neither before nor after"
        called = {k for k in sent if self.made(k, killed)}
        if not running:  # the child finished first: that was a whole refresh
            self.apply(rows, called)
            return
        TOTALS["refreshes_killed"] += bool(called)
        self.target = landed
        # Unfinished on both paths: push-down continues it from the target (the warehouse
        # finished the killed run's statement: its rows answer the refresh's requests).
        self.refresh, self.refresh_began = since, began
        if self.rest:
            self.take_refresh_checkpoint(since, called)
        self.after_killed_refresh(continued)

    # A CLI child and a recovery with a held statement: drawn only every third tick.
    @precondition(
        lambda self: not self.merge_refused() and self.refresh is None and self.clock % 3 == 1
    )
    @rule(
        moment=st.sampled_from(["after", "between", "overtaken"]),
        change=st.sampled_from(["none", "path", "merge", "append", "overwrite", "flaky"]),
        full_refresh=st.booleans(),
    )
    def kill_then_land_later(self, moment: str, change: str, full_refresh: bool) -> None:
        """SIGKILL a CLI run while the warehouse holds its write (its calls all made), change the
        path, the mode or the agent's health, then run again (`full_refresh` or not) and let
        the killed run's write land at `moment`: once the recovery finished (`after`: Delta
        fails it, the recovery having committed since it began), after the recovery chose its
        rows (`between`: it commits first), or while the recovery's write waits (`overtaken`:
        it commits first, the recovery's write fails a write conflict and runs again). The
        model: the runs one after the other, in the order they committed."""
        wh = self.project.wh
        s = self.project.settings
        self.clock += 1
        _, must, may = self.predict(full_refresh=False, retry_errors=False)
        if not self.answering:
            return  # nothing to write: no write to hold
        TOTALS["orphans"] += 1
        killed_path, killed_mode, killed_answers = s.path, s.mode, dict(self.answering)
        held = wh.hold(WRITES[killed_path, killed_mode])
        child = self.project.start_cli()
        try:
            wh.wait_until_running(WRITES[killed_path, killed_mode], timeout_s=120)
            child.kill()
            orphan = wh.service.operations(WRITES[killed_path, killed_mode])[-1]
        finally:
            child.kill()
            child.wait()
        self.settle()
        killed = self.calls_since()
        for key in self.sent():
            assert self.made(key, killed) <= (key in must | may), f"key {key} paid twice"
        # The REST fallback's answers are in its checkpoint (its calls were all made).
        self.record({k for k in self.sent() if self.made(k, killed)})

        if change == "path":
            self.switch_path()
        elif change == "flaky":
            self.toggle_flaky()
        elif change != "none":
            self.change_mode(change)
        recovery_path, recovery_mode = s.path, s.mode

        def orphan_rows(rows: list[Row]) -> list[Row]:
            """What the killed run's write makes of `rows` when it runs (push-down: its
            statement chooses and calls then)."""
            s.path, s.mode = killed_path, killed_mode
            try:
                if killed_path == "push-down":
                    saved = self.target
                    self.target = rows
                    after, _, _ = self.predict(full_refresh=False, retry_errors=False)
                    self.target = saved
                    return after
                return self.written(rows, killed_answers, self.stamps(), killed_mode)
            finally:
                s.path, s.mode = recovery_path, recovery_mode

        self.clock += 1
        settings = {**self.project.target_settings, "conflict_backoff_s": 0.05}
        errors: list[BaseException] = []
        summaries: list[dict[str, Any]] = []

        def recover() -> None:
            try:
                summaries.append(self.project.run(settings=settings, full_refresh=full_refresh))
            except Exception as err:
                errors.append(err)

        before = self.target
        if moment == "after":
            rows, rmust, rmay = self.predict(full_refresh=full_refresh, retry_errors=False)
            model = self.predicted()
            recover()
            landed = orphan_rows(self.observed())  # should it commit after all
            held.set()
            assert orphan.wait(60), orphan.sql
            assert wh.wait_until_idle(timeout_s=60)
            written_over = left = before
            if orphan.state != States.FINISHED_STATE:
                # A write conflict (the loopback first runs it over the newest table, rolled
                # back, where a merge may fail sooner on the recovery's append).
                error = str(orphan.error)
                assert "DELTA_CONCURRENT" in error or "more than one row" in error, error
            else:  # the recovery committed nothing: the orphan lands after it
                rows = left = landed
        else:
            paused = statement_to_hold(recovery_path, recovery_mode, moment)
            gate = wh.hold(paused)
            runner = threading.Thread(target=recover)
            runner.start()
            try:
                deadline = time.monotonic() + 60
                reached = False
                while runner.is_alive() and not reached:
                    reached = any(
                        paused in op.sql and op is not orphan for op in wh.service.running()
                    )
                    assert time.monotonic() < deadline, f"never sent: {paused}"
                    time.sleep(0.01)
                if recovery_path == "push-down" and moment == "overtaken":
                    _, first_must, first_may = self.predict(
                        full_refresh=full_refresh, retry_errors=False
                    )
                held.set()
                assert orphan.wait(60), orphan.sql
                assert orphan.state == States.FINISHED_STATE, orphan.error
                written_over = orphan_rows(before)
                assert self.observed() == sorted(written_over, key=repr), "the orphan's write"
                # The REST fallback chose its rows before the orphan landed; push-down, in its
                # write, after.
                self.target = written_over if recovery_path == "push-down" else before
                rows, rmust, rmay = self.predict(full_refresh=full_refresh, retry_errors=False)
                model = self.predicted()
                left = written_over
                if recovery_path == "push-down" and moment == "overtaken":
                    rmay |= first_must | first_may  # its first attempt's calls
                stamps = self.stamps()
            finally:
                held.set()
                gate.set()
                runner.join(timeout=120)
            assert wh.wait_until_idle(timeout_s=60)
            if recovery_path == "rest":
                # Chosen before the orphan landed, written over what it left; a refresh's
                # transient failure keeps a good answer to its request the write finds.
                current = self.current()
                recovery_answers, kept = model[0], model[1]
                by_write = {
                    k
                    for k, r in recovery_answers.items()
                    if full_refresh
                    and r.kind == "transient"
                    and Row(k, current[k], "ok") in written_over
                }
                answers = {k: r for k, r in recovery_answers.items() if k not in kept | by_write}
                rows = self.written(written_over, answers, stamps, recovery_mode)
                # Counted after the write: the refresh stays unfinished for those too.
                model = (recovery_answers, kept | by_write, *model[2:])
        recovery = self.calls_since()
        for key in self.sent():
            if killed_path == "push-down" and self.kind_of(key) == "transient":
                continue  # the orphan's ai_query retried a 503 itself
            bound = (key in rmust | rmay) + (killed_path == "push-down")
            assert self.made(key, recovery) <= bound, f"key {key} paid {self.made(key, recovery)}"
        paid = {k for k in self.sent() if self.made(k, recovery)}
        self.answering, self.kept, self.renewed, self.reaches_all, self.starting = model
        self.refreshing = full_refresh
        if errors:
            # Only a merge over a key held in two rows (the orphan's append) refuses.
            several = [
                any(n > 1 for n in Counter(r.key for r in t).values())
                for t in (before, written_over)
            ]
            assert recovery_mode == "merge" and any(several), errors
            assert "mode overwrite" in str(errors[0]), errors
            self.maybe_held(paid)
            self.target = left
            assert self.observed() == sorted(left, key=repr)
            return
        TOTALS["orphans_landed"] += moment != "after"
        (summary,) = summaries
        assert summary.get("kept_previous_answer", 0) == len(self.kept), (summary, self.kept)
        found = self.observed()
        assert found == sorted(rows, key=repr), f"target {found} != model {sorted(rows, key=repr)}"
        self.apply(rows, paid)

    def predicted(self) -> tuple[dict[int, Row], set[int], set[int], bool, datetime]:
        """What `predict` left of the run it predicted (another prediction overwrites it)."""
        return (
            dict(self.answering),
            set(self.kept),
            set(self.renewed),
            self.reaches_all,
            self.starting,
        )

    def kill_child(self, after: int, delay: float, *flags: str) -> bool:
        running = super().kill_child(after, delay, *flags)
        self.settle()
        return running

    def settle(self) -> None:
        """Wait until the agent has answered what the killed child sent (a request still in a
        socket's buffer is counted when the server reads it), so it is counted as the kill's."""
        last = -1
        while True:
            stats = self.agent.stats()
            if stats.in_flight == 0 and stats.requests_total == last:
                return
            last = stats.requests_total
            time.sleep(0.1)

    # Not while the agent is flaky: one run may write a row from its checkpoint while the other's
    # call of it fails, and which lands last is a race.
    @precondition(lambda self: not self.merge_refused() and not self.flaky)
    @rule()
    def two_runs_at_once(self) -> None:
        """Two runs of the job together, each with its own checkpoint (an overlapping schedule on
        two machines; one folder is locked by its run): the table ends as one run would leave
        it; a key may be paid by both (neither saw the other's answer)."""
        TOTALS["concurrent"] += 1
        self.clock += 1
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        errors: list[BaseException] = []
        elsewhere = self.root / f"elsewhere-{TOTALS['concurrent']}"

        def run(state: Path) -> None:
            try:
                self.project.run(state_dir=state)
            except BaseException as err:
                errors.append(err)

        threads = [
            threading.Thread(target=run, args=(state,)) for state in (self.project.state, elsewhere)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        calls = self.calls_since()
        for key in self.sent():
            # This folder's run pays what the model says; the other (an empty checkpoint) may
            # pay every row not done.
            bound = (key in must | may) + (key in self.answering)
            assert self.made(key, calls) <= bound, f"key {key}"
        self.maybe_held(set(self.answering))  # answered by this folder's run, or only the other's
        self.answering = {}
        self.apply(rows, set())

    @rule()
    def drop_target(self) -> None:
        self.project.sql(f"DROP TABLE IF EXISTS {OUTPUT}")
        self.target = []

    @rule()
    def truncate_target(self) -> None:
        if self.project.target() or self.target:
            self.project.sql(f"TRUNCATE TABLE {OUTPUT}")
        self.target = []

    @rule(key=st.sampled_from(sorted(TEXTS)), add=st.booleans())
    def change_source(self, key: int, add: bool) -> None:
        if add:
            self.present.add(key)
        elif len(self.present) > 1:
            self.present.discard(key)
        self.project.write_source({k: TEXTS[k] for k in self.present})

    edit_prompt = rule(prompt=st.sampled_from(PROMPTS))(HistoryModel.edit_prompt)

    @rule()
    def switch_path(self) -> None:
        s = self.project.settings
        s.path = "push-down" if s.path == "rest" else "rest"

    @rule()
    def toggle_flaky(self) -> None:
        self.flaky = not self.flaky
        self.agent.configure(self.faults())

    def faults(self) -> FaultConfig:
        return FLAKY if self.flaky else STEADY


@pytest.fixture
def databricks_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, token=TOKEN)


@pytest.mark.slow
def test_warehouse_histories_match_the_model(agent: AgentServer, databricks_auth: Any) -> None:
    WarehouseHistories.agent = agent
    runner = WarehouseHistories.TestCase
    runner.settings = history_settings("AGENTBATCH_WH_HISTORY", examples=6, steps=15)
    runner().runTest()
    record_figures("run histories (databricks-sql)", dict(TOTALS))


@pytest.mark.slow
@pytest.mark.parametrize("path", ["rest", "push-down"])
def test_a_history_with_kills_matches_the_model(
    agent: AgentServer, databricks_auth: Any, path: str
) -> None:
    """The same model over one fixed history, so every run of the suite kills a run mid-way on
    both paths whatever the random histories drew: run, edit, kill at once (the killed run's
    statement still at work beside the recovery), drop, kill then wait, truncate, two at once."""
    WarehouseHistories.agent = agent
    machine = WarehouseHistories()
    kills_before = TOTALS["kills_mid_run"]
    try:
        machine.start(path=path)
        machine.plain_run()
        machine.edit_prompt(PROMPTS[1])
        machine.kill_mid_run_then_recover(after=2, delay=0.0, wait=False)
        machine.drop_target()
        machine.kill_mid_run_then_recover(after=1, delay=0.05, wait=True)
        machine.truncate_target()
        machine.two_runs_at_once()
        machine.run(full_refresh=False, retry_errors=True)
    finally:
        machine.teardown()
    assert TOTALS["kills_mid_run"] > kills_before, dict(TOTALS)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["rest", "push-down"])
def test_a_history_with_limits_estimates_and_a_killed_refresh(
    agent: AgentServer, databricks_auth: Any, path: str
) -> None:
    """The model over one fixed history on both paths, so every run of the suite covers what
    the random ones may not draw: a trial run of 2 rows then the rest; an estimate, then the
    run it estimated; a limited run after a prompt edit; a limited overwrite; limited refreshes
    in turns; --limit with --retry-errors while the agent is flaky; an estimate --full-refresh;
    a --full-refresh killed midway, continued by --full-refresh; one killed again, given up by a
    plain run, then refreshed again whole."""
    WarehouseHistories.agent = agent
    machine = WarehouseHistories()
    kills_before = TOTALS["refreshes_killed"]
    try:
        machine.start(path=path)
        machine.limited_run(limit=2, full_refresh=False, retry_errors=False)
        machine.estimate(sample=2, full_refresh=False)
        machine.plain_run()
        machine.edit_prompt(PROMPTS[1])
        machine.limited_run(limit=3, full_refresh=False, retry_errors=False)
        machine.change_mode("overwrite")
        machine.limited_run(limit=2, full_refresh=False, retry_errors=False)
        machine.plain_run()
        machine.limited_run(limit=3, full_refresh=True, retry_errors=False)
        machine.limited_run(limit=3, full_refresh=True, retry_errors=False)
        machine.toggle_flaky()
        machine.limited_run(limit=2, full_refresh=False, retry_errors=True)
        machine.toggle_flaky()
        machine.change_mode("merge")
        machine.estimate(sample=2, full_refresh=True)
        machine.kill_full_refresh_then_continue(after=2, delay=0.0, continued=True)
        machine.kill_full_refresh_then_continue(after=1, delay=0.02, continued=False)
        machine.estimate(sample=1, full_refresh=False)
    finally:
        machine.teardown()
    assert TOTALS["refreshes_killed"] > kills_before, dict(TOTALS)


@pytest.mark.slow
def test_a_history_where_a_refresh_keeps_answers(agent: AgentServer, databricks_auth: Any) -> None:
    """The model over one fixed history: a REST `--full-refresh` while the agent fails key 7
    transiently keeps its earlier answer and stays unfinished; a limited plain run continues it
    (failing again); a push-down plain run continues it too, and writes ai_query's failure (its
    request has another fingerprint: the target holds no answer to it to keep); later a REST
    refresh keeps the answer again, and a plain run once the agent is healthy asks key 7 only
    and finishes it. Then the same on push-down, in each mode: a `--full-refresh` keeps key 7's
    answer to its own request, a limited plain run continues it, `--full-refresh` in modes
    overwrite and append continue it and keep it again, and a healthy plain run finishes it."""
    WarehouseHistories.agent = agent
    machine = WarehouseHistories()
    try:
        machine.start(path="rest")
        machine.plain_run()
        machine.toggle_flaky()
        machine.run(full_refresh=True, retry_errors=False)
        assert machine.kept == {7} and machine.refresh_reached
        machine.limited_run(limit=1, full_refresh=False, retry_errors=False)
        assert machine.kept == {7} and machine.refresh_reached
        machine.switch_path()
        machine.plain_run()
        assert machine.refresh is None
        machine.toggle_flaky()
        machine.plain_run()
        machine.switch_path()
        machine.plain_run()  # the REST fallback's requests (another fingerprint) answered
        machine.toggle_flaky()
        machine.run(full_refresh=True, retry_errors=False)
        assert machine.kept == {7}
        machine.toggle_flaky()
        machine.estimate(sample=1, full_refresh=False)
        machine.plain_run()
        assert machine.refresh is None
        # Push-down keeps an answer to its own request alike, in every mode.
        machine.switch_path()
        machine.plain_run()
        machine.toggle_flaky()
        machine.run(full_refresh=True, retry_errors=False)
        assert machine.kept == {7} and machine.refresh_reached
        machine.limited_run(limit=1, full_refresh=False, retry_errors=False)
        assert machine.kept == {7} and machine.refresh_reached
        machine.change_mode("overwrite")
        machine.run(full_refresh=True, retry_errors=False)
        assert machine.kept == {7} and machine.refresh_reached
        machine.change_mode("append")
        machine.run(full_refresh=True, retry_errors=False)
        assert machine.kept == {7} and machine.refresh_reached
        machine.toggle_flaky()
        machine.plain_run()
        assert machine.refresh is None
    finally:
        machine.teardown()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["rest", "push-down"])
def test_a_history_with_kills_before_mode_changes(
    agent: AgentServer, databricks_auth: Any, path: str
) -> None:
    """The model over one fixed history on both paths: a run killed then recovered in append,
    overwrite and merge mode, with source rows removed and added back and the prompt edited
    around them, so every run of the suite crosses a kill with a mode change."""
    WarehouseHistories.agent = agent
    machine = WarehouseHistories()
    kills_before = TOTALS["kills_mid_run"]
    try:
        machine.start(path=path)
        machine.plain_run()
        machine.change_source(3, add=False)
        machine.edit_prompt(PROMPTS[1])
        machine.kill_then_recover_in_another_mode(after=2, delay=0.0, mode="append")
        machine.change_source(3, add=True)
        machine.edit_prompt(PROMPTS[0])
        machine.kill_then_recover_in_another_mode(after=1, delay=0.05, mode="overwrite")
        machine.change_source(8, add=True)
        machine.kill_then_recover_in_another_mode(after=1, delay=0.0, mode="merge")
        machine.edit_prompt(PROMPTS[1])
        machine.kill_then_recover_in_another_mode(after=3, delay=0.1, mode="append")
        machine.change_mode("overwrite")
        machine.plain_run()
    finally:
        machine.teardown()
    assert TOTALS["kills_mid_run"] > kills_before, dict(TOTALS)


@pytest.mark.slow
def test_a_history_where_killed_runs_writes_land_later(
    agent: AgentServer, databricks_auth: Any
) -> None:
    """The model over one fixed history, so every run of the suite lets a killed run's held
    write land beside the next run whatever the random histories drew: across a path change
    both ways, a mode change, a `--full-refresh` while the agent turns flaky (the REST fallback's
    refresh must keep the good answer the orphan landed with, and count it), at each moment, a
    push-down recovery overtaken too."""
    WarehouseHistories.agent = agent
    machine = WarehouseHistories()
    landed = TOTALS["orphans_landed"]
    try:
        machine.start(path="rest")
        machine.plain_run()
        machine.edit_prompt(PROMPTS[1])
        machine.kill_then_land_later(moment="between", change="path", full_refresh=False)
        machine.edit_prompt(PROMPTS[0])
        machine.kill_then_land_later(moment="overtaken", change="path", full_refresh=False)
        machine.edit_prompt(PROMPTS[1])
        machine.kill_then_land_later(moment="between", change="flaky", full_refresh=True)
        machine.toggle_flaky()
        machine.edit_prompt(PROMPTS[0])
        machine.kill_then_land_later(moment="after", change="append", full_refresh=False)
        machine.edit_prompt(PROMPTS[1])
        machine.kill_then_land_later(moment="overtaken", change="merge", full_refresh=True)
        machine.edit_prompt(PROMPTS[0])
        machine.kill_then_land_later(moment="overtaken", change="path", full_refresh=False)
        machine.plain_run()
    finally:
        machine.teardown()
    assert TOTALS["orphans_landed"] > landed, dict(TOTALS)
