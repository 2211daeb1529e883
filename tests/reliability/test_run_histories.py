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

import hashlib
import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import agentbatch
from agentbatch.errors import UsageError
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key

from .conftest import record_figures
from .history import ENDPOINT, Project, refresh_answers

# Key 11's text is NULL (an empty CSV field): a row error, never sent, done like any other row.
TEXTS: dict[int, str | None] = {i: f"text {i}" for i in range(10)} | {
    10: "PERMANENT_ERROR text 10",
    11: None,
}
SENT = [key for key, text in TEXTS.items() if text is not None]
PROMPTS = ("Review", "Judge", "Rate")
UNKNOWN = "unknown"  # the ledger may or may not hold the answer (in flight at a kill)

# Counted across the whole session, reported by the summary test at the end.
TOTALS: Counter[str] = Counter()


@dataclass(frozen=True)
class Row:
    key: int
    fingerprint: str
    kind: str  # "ok" or "permanent"


@dataclass(frozen=True)
class Held:
    """The checkpoint's latest answer for a key: its fingerprint, its kind ("ok", "permanent",
    or UNKNOWN: in flight at a kill, held or not) and the model's clock when it was paid (a full
    refresh reuses only answers paid since it began)."""

    fingerprint: str
    kind: str
    stamp: int = field(compare=False)


def kind_of(key: int) -> str:
    text = TEXTS[key]
    return "permanent" if text is None or "PERMANENT_ERROR" in text else "ok"


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


