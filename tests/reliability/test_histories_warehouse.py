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
import hashlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from agentbatch.errors import UsageError
from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key
from tests.support.databricks_env import isolate

from .conftest import record_figures
from .history import refresh_answers
from .warehouse_history import OUTPUT, TOKEN, WarehouseProject, serve

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
UNKNOWN = "unknown"  # the ledger may or may not hold the answer (in flight at a kill)
STEADY = FaultConfig(permanent={"PERMANENT_ERROR": 400})
FLAKY = FaultConfig(permanent={"PERMANENT_ERROR": 400, "FLAKY": 503})

TOTALS: Counter[str] = Counter()


@dataclass(frozen=True)
class Row:
    key: int
    fingerprint: str
    kind: str  # "ok", "permanent" or "transient"


@dataclass(frozen=True)
class Held:
    """The REST checkpoint's latest answer for a key: fingerprint, kind ("ok", "permanent",
    "transient", or UNKNOWN: in flight at a kill, held or not) and the model's clock when it was
    paid (a full refresh reuses only answers paid since it began)."""

    fingerprint: str
    kind: str
    stamp: int = field(compare=False)


def utc(moment: datetime) -> datetime:
    """An `answered_at` as an aware UTC moment (the history's warehouse runs in UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def kind_from(error: str | None) -> str:
    if error is None:
        return "ok"
    return "transient" if error.startswith("[transient]") else "permanent"


class WarehouseHistories(RuleBasedStateMachine):
    agent: AgentServer

    @initialize(path=st.sampled_from(["rest", "push-down"]))
    def start(self, path: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="wh-histories-"))
        self.stack = contextlib.ExitStack()
        self.agent.configure(STEADY)
        self.flaky = False
        wh = self.stack.enter_context(serve(self.agent))
        self.project = WarehouseProject(self.root, self.agent, wh)
        self.project.settings.path = path
        self.present = set(START)
        self.project.write_source({k: TEXTS[k] for k in self.present})
        self.target: list[Row] = []
        self.ledger: dict[int, Held] = {}  # the REST fallback's checkpoint
        # The clock ticks once per run; `refresh`: when the checkpoint's unfinished refresh began
        # (`refresh_began`: by the wall clock, which push-down compares with `answered_at`).
        self.clock = 0
        self.refresh: int | None = None
        self.refresh_began: datetime | None = None
        self.seen = Counter(self.agent.stats().requests_by_key)
        self.fingerprints: dict[tuple[str, str], str] = {}

    def teardown(self) -> None:
        self.stack.close()
        self.agent.configure(STEADY)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the model -----------------------------------------------------------------------------

    @property
    def rest(self) -> bool:
        return self.project.settings.path == "rest"

    def request(self, key: int) -> str:
        return f"{self.project.settings.prompt}: {TEXTS[key]}"

    def call_fingerprint(self) -> str:
        s = self.project.settings
        if (s.path, s.prompt) not in self.fingerprints:
            self.fingerprints[s.path, s.prompt] = self.project.call_fingerprint()
        return self.fingerprints[s.path, s.prompt]

    def fingerprint(self, key: int) -> str:
        if TEXTS[key] is None:
            return "null-request:" + self.call_fingerprint()
        text = self.call_fingerprint() + self.request(key)
        return hashlib.sha256(text.encode()).hexdigest()

    def kind_of(self, key: int) -> str:
        text = TEXTS[key]
        if text is None or "PERMANENT_ERROR" in text:
            return "permanent"
        return "transient" if self.flaky and "FLAKY" in text else "ok"

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
        """(rows after the run, keys that must be paid, keys that may be paid). Call after
        ticking the clock."""
        rows = self.target
        current = {k: self.fingerprint(k) for k in self.present}
        since = (self.clock if self.refresh is None else self.refresh) if full_refresh else None
        stamps = self.stamps()

        def done(key: int) -> Row | None:
            if full_refresh:
                return None
            kept = ("ok",) if retry_errors else ("ok", "permanent")  # never a transient failure
            for row in rows:
                if row.key == key and row.fingerprint == current[key] and row.kind in kept:
                    return row
            return None

        todo = [key for key in sorted(self.present) if done(key) is None]
        if full_refresh and not self.rest and self.refresh_began is not None:
            # A push-down refresh continued: the target's answers to the current request since
            # it began (failed for good or not at all) are done.
            began = self.refresh_began
            kept = ("ok",) if retry_errors else ("ok", "permanent")

            def refreshed(key: int) -> bool:
                at = stamps.get((key, current[key]))
                row = [r for r in rows if r.key == key and r.fingerprint == current[key]]
                return at is not None and utc(at) >= began and row[0].kind in kept

            todo = [key for key in todo if not refreshed(key)]
        if limit is not None:
            if full_refresh:
                # The N rows whose answers are oldest: those without one to this request first.
                def age(key: int) -> tuple[bool, datetime, int]:
                    at = stamps.get((key, current[key]))
                    return at is not None, at or datetime.min, key

                todo.sort(key=age)
            todo = todo[:limit]  # else the N lowest keys not done
        new: dict[int, Row] = {}
        must, may = set(), set()
        self.renewed: set[int] = set()  # answered again without a call (a NULL request)
        for key in todo:
            kind = self.kind_of(key)
            held = self.ledger.get(key) if self.rest else None
            if held is not None and since is not None and held.stamp < since:
                held = None  # paid before the refresh began
            reusable = (
                held is not None
                and held.fingerprint == current[key]
                and (held.kind == "ok" or (held.kind == "permanent" and not retry_errors))
            )
            if reusable:
                assert held is not None
                kind = held.kind  # written from the checkpoint
            elif TEXTS[key] is None:
                self.renewed.add(key)  # never sent
            elif held is not None and held.kind == UNKNOWN:
                may.add(key)
            else:
                must.add(key)
            new[key] = Row(key, current[key], kind)
        self.answering = new
        return self.written(rows, new, stamps, self.project.settings.mode), must, may

    def written(
        self,
        rows: list[Row],
        new: dict[int, Row],
        stamps: dict[tuple[int, str], datetime],
        mode: str,
    ) -> list[Row]:
        """The target after writing the answers `new` over `rows` in `mode`."""
        current = {k: self.fingerprint(k) for k in self.present}

        def kept(key: int) -> Row | None:
            # Mode overwrite keeps a key it did not answer as it was: the row for the current
            # request, else the one answered last.
            mine = [r for r in rows if r.key == key]
            same = [r for r in mine if r.fingerprint == current[key]]
            latest = sorted(mine, key=lambda r: stamps[r.key, r.fingerprint])
            return same[0] if same else (latest[-1] if latest else None)

        if mode == "overwrite":
            after = [new.get(k) or kept(k) for k in sorted(self.present)]
            return [r for r in after if r is not None]
        if mode == "append":
            result = [
                r for r in rows if not (r.key in new and r.fingerprint == new[r.key].fingerprint)
            ]
            return result + list(new.values())
        return [r for r in rows if r.key not in new] + list(new.values())

    def merge_refused(self) -> bool:
        keys = Counter(r.key for r in self.target)
        return self.project.settings.mode == "merge" and any(n > 1 for n in keys.values())

    def observed(self) -> list[Row]:
        return sorted(
            (
                Row(r["review_id"], r["request_fingerprint"], kind_from(r["error"]))
                for r in self.project.target()
            ),
            key=repr,
        )

    def calls_since(self) -> Counter[str]:
        now = Counter(self.agent.stats().requests_by_key)
        delta = now - self.seen
        self.seen = now
        return delta

    def made(self, key: int, calls: Counter[str]) -> int:
        made = calls.get(request_key(self.request(key)), 0)
        if not self.rest and self.kind_of(key) == "transient":
            return min(made, 1)  # ai_query retries a 503 itself: one row, many attempts
        return made

    def check_calls(self, must: set[int], may: set[int], calls: Counter[str]) -> set[int]:
        """Check the calls paid against the model; the keys paid."""
        sent = [k for k in self.present if TEXTS[k] is not None]
        paid = set()
        for key in sent:
            made = self.made(key, calls)
            if made:
                paid.add(key)
            if key in must:
                assert made == 1, f"key {key}: expected one paid call, saw {made}"
            elif key in may:
                assert made <= 1, f"key {key}: paid {made} times"
            else:
                assert made == 0, f"key {key}: paid again ({made}) though its answer was kept"
            TOTALS["calls_paid"] += made
        mine = sum(calls.get(request_key(self.request(k)), 0) for k in sent)
        assert sum(calls.values()) == mine, "a request for another fingerprint was sent"
        return paid

    def record(self, paid: set[int]) -> None:
        """The REST checkpoint after a run answered `self.answering`: paid answers at this
        clock, reused ones as they were (an answer in flight at a kill was held after all)."""
        if not self.rest:
            return
        for key, row in self.answering.items():
            held = self.ledger.get(key)
            renewed = key in paid or key in self.renewed
            stamp = self.clock if renewed or held is None else held.stamp
            self.ledger[key] = Held(row.fingerprint, row.kind, stamp)

    def apply(self, rows: list[Row], paid: set[int], *, whole: bool = True) -> None:
        """The run finished: check the target against the model, then record what it answered
        (`whole`: it answered every key not done; a limited run's others are as they were)."""
        self.target = rows
        self.record(paid)
        self.refresh = self.refresh_began = None  # a finished run leaves no refresh to continue
        assert self.observed() == sorted(rows, key=repr)
        current = {k: self.fingerprint(k) for k in self.present}
        live = [r.key for r in self.observed() if current.get(r.key) == r.fingerprint]
        if whole:
            assert sorted(live) == sorted(self.present)  # one current row per source key

    # -- rules -----------------------------------------------------------------------------------

    @rule(full_refresh=st.booleans(), retry_errors=st.booleans())
    def run(self, full_refresh: bool, retry_errors: bool, limit: int | None = None) -> None:
        TOTALS["runs"] += 1
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
        if limit is not None:
            TOTALS["limited_runs"] += 1
            assert summary["rows"] == len(self.answering), summary
        self.apply(rows, paid, whole=limit is None or len(self.answering) < limit)

    # A trial run of a few rows; --limit with --full-refresh refreshes the oldest answers.
    @rule(
        limit=st.integers(min_value=1, max_value=3),
        full_refresh=st.booleans(),
        retry_errors=st.booleans(),
    )
    def limited_run(self, limit: int, full_refresh: bool, retry_errors: bool) -> None:
        self.run(full_refresh, retry_errors, limit=limit)

    # Runs are what the model checks: two more rules make them a larger share of the steps.
    @rule()
    def plain_run(self) -> None:
        self.run(False, False)

    @rule()
    def another_plain_run(self) -> None:
        self.run(False, False)

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
        for key in self.present:
            if TEXTS[key] is not None:
                assert self.made(key, killed) <= (key in must | may), f"key {key} paid twice"
        landed = self.observed()
        assert landed in (before, sorted(rows, key=repr)), "the table is neither before nor after"
        if wait and (landed != before or not running):
            # The killed run's write landed: that was a whole run.
            self.apply(rows, {k for k in self.present if self.made(k, killed)})
            return
        in_flight = {k for k in self.present if killed.get(request_key(self.request(k)), 0)}
        if not wait and not self.rest:
            in_flight |= must | may  # the orphaned ai_query statement may still pay them all
        if self.rest:
            for key in in_flight:
                self.ledger[key] = Held(self.fingerprint(key), UNKNOWN, self.clock)
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
        sent = {k for k in self.present if TEXTS[k] is not None}
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
            # What the refresh received is in its checkpoint (read from the file: those
            # answers must not be paid again); a call in flight at the kill is not.
            _, received = refresh_answers(self.project.state)
            kept = {k for k, held in self.ledger.items() if held.stamp >= since}
            assert set(received) & sent <= called | kept, "an answer nobody paid for"
            for key in called & set(received):
                self.ledger[key] = Held(*received[key], stamp=self.clock)
        if continued:
            self.run(True, False)
        else:
            self.run(False, False)  # gives the refresh up
            self.run(True, False)  # so this one pays for every row again

    @rule(sample=st.integers(min_value=0, max_value=3), full_refresh=st.booleans())
    def estimate(self, sample: int, full_refresh: bool) -> None:
        """`agentbatch estimate`: it pays for its sample only (each row once, none the table or
        the checkpoint answers), writes the sample as a merge (an overwrite job drops nothing),
        and says how many rows the next run sends; the next runs never pay for the sample
        again. With --full-refresh it starts the refresh it samples, on both paths."""
        TOTALS["estimates"] += 1
        self.clock += 1
        rows = self.target
        held_twice = any(n > 1 for n in Counter(r.key for r in rows).values())
        if held_twice and self.project.settings.mode != "append":
            with pytest.raises(UsageError):
                self.project.estimate(sample=sample, full_refresh=full_refresh)
            assert sum(self.calls_since().values()) == 0
            return
        since = (self.clock if self.refresh is None else self.refresh) if full_refresh else None
        began = self.refresh_began or datetime.now(timezone.utc)
        _, must, may = self.predict(full_refresh=full_refresh, retry_errors=False)
        unsent = set(self.renewed)  # drawn or not, answered without a call
        found = self.project.estimate(sample=sample, full_refresh=full_refresh, seed=sample)
        assert self.project.wh.wait_until_idle(timeout_s=60)
        calls = self.calls_since()
        sent = [k for k in self.present if TEXTS[k] is not None]
        paid = {k for k in sent if self.made(k, calls)}
        for key in sent:
            assert self.made(key, calls) <= (key in must | may), f"key {key}"
        assert sum(calls.values()) == sum(calls.get(request_key(self.request(k)), 0) for k in sent)
        assert sum(self.made(k, calls) for k in sent) <= sample, "paid for more than its sample"
        low, high = len(must | unsent), len(must | may | unsent)
        assert low <= found.to_send <= high, (found.to_send, must, may)
        assert found.sampled == min(sample, found.to_send), found
        # The sample: the keys paid, and the NULL request if it was drawn (answered, not sent).
        assert len(paid) <= found.sampled <= len(paid) + len(unsent), (found, paid)
        drawn = paid | (unsent if found.sampled > len(paid) else set())
        self.answering = {k: self.answering[k] for k in drawn}
        mode = "append" if self.project.settings.mode == "append" else "merge"
        expected = self.written(rows, self.answering, self.stamps(), mode)
        self.target = sorted(expected, key=repr)
        self.record(paid)
        if since is not None:  # it starts the refresh it samples, on both paths
            self.refresh, self.refresh_began = since, began
        assert self.observed() == self.target

    def kill_child(self, after: int, delay: float, *flags: str) -> bool:
        """Run the job as a CLI child; SIGKILL it `delay` s after its `after`-th agent call (at
        once when `after` is 0). Whether it was still running then."""

        def keyed() -> int:
            return sum(self.agent.stats().requests_by_key.values())

        start = keyed()
        child = self.project.start_cli(*flags)
        try:
            deadline = time.monotonic() + 120
            while keyed() < start + after and child.poll() is None:
                assert time.monotonic() < deadline, "the child never called the agent"
                time.sleep(0.002)
            time.sleep(delay)
            running = child.poll() is None
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
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
        for key in self.present:
            if TEXTS[key] is not None:
                # This folder's run pays what the model says; the other (an empty checkpoint)
                # may pay every row not done.
                bound = (key in must | may) + (key in self.answering)
                assert self.made(key, calls) <= bound, f"key {key}"
        if self.rest:
            for key in self.answering:
                # Answered by this folder's run, or only the other's.
                self.ledger[key] = Held(self.fingerprint(key), UNKNOWN, self.clock)
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

    @rule(prompt=st.sampled_from(PROMPTS))
    def edit_prompt(self, prompt: str) -> None:
        self.project.settings.prompt = prompt

    @rule(mode=st.sampled_from(["merge", "append", "overwrite"]))
    def change_mode(self, mode: str) -> None:
        self.project.settings.mode = mode

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
    runner.settings = settings(
        max_examples=int(os.environ.get("AGENTBATCH_WH_HISTORY_EXAMPLES", "6")),
        stateful_step_count=int(os.environ.get("AGENTBATCH_WH_HISTORY_STEPS", "15")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("CI") is not None,
    )
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
