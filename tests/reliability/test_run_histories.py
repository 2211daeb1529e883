"""Histories of runs against a reference model (hypothesis stateful testing).

Random sequences of: run / --full-refresh / --retry-errors, each also with `--limit N`, SIGKILL
mid-run (then a recovery run), SIGKILL of a --full-refresh (then continued by --full-refresh, or
given up by a plain run), `estimate` with a small sample, drop / truncate / re-map the output,
edit the prompt (back to an old one too), change mode, toggle `stream`, delete the state folder,
corrupt the checkpoint. After each run a plain model predicts the target's rows (key,
fingerprint, outcome) and the calls paid per request; the invariants: after a whole run that
exits 0 or 1 every source key has exactly one row with the current fingerprint (a limited run:
the keys it answered; the others as they were), and no request is paid twice except under
--full-refresh (once per refresh: one that was killed is continued, not paid again) or when it
was in flight at a kill. An estimate pays for its sample only, and keeps it.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import agentbatch
from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig

from .conftest import record_figures
from .history import ENDPOINT, Held, HistoryModel, Project, history_settings

# Key 11's text is NULL (an empty CSV field): a row error, never sent, done like any other row.
TEXTS: dict[int, str | None] = {
    **{i: f"text {i}" for i in range(10)},
    10: "PERMANENT_ERROR text 10",
    11: None,
}
SENT = [key for key, text in TEXTS.items() if text is not None]
PROMPTS = ("Review", "Judge", "Rate")

# Counted across the whole session, reported by the summary test at the end.
TOTALS: Counter[str] = Counter()


class RunHistories(HistoryModel):
    texts = TEXTS
    totals = TOTALS
    project: Project

    @initialize()
    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="histories-"))
        self.project = Project(self.root, self.agent)
        self.project.settings.max_retries = 0
        self.project.write_source(TEXTS)
        plan = agentbatch.plan(
            self.project.write_job(),
            "local",
            project_dir=self.root,
            endpoints={ENDPOINT: self.agent.url},
        )
        self.fixed_fingerprint = plan.call_fingerprint
        self.reset_model(set(TEXTS))

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the target: a local file per output name, a checkpoint always -------------------------

    def call_fingerprint(self) -> str:
        return self.fixed_fingerprint

    @property
    def output_file(self) -> int:
        return self.project.output_file

    def trusts(self, key: int, held: Held) -> bool:
        # The agent answers each key one way only: a held answer of another kind is not one.
        return held.kind == self.kind_of(key)

    def send_estimate(self, sample: int, full_refresh: bool) -> Any:
        seed = random.Random(sample).random()
        return self.project.estimate(sample=sample, full_refresh=full_refresh, seed=seed)

    # -- rules -----------------------------------------------------------------------------------

    limited_run = rule(
        limit=st.integers(min_value=1, max_value=4),
        full_refresh=st.booleans(),
        retry_errors=st.booleans(),
    )(HistoryModel.limited_run)

    @precondition(lambda self: not self.merge_refused())
    @rule(after=st.integers(min_value=1, max_value=len(TEXTS)), delay=st.floats(0.0, 0.08))
    def kill_mid_run_then_recover(self, after: int, delay: float) -> None:
        self.clock += 1
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        TOTALS["kills"] += 1
        self.agent.configure(FaultConfig(latency_ms=60, jitter_ms=50, seed=after))
        try:
            landed = self.kill_child(min(after, max(len(must) - 1, 0)), delay)
        finally:
            self.agent.configure(FaultConfig())
        if not landed:  # the child finished first: that was a whole run
            self.apply(rows, self.check_calls(must, may, self.calls_since()))
            return
        killed_calls = self.calls_since()
        TOTALS["kills_mid_run"] += sum(killed_calls.values()) > 0
        in_flight = {k for k in SENT if self.made(k, killed_calls)}
        self.maybe_held(in_flight)
        for key in SENT:
            assert self.made(key, killed_calls) <= (key in must | may)
        # Recovery: a plain run finishes the job; what the killed run wrote (all or nothing)
        # leads to the same target.
        self.clock += 1
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        self.project.run()
        paid = self.check_calls(must - in_flight, may | (must & in_flight), self.calls_since())
        self.apply(rows, paid)

    # A modest weight (a CLI child and two or three runs): drawn only every fourth tick.
    @precondition(lambda self: not self.merge_refused() and self.clock % 4 == 0)
    @rule(
        after=st.integers(min_value=1, max_value=len(SENT)),
        delay=st.floats(0.0, 0.08),
        continued=st.booleans(),
    )
    def kill_full_refresh_then_continue(self, after: int, delay: float, continued: bool) -> None:
        """SIGKILL a `--full-refresh` CLI run midway; then `--full-refresh` again (`continued`: it
        reuses what the refresh received and pays only the rest), or a plain run (which gives
        the refresh up: the next `--full-refresh` pays for every row again)."""
        TOTALS["kills"] += 1
        self.clock += 1
        rows, must, may = self.predict(full_refresh=True, retry_errors=False)
        since = self.clock if self.refresh is None else self.refresh
        began = self.refresh_began or datetime.now(timezone.utc)
        before = self.observed()
        self.agent.configure(FaultConfig(latency_ms=60, jitter_ms=50, seed=after))
        try:
            landed = self.kill_child(min(after, max(len(must) - 1, 0)), delay, "--full-refresh")
        finally:
            self.agent.configure(FaultConfig())
        killed = self.calls_since()
        if not landed:  # the child finished first: that was a whole refresh
            self.apply(rows, self.check_calls(must, may, killed))
            return
        TOTALS["refreshes_killed"] += sum(killed.values()) > 0
        self.refresh, self.refresh_began = since, began
        called = {k for k in SENT if self.made(k, killed)}
        for key in SENT:
            assert self.made(key, killed) <= (key in must | may)
        self.take_refresh_checkpoint(since, called)
        landed_rows = self.observed()
        assert landed_rows in (before, sorted(rows, key=repr)), "neither before nor after"
        self.target = landed_rows
        self.after_killed_refresh(continued)

    @precondition(lambda self: not self.merge_refused() and self.refresh is None)
    @rule(
        after=st.integers(min_value=1, max_value=len(TEXTS)),
        delay=st.floats(0.0, 0.08),
        mode=st.sampled_from(["merge", "append", "overwrite"]),
    )
    def kill_then_recover_in_another_mode(self, after: int, delay: float, mode: str) -> None:
        """SIGKILL a run (calling, or writing its answers), then change the mode and run again:
        the killed run's write landed whole or not at all, and the recovery writes over
        whichever table it left in its own mode, paying nothing the checkpoint received."""
        TOTALS["kills"] += 1
        self.clock += 1
        before = self.observed()
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        self.agent.configure(FaultConfig(latency_ms=60, jitter_ms=50, seed=after))
        try:
            landed = self.kill_child(min(after, max(len(must) - 1, 0)), delay)
        finally:
            self.agent.configure(FaultConfig())
        killed = self.calls_since()
        for key in SENT:
            assert self.made(key, killed) <= (key in must | may)
        if not landed:  # the child finished first: that was a whole run
            self.apply(rows, self.check_calls(must, may, killed))
        else:
            TOTALS["kills_mid_run"] += sum(killed.values()) > 0
            left = self.observed()
            assert left in (before, sorted(rows, key=repr)), "neither before nor after"
            # The killed run's answers may be in the checkpoint (all of them, if it wrote).
            self.maybe_held({k for k in SENT if self.made(k, killed)})
            self.target = left
        self.change_mode(mode)
        self.run(False, False)

    @rule(key=st.sampled_from(sorted(TEXTS)), add=st.booleans())
    def change_source(self, key: int, add: bool) -> None:
        """A source row deleted (its answers stay in merge and append, overwrite drops them), or
        added back (its checkpointed answer is reused)."""
        if add:
            self.present.add(key)
        elif len(self.present) > 1:
            self.present.discard(key)
        self.project.write_source({k: TEXTS[k] for k in sorted(self.present)})

    @rule()
    def drop_target(self) -> None:
        self.project.output.unlink(missing_ok=True)
        self.target = []

    @precondition(lambda self: self.project.output.exists())
    @rule()
    def truncate_target(self) -> None:
        self.project.truncate_target()
        self.target = []

    @rule()
    def remap_output(self) -> None:
        self.project.output_file += 1

    edit_prompt = rule(prompt=st.sampled_from(PROMPTS))(HistoryModel.edit_prompt)

    @rule(key=st.sampled_from(("review_id", "Review_ID", "REVIEW_ID")))
    def respell_key(self, key: str) -> None:
        """The job's key renamed in case only: the same column to every engine, so the table and
        the checkpoint the earlier spelling wrote serve it as they are (the model is unchanged)."""
        self.project.settings.key = key

    @rule()
    def toggle_stream(self) -> None:
        self.project.settings.stream = not self.project.settings.stream

    @rule()
    def delete_state(self) -> None:
        shutil.rmtree(self.project.state, ignore_errors=True)
        self.ledger.clear()
        self.refresh = self.refresh_began = None

    @precondition(lambda self: self.project.state.exists())
    @rule()
    def corrupt_checkpoint(self) -> None:
        for ledger in self.project.state.glob("*.sqlite"):
            ledger.write_bytes(b"\x00garbage" * 512)
        self.ledger.clear()
        self.refresh = self.refresh_began = None

    @invariant()
    def no_state_left_locked(self) -> None:
        for lock in self.project.state.glob("*.lock") if self.project.state.exists() else []:
            with open(lock, "ab") as handle:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@pytest.mark.slow
def test_run_histories_match_the_model(agent: AgentServer) -> None:
    RunHistories.agent = agent
    runner = RunHistories.TestCase
    runner.settings = history_settings("AGENTBATCH_HISTORY", examples=20, steps=25)
    runner().runTest()
    # Kills must have landed mid-run at least once, or the kill rule proved nothing.
    assert TOTALS["kills_mid_run"] >= 1, dict(TOTALS)
    record_figures("run histories (local)", dict(TOTALS))


@pytest.mark.slow
def test_a_history_with_limits_estimates_and_a_killed_refresh(agent: AgentServer) -> None:
    """The model over one fixed history, so every run of the suite covers what the random ones
    may not draw: a trial run of 3 rows then the rest; an estimate, then the run it estimated;
    a limited run after a prompt edit; a limited overwrite over an append history; limited
    refreshes in turns; --limit with --retry-errors; a run killed midway after a prompt edit,
    then finished by a plain run; a --full-refresh killed midway, continued
    by --full-refresh; one killed again, given up by a plain run, then refreshed again whole."""
    RunHistories.agent = agent
    machine = RunHistories()
    kills_before = TOTALS["refreshes_killed"], TOTALS["kills_mid_run"]
    try:
        machine.start()
        machine.limited_run(limit=3, full_refresh=False, retry_errors=False)
        machine.estimate(sample=2, full_refresh=False)
        machine.plain_run()
        machine.edit_prompt(PROMPTS[1])
        machine.limited_run(limit=4, full_refresh=False, retry_errors=False)
        machine.change_mode("append")
        machine.limited_run(limit=2, full_refresh=False, retry_errors=False)
        machine.change_mode("overwrite")
        machine.limited_run(limit=3, full_refresh=False, retry_errors=False)
        machine.plain_run()
        machine.limited_run(limit=4, full_refresh=True, retry_errors=False)
        machine.limited_run(limit=4, full_refresh=True, retry_errors=False)
        machine.limited_run(limit=2, full_refresh=False, retry_errors=True)
        machine.change_mode("merge")
        machine.edit_prompt(PROMPTS[0])  # every row to answer again: a kill lands mid-run
        machine.kill_mid_run_then_recover(after=3, delay=0.0)
        machine.estimate(sample=3, full_refresh=True)
        machine.kill_full_refresh_then_continue(after=3, delay=0.0, continued=True)
        machine.kill_full_refresh_then_continue(after=2, delay=0.02, continued=False)
        machine.estimate(sample=1, full_refresh=False)
    finally:
        machine.teardown()
    # The random histories may draw few kills (2 of 20 in CI's): this one always has both kinds.
    assert TOTALS["refreshes_killed"] > kills_before[0], dict(TOTALS)
    assert TOTALS["kills_mid_run"] > kills_before[1], dict(TOTALS)


@pytest.mark.slow
def test_a_history_with_kills_before_mode_changes_and_source_edits(agent: AgentServer) -> None:
    """The model over one fixed history of the rules the random ones may not draw together: a
    run killed then recovered in append, overwrite and merge mode, source rows deleted and added
    back around them, and a killed --full-refresh given up by a plain run."""
    RunHistories.agent = agent
    machine = RunHistories()
    try:
        machine.start()
        machine.plain_run()
        machine.change_source(3, add=False)
        machine.edit_prompt(PROMPTS[1])
        machine.kill_then_recover_in_another_mode(after=3, delay=0.0, mode="append")
        machine.change_source(3, add=True)
        machine.kill_then_recover_in_another_mode(after=2, delay=0.05, mode="overwrite")
        machine.edit_prompt(PROMPTS[2])
        machine.kill_then_recover_in_another_mode(after=11, delay=0.08, mode="merge")
        machine.change_source(0, add=False)
        machine.change_mode("overwrite")
        machine.plain_run()
        machine.change_source(0, add=True)
        machine.kill_full_refresh_then_continue(after=3, delay=0.0, continued=False)
        machine.plain_run()
    finally:
        machine.teardown()