class RunHistories(RuleBasedStateMachine):
    agent: AgentServer

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
        self.call_fingerprint = plan.call_fingerprint
        # The model: rows of each output file and the ledger's latest answer per key; calls are
        # counted by the agent server (`calls_since`).
        self.targets: dict[int, list[Row]] = {}
        self.ledger: dict[int, Held] = {}
        # The clock ticks once per run; `refresh` is when the unfinished full refresh began.
        self.clock = 0
        self.refresh: int | None = None
        self.seen = Counter(self.agent.stats().requests_by_key)

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the model -----------------------------------------------------------------------------

    def request(self, key: int) -> str:
        return f"{self.project.settings.prompt}: {TEXTS[key]}"

    def fingerprint(self, key: int) -> str:
        if TEXTS[key] is None:
            return "null-request:" + self.call_fingerprint
        text = self.call_fingerprint + self.request(key)
        return hashlib.sha256(text.encode()).hexdigest()

    def target(self) -> list[Row]:
        return self.targets.setdefault(self.project.output_file, [])

    def stamps(self) -> dict[tuple[int, str], datetime]:
        """The target's `answered_at` of each (key, fingerprint) row: what a limited full refresh
        orders by (oldest first) and what mode overwrite keeps of a key it did not answer."""
        return {
            (r["review_id"], r["request_fingerprint"]): r["answered_at"]
            for r in self.project.target()
        }

    def predict(
        self, *, full_refresh: bool, retry_errors: bool, limit: int | None = None
    ) -> tuple[list[Row], set[int], set[int]]:
        """(rows after the run, keys that must be paid, keys that may be paid). The keys the run
        answers (paid or reused) are `self.answering`. Call after ticking the clock."""
        rows = self.target()
        current = {k: self.fingerprint(k) for k in TEXTS}
        since = (self.clock if self.refresh is None else self.refresh) if full_refresh else None
        stamps = self.stamps()

        def done(key: int) -> Row | None:
            if full_refresh:
                return None
            for row in rows:
                same = row.key == key and row.fingerprint == current[key]
                if same and (row.kind == "ok" or not retry_errors):
                    return row
            return None

        todo = [key for key in TEXTS if done(key) is None]
        if limit is not None:
            if full_refresh:
                # The N rows whose answers are oldest: those without one to this request first.
                def age(key: int) -> tuple[bool, datetime, int]:
                    at = stamps.get((key, current[key]))
                    return at is not None, at or datetime.min, key

                todo.sort(key=age)
            todo = todo[:limit]  # else the N lowest keys not done
        new = {key: Row(key, current[key], kind_of(key)) for key in todo}
        must, may = set(), set()
        self.renewed: set[int] = set()  # NULL requests answered again (a row error, not sent)
        for key in todo:
            held = self.ledger.get(key)
            fresh = held is not None and (since is None or held.stamp >= since)
            reused = (
                fresh
                and held == Held(current[key], kind_of(key), 0)
                and not (kind_of(key) == "permanent" and retry_errors)
            )
            if TEXTS[key] is None:
                if not reused:
                    self.renewed.add(key)
            elif fresh and held is not None and held.kind == UNKNOWN:
                may.add(key)
            elif not reused:
                must.add(key)
        self.answering = set(new)
        return self.written(rows, new, stamps, self.project.settings.mode), must, may

    def written(
        self,
        rows: list[Row],
        new: dict[int, Row],
        stamps: dict[tuple[int, str], datetime],
        mode: str,
    ) -> list[Row]:
        """The target after writing the answers `new` over `rows` in `mode`."""
        current = {k: self.fingerprint(k) for k in TEXTS}

        def kept(key: int) -> Row | None:
            # Mode overwrite keeps a key it did not answer as it was: the row for the current
            # request, else the one answered last.
            mine = [r for r in rows if r.key == key]
            same = [r for r in mine if r.fingerprint == current[key]]
            latest = sorted(mine, key=lambda r: stamps[r.key, r.fingerprint])
            return same[0] if same else (latest[-1] if latest else None)

        if mode == "overwrite":
            after = [new.get(k) or kept(k) for k in TEXTS]
            return [r for r in after if r is not None]
        if mode == "append":
            result = [
                r for r in rows if not (r.key in new and r.fingerprint == new[r.key].fingerprint)
            ]
            return result + list(new.values())
        return [r for r in rows if r.key not in new] + list(new.values())

    def merge_refused(self) -> bool:
        keys = Counter(r.key for r in self.target())
        return self.project.settings.mode == "merge" and any(n > 1 for n in keys.values())

    def observed(self) -> list[Row]:
        return [
            Row(
                r["review_id"],
                r["request_fingerprint"],
                "ok" if r["error"] is None else "permanent",
            )
            for r in self.project.target()
        ]

    def calls_since(self) -> Counter[str]:
        now = Counter(self.agent.stats().requests_by_key)
        delta = now - self.seen
        self.seen = now
        return delta

    def check_calls(self, must: set[int], may: set[int], calls: Counter[str]) -> set[int]:
        """Check the calls paid against the model; the keys paid."""
        paid = set()
        for key in SENT:
            made = calls.get(request_key(self.request(key)), 0)
            if made:
                paid.add(key)
            if key in must:
                assert made == 1, f"key {key}: expected one paid call, saw {made}"
            elif key in may:
                assert made <= 1, f"key {key}: paid {made} times"
            else:
                assert made == 0, f"key {key}: paid again ({made}) though its answer was kept"
            TOTALS["calls_paid"] += made
            TOTALS["calls_model_must"] += key in must
        other = sum(calls.values()) - sum(calls.get(request_key(self.request(k)), 0) for k in SENT)
        assert other == 0, "a request for another fingerprint was sent"
        return paid

    def record(self, paid: set[int]) -> None:
        """The checkpoint after a run answered `self.answering`: paid answers at this clock,
        reused ones as they were (an answer in flight at a kill was held after all)."""
        for key in self.answering:
            held = self.ledger.get(key)
            renewed = key in paid or key in self.renewed
            stamp = self.clock if renewed or held is None else held.stamp
            self.ledger[key] = Held(self.fingerprint(key), kind_of(key), stamp)

    def apply(self, rows: list[Row], paid: set[int], *, whole: bool = True) -> None:
        """The run finished: check the target against the model, then record what it answered
        (`whole`: it answered every key not done, so each has its current row; a limited run's
        others are as they were)."""
        self.targets[self.project.output_file] = rows
        self.record(paid)
        self.refresh = None  # a run that finishes leaves no refresh to continue
        assert sorted(self.observed(), key=repr) == sorted(rows, key=repr)
        current = {k: self.fingerprint(k) for k in TEXTS}
        live = [r for r in self.observed() if r.fingerprint == current[r.key]]
        if whole:
            assert sorted(r.key for r in live) == sorted(TEXTS)  # one current row per key

    # -- rules -----------------------------------------------------------------------------------

    @rule(full_refresh=st.booleans(), retry_errors=st.booleans())
    def run(self, full_refresh: bool, retry_errors: bool, limit: int | None = None) -> None:
        TOTALS["steps"] += 1
        self.clock += 1
        options: dict[str, Any] = {"full_refresh": full_refresh, "retry_errors": retry_errors}
        if limit is not None:
            options["limit"] = limit
        if self.merge_refused():
            with pytest.raises(UsageError, match="mode overwrite"):
                self.project.run(**options)
            assert sum(self.calls_since().values()) == 0
            return
        rows, must, may = self.predict(**options)
        summary = self.project.run(**options)
        paid = self.check_calls(must, may, self.calls_since())
        TOTALS["rows_reused"] += int(summary.get("reused", 0))
        if limit is not None:
            TOTALS["limited_runs"] += 1
            assert summary["rows"] == len(self.answering), summary
        self.apply(rows, paid, whole=limit is None or len(self.answering) < limit)

    # A trial run of a few rows; --limit with --full-refresh refreshes the oldest answers.
    @rule(
        limit=st.integers(min_value=1, max_value=4),
        full_refresh=st.booleans(),
        retry_errors=st.booleans(),
    )
    def limited_run(self, limit: int, full_refresh: bool, retry_errors: bool) -> None:
        self.run(full_refresh, retry_errors, limit=limit)

    # Runs are what the invariants check: two more rules make them a larger share of the steps.
    @rule()
    def plain_run(self) -> None:
        self.run(False, False)

    @rule()
    def another_plain_run(self) -> None:
        self.run(False, False)

    @precondition(lambda self: not self.merge_refused())
    @rule(after=st.integers(min_value=1, max_value=len(TEXTS)), delay=st.floats(0.0, 0.08))
    def kill_mid_run_then_recover(self, after: int, delay: float) -> None:
        self.clock += 1
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        TOTALS["steps"] += 1
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
        in_flight = {k for k in SENT if killed_calls.get(request_key(self.request(k)), 0)}
        for key in in_flight:
            self.ledger[key] = Held(self.fingerprint(key), UNKNOWN, self.clock)
        for key in SENT:
            assert killed_calls.get(request_key(self.request(key)), 0) <= (key in must | may)
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
        TOTALS["steps"] += 1
        self.clock += 1
        rows, must, may = self.predict(full_refresh=True, retry_errors=False)
        since = self.clock if self.refresh is None else self.refresh
        before = sorted(self.observed(), key=repr)
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
        self.refresh = since
        called = {k for k in SENT if killed.get(request_key(self.request(k)), 0)}
        for key in SENT:
            assert killed.get(request_key(self.request(key)), 0) <= (key in must | may)
        # What the refresh received is in its checkpoint (read from the file: those answers
        # must not be paid again); a call in flight at the kill is not, and is paid again.
        _, received = refresh_answers(self.project.state)
        kept = {k for k, held in self.ledger.items() if held.stamp >= since}  # this refresh's
        assert set(received) & set(SENT) <= called | kept, "an answer nobody paid for"
        for key in called & set(received):
            self.ledger[key] = Held(*received[key], stamp=self.clock)
        landed_rows = sorted(self.observed(), key=repr)
        assert landed_rows in (before, sorted(rows, key=repr)), "neither before nor after"
        self.targets[self.project.output_file] = landed_rows
        if continued:
            self.run(True, False)
        else:
            self.run(False, False)  # gives the refresh up
            self.run(True, False)  # so this one pays for every row again

    def kill_child(self, after: int, delay: float, *flags: str) -> bool:
        """Run the job in a child process; SIGKILL it `delay` s after its `after`-th call (at
        once when `after` is 0). Whether it was still running then."""

        def keyed() -> int:  # agent calls, not the run's probe of the route
            return sum(self.agent.stats().requests_by_key.values())

        before = keyed()
        child = self.project.start_cli("--show", "0", *flags)
        try:
            deadline = time.monotonic() + 60
            while keyed() < before + after and child.poll() is None:
                assert time.monotonic() < deadline, "the child never called the agent"
                time.sleep(0.002)
            time.sleep(delay)
            running = child.poll() is None
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        return running

    @rule(sample=st.integers(min_value=0, max_value=3), full_refresh=st.booleans())
    def estimate(self, sample: int, full_refresh: bool) -> None:
        """`agentbatch estimate`: it pays for its sample only (each row once, none the table or
        the checkpoint answers), writes the sample as a merge (an overwrite job drops nothing),
        and says how many rows the next run sends; the next runs never pay for the sample again.
        With --full-refresh it starts the refresh it samples."""
        TOTALS["estimates"] += 1
        self.clock += 1
        rows = self.target()
        held_twice = any(n > 1 for n in Counter(r.key for r in rows).values())
        if held_twice and self.project.settings.mode != "append":
            with pytest.raises(UsageError):
                self.project.estimate(sample=sample, full_refresh=full_refresh)
            assert sum(self.calls_since().values()) == 0
            return
        since = (self.clock if self.refresh is None else self.refresh) if full_refresh else None
        _, must, may = self.predict(full_refresh=full_refresh, retry_errors=False)
        unsent = set(self.renewed)  # drawn or not, answered without a call
        found = self.project.estimate(
            sample=sample, full_refresh=full_refresh, seed=random.Random(sample).random()
        )
        calls = self.calls_since()
        paid = {k for k in SENT if calls.get(request_key(self.request(k)), 0)}
        for key in SENT:
            assert calls.get(request_key(self.request(key)), 0) <= (key in must | may), key
        assert sum(calls.values()) <= sample, "the estimate paid for more than its sample"
        assert sum(calls.values()) == sum(calls.get(request_key(self.request(k)), 0) for k in SENT)
        low, high = len(must | unsent), len(must | may | unsent)
        assert low <= found.to_send <= high, (found.to_send, must, may)
        assert found.sampled == min(sample, found.to_send), found
        # The sample: the keys paid, and the NULL request if it was drawn (answered, not sent).
        assert len(paid) <= found.sampled <= len(paid) + len(unsent), (found, paid)
        drawn = paid | (unsent if found.sampled > len(paid) else set())
        self.answering = drawn
        mode = "append" if self.project.settings.mode == "append" else "merge"
        new = {k: Row(k, self.fingerprint(k), kind_of(k)) for k in drawn}
        expected = self.written(rows, new, self.stamps(), mode)
        self.targets[self.project.output_file] = expected
        self.record(paid)
        if since is not None:
            self.refresh = since
        assert sorted(self.observed(), key=repr) == sorted(expected, key=repr)

    @rule()
    def drop_target(self) -> None:
        self.project.output.unlink(missing_ok=True)
        self.targets[self.project.output_file] = []

    @precondition(lambda self: self.project.output.exists())
    @rule()
    def truncate_target(self) -> None:
        self.project.truncate_target()
        self.targets[self.project.output_file] = []

    @rule()
    def remap_output(self) -> None:
        self.project.output_file += 1

    @rule(prompt=st.sampled_from(PROMPTS))
    def edit_prompt(self, prompt: str) -> None:
        self.project.settings.prompt = prompt

    @rule(mode=st.sampled_from(["merge", "append", "overwrite"]))
    def change_mode(self, mode: str) -> None:
        self.project.settings.mode = mode

    @rule()
    def toggle_stream(self) -> None:
        self.project.settings.stream = not self.project.settings.stream

    @rule()
    def delete_state(self) -> None:
        shutil.rmtree(self.project.state, ignore_errors=True)
        self.ledger.clear()
        self.refresh = None

    @precondition(lambda self: self.project.state.exists())
    @rule()
    def corrupt_checkpoint(self) -> None:
        for ledger in self.project.state.glob("*.sqlite"):
            ledger.write_bytes(b"\x00garbage" * 512)
        self.ledger.clear()
        self.refresh = None

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
    runner.settings = settings(
        max_examples=int(os.environ.get("AGENTBATCH_HISTORY_EXAMPLES", "20")),
        stateful_step_count=int(os.environ.get("AGENTBATCH_HISTORY_STEPS", "25")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("CI") is not None,
    )
    runner().runTest()
    # Kills must have landed mid-run at least once, or the kill rule proved nothing.
    assert TOTALS["kills_mid_run"] >= 1, dict(TOTALS)
    record_figures("run histories (local)", dict(TOTALS))


@pytest.mark.slow
def test_a_history_with_limits_estimates_and_a_killed_refresh(agent: AgentServer) -> None:
    """The model over one fixed history, so every run of the suite covers what the random ones
    may not draw: a trial run of 3 rows then the rest; an estimate, then the run it estimated;
    a limited run after a prompt edit; a limited overwrite over an append history; limited
    refreshes in turns; --limit with --retry-errors; a --full-refresh killed midway, continued
    by --full-refresh; one killed again, given up by a plain run, then refreshed again whole."""
    RunHistories.agent = agent
    machine = RunHistories()
    kills_before = TOTALS["refreshes_killed"]
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
        machine.estimate(sample=3, full_refresh=True)
        machine.kill_full_refresh_then_continue(after=3, delay=0.0, continued=True)
        machine.kill_full_refresh_then_continue(after=2, delay=0.02, continued=False)
        machine.estimate(sample=1, full_refresh=False)
    finally:
        machine.teardown()
    assert TOTALS["refreshes_killed"] > kills_before, dict(TOTALS)
