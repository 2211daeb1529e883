"""Histories of runs against a reference model (hypothesis stateful testing).

Random sequences of: run / --full-refresh / --retry-errors, SIGKILL mid-run (then a recovery run),
drop / truncate / re-map the output, edit the prompt (back to an old one too), change mode,
toggle `stream`, delete the state folder, corrupt the checkpoint. After each run a plain model
predicts the target's rows (key, fingerprint, outcome) and the calls paid per request; the
invariants: after a run that exits 0 or 1 every source key has exactly one row with the current
fingerprint, and no request is paid twice except under --full-refresh or when it was in flight
at a kill.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
from .history import ENDPOINT, Project

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
        self.ledger: dict[int, tuple[str, str] | str] = {}
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

    def predict(
        self, *, full_refresh: bool, retry_errors: bool
    ) -> tuple[list[Row], set[int], set[int]]:
        """(rows after the run, keys that must be paid, keys that may be paid). The keys the run
        answers (paid or reused) are `self.answering`."""
        rows = self.target()
        current = {k: self.fingerprint(k) for k in TEXTS}

        def done(key: int) -> Row | None:
            if full_refresh:
                return None
            for row in rows:
                same = row.key == key and row.fingerprint == current[key]
                if same and (row.kind == "ok" or not retry_errors):
                    return row
            return None

        new: dict[int, Row] = {}
        must, may = set(), set()
        for key in TEXTS:
            if done(key) is not None:
                continue
            new[key] = Row(key, current[key], kind_of(key))
            if TEXTS[key] is None:
                continue  # never sent
            held = self.ledger.get(key)
            if full_refresh:
                must.add(key)
            elif held == UNKNOWN:
                may.add(key)
            elif held != (current[key], kind_of(key)) or (
                kind_of(key) == "permanent" and retry_errors
            ):
                must.add(key)
        self.answering = set(new)
        mode = self.project.settings.mode
        if mode == "overwrite":
            after = [new.get(k) or done(k) for k in TEXTS]
            result = [r for r in after if r is not None]
        elif mode == "append":
            result = [
                r for r in rows if not (r.key in new and r.fingerprint == new[r.key].fingerprint)
            ]
            result += new.values()
        else:
            result = [r for r in rows if r.key not in new] + list(new.values())
        return result, must, may

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

    def check_calls(self, must: set[int], may: set[int], calls: Counter[str]) -> None:
        for key in SENT:
            made = calls.get(request_key(self.request(key)), 0)
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

    def apply(self, rows: list[Row]) -> None:
        """The run finished: check the target against the model, then record what it answered."""
        self.targets[self.project.output_file] = rows
        current = {k: self.fingerprint(k) for k in TEXTS}
        for key in self.answering:
            self.ledger[key] = (current[key], kind_of(key))
        assert sorted(self.observed(), key=repr) == sorted(rows, key=repr)
        live = [r for r in self.observed() if r.fingerprint == current[r.key]]
        assert sorted(r.key for r in live) == sorted(TEXTS)  # one current row per key

    # -- rules -----------------------------------------------------------------------------------

    @rule(full_refresh=st.booleans(), retry_errors=st.booleans())
    def run(self, full_refresh: bool, retry_errors: bool) -> None:
        TOTALS["steps"] += 1
        if self.merge_refused():
            with pytest.raises(UsageError, match="mode overwrite"):
                self.project.run(full_refresh=full_refresh, retry_errors=retry_errors)
            assert sum(self.calls_since().values()) == 0
            return
        rows, must, may = self.predict(full_refresh=full_refresh, retry_errors=retry_errors)
        summary = self.project.run(full_refresh=full_refresh, retry_errors=retry_errors)
        self.check_calls(must, may, self.calls_since())
        TOTALS["rows_reused"] += int(summary.get("reused", 0))
        self.apply(rows)

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
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        TOTALS["steps"] += 1
        self.agent.configure(FaultConfig(latency_ms=60, jitter_ms=50, seed=after))
        try:
            landed = self.kill_child(min(after, max(len(must) - 1, 0)), delay)
        finally:
            self.agent.configure(FaultConfig())
        if not landed:  # the child finished first: that was a whole run
            self.check_calls(must, may, self.calls_since())
            self.apply(rows)
            return
        killed_calls = self.calls_since()
        TOTALS["kills_mid_run"] += sum(killed_calls.values()) > 0
        in_flight = {k for k in SENT if killed_calls.get(request_key(self.request(k)), 0)}
        for key in in_flight:
            self.ledger[key] = UNKNOWN
        for key in SENT:
            assert killed_calls.get(request_key(self.request(key)), 0) <= (key in must | may)
        # Recovery: a plain run finishes the job; what the killed run wrote (all or nothing)
        # leads to the same target.
        rows, must, may = self.predict(full_refresh=False, retry_errors=False)
        self.project.run()
        self.check_calls(must - in_flight, may | (must & in_flight), self.calls_since())
        self.apply(rows)

    def kill_child(self, after: int, delay: float) -> bool:
        """Run the job in a child process; SIGKILL it `delay` s after its `after`-th call (at
        once when `after` is 0). Whether it was still running then."""

        def keyed() -> int:  # agent calls, not the run's probe of the route
            return sum(self.agent.stats().requests_by_key.values())

        before = keyed()
        child = self.project.start_cli("--show", "0")
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

    @precondition(lambda self: self.project.state.exists())
    @rule()
    def corrupt_checkpoint(self) -> None:
        for ledger in self.project.state.glob("*.sqlite"):
            ledger.write_bytes(b"\x00garbage" * 512)
        self.ledger.clear()

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
