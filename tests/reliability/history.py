"""A small project for run-history tests: a reviews CSV, a job whose prompt, mode and stream
setting can change between runs, and a run helper against a loopback agent; and the model of
run histories the local and the databricks-sql histories share (`HistoryModel`)."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

import agentbatch
from agentbatch.errors import UsageError
from agentbatch.testing.agent_server import AgentServer
from agentbatch.testing.inbound import request_key
from tests.reliability.processes import kill_after

SOURCE = "main.shop.reviews"
OUTPUT = "main.shop.review_answers"
ENDPOINT = "apps/reviewer"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class JobSettings:
    mode: str = "merge"
    prompt: str = "Review"
    stream: bool = False
    max_retries: int = 1
    max_concurrency: int = 4
    where: str | None = None
    columns: tuple[str, ...] = ("text",)
    # The source's `review_id` column as the job names it (spelled in any case: one column).
    key: str = "review_id"


@dataclass
class Project:
    root: Path
    agent: AgentServer
    settings: JobSettings = field(default_factory=JobSettings)
    output_file: int = 0

    @property
    def source(self) -> Path:
        return self.root / "reviews.csv"

    @property
    def output(self) -> Path:
        return self.root / f"answers-{self.output_file}.parquet"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def write_source(self, rows: dict[int, str | None]) -> None:
        with self.source.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review_id", "text"])
            for key, text in sorted(rows.items()):
                writer.writerow([key, text])

    def write_job(self) -> Path:
        s = self.settings
        where = f'  where: "{s.where}"\n' if s.where else ""
        path = self.root / "jobs" / "reviews.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"""name: reviews
source:
  table: {SOURCE}
  key: {s.key}
  columns: [{", ".join(s.columns)}]
{where}request: "concat('{s.prompt}: ', text)"
agent:
  endpoint: {ENDPOINT}
  stream: {str(s.stream).lower()}
  max_retries: {s.max_retries}
  max_concurrency: {s.max_concurrency}
output:
  table: {OUTPUT}
  mode: {s.mode}
"""
        )
        return path

    def options(self, **options: Any) -> dict[str, Any]:
        """The keyword arguments of a run of the job in this project, with `options`."""
        return {
            "tables": {SOURCE: self.source, OUTPUT: self.output},
            "endpoints": {ENDPOINT: self.agent.url},
            "state_dir": self.state,
            "project_dir": self.root,
            "progress": False,
            **options,
        }

    def run(self, **options: Any) -> dict[str, Any]:
        with agentbatch.run(self.write_job(), **self.options(**options)) as result:
            return dict(result.summary)

    def estimate(self, **options: Any) -> Any:
        """`agentbatch.estimate` of the job (its sample sent for real)."""
        return agentbatch.estimate(self.write_job(), **self.options(**options))

    def start_cli(self, *flags: str) -> subprocess.Popen[bytes]:
        """`agentbatch run` of the job in a child process (to be killed), with `flags`."""
        args = [
            sys.executable, "-m", "agentbatch", "run", str(self.write_job()), "--no-progress",
            "--show", "0",
            "--table", f"{SOURCE}={self.source}", "--table", f"{OUTPUT}={self.output}",
            "--endpoint", f"{ENDPOINT}={self.agent.url}",
            "--state-dir", str(self.state), "--project-dir", str(self.root), *flags,
        ]  # fmt: skip
        return subprocess.Popen(
            args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def target(self) -> list[dict[str, Any]]:
        """The output rows (none when the file does not exist)."""
        if not self.output.exists():
            return []
        table = pq.read_table(self.output)
        # The key column as the job spelled it when the table was made (`key` in any case).
        names = ["review_id" if c.lower() == "review_id" else c for c in table.column_names]
        rows: list[dict[str, Any]] = table.rename_columns(names).to_pylist()
        return rows

    def truncate_target(self) -> None:
        table = pq.read_table(self.output)
        pq.write_table(pa.Table.from_batches([], schema=table.schema), self.output)


def refresh_answers(state: Path) -> tuple[int | None, dict[int, tuple[str, str]]]:
    """What the checkpoint in `state` holds for a full refresh left unfinished: (when it began,
    in microseconds, or None; key -> (fingerprint, "ok" / "permanent" / "transient") of each
    answer received since then). Read from a copy, so the next run opens the file as the killed
    run left it."""
    [ledger] = sorted(state.glob("*.sqlite"))
    scratch = Path(tempfile.mkdtemp(prefix="ledger-copy-"))
    try:
        copy = scratch / ledger.name
        for suffix in ("", "-wal"):
            if Path(f"{ledger}{suffix}").exists():
                shutil.copyfile(f"{ledger}{suffix}", f"{copy}{suffix}")
        conn = sqlite3.connect(copy)
        try:
            found = conn.execute("SELECT v FROM meta WHERE k = 'refresh_since'").fetchone()
            if found is None:
                return None, {}
            rows = conn.execute(
                "SELECT key, fingerprint, ok, transient FROM answers WHERE answered_us >= ?",
                (int(found[0]),),
            ).fetchall()
        finally:
            conn.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    kinds = {(1, 0): "ok", (0, 0): "permanent", (0, 1): "transient"}
    return int(found[0]), {int(k): (fp, kinds[ok, transient]) for k, fp, ok, transient in rows}


# -- the model of run histories ----------------------------------------------------------------

UNKNOWN = "unknown"  # the checkpoint may or may not hold the answer (in flight at a kill)


@dataclass(frozen=True)
class Row:
    key: int
    fingerprint: str
    kind: str  # "ok", "permanent" or "transient"


@dataclass(frozen=True)
class Held:
    """The checkpoint's latest answer for a key: its fingerprint, its kind ("ok", "permanent",
    "transient", or UNKNOWN: in flight at a kill, held or not) and the model's clock when it was
    paid (a full refresh reuses only answers paid since it began)."""

    fingerprint: str
    kind: str
    stamp: int = field(compare=False)


def kind_from(error: str | None) -> str:
    if error is None:
        return "ok"
    return "transient" if error.startswith("[transient]") else "permanent"


def utc(moment: datetime) -> datetime:
    """An `answered_at` as an aware UTC moment (the histories' targets run in UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def history_settings(variables: str, examples: int, steps: int) -> settings:
    """A history test's settings: examples and steps from `{variables}_EXAMPLES` and
    `{variables}_STEPS` (else the defaults given), derandomized when CI is set."""
    return settings(
        max_examples=int(os.environ.get(f"{variables}_EXAMPLES", str(examples))),
        stateful_step_count=int(os.environ.get(f"{variables}_STEPS", str(steps))),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("CI") is not None,
    )


class HistoryProject(Protocol):
    """What the model asks of a target's project."""

    @property
    def settings(self) -> Any: ...  # .mode and .prompt of the job

    @property
    def state(self) -> Path: ...

    def run(self, **options: Any) -> dict[str, Any]: ...

    def estimate(self, **options: Any) -> Any: ...

    def start_cli(self, *flags: str) -> subprocess.Popen[bytes]: ...

    def target(self) -> list[dict[str, Any]]: ...


class HistoryModel(RuleBasedStateMachine):
    """The reference model of run histories, whatever the target: the rows each run leaves
    (key, fingerprint, outcome), the checkpoint's latest answer per key, the calls each run must
    or may pay, and the rules both targets share (run / --full-refresh / --retry-errors, each
    also with `--limit N`; `estimate`; mode changes). A subclass says how its target runs a
    step and reads its table; it binds `limited_run` and `edit_prompt` as rules with its own
    bounds, sets `texts` and `totals`, and calls `reset_model` when it starts."""

    agent: AgentServer
    project: HistoryProject
    texts: ClassVar[dict[int, str | None]]  # the source's possible rows (a NULL: never sent)
    totals: ClassVar[Counter[str]]  # figures counted across the session
    child_deadline_s: ClassVar[float] = 60.0  # how long a CLI child may take to call the agent
    flaky = False  # FLAKY rows fail with a 503 (transient) while set

    def reset_model(self, keys: set[int]) -> None:
        """The model of a new project whose source holds `keys`."""
        self.present = set(keys)
        self.targets: dict[int, list[Row]] = {}  # the rows of each output file
        self.ledger: dict[int, Held] = {}  # the checkpoint's latest answer per key
        # The clock ticks once per run; `refresh`: when the unfinished full refresh began
        # (`refresh_began`: by the wall clock, which a target's `answered_at` is compared with).
        self.clock = 0
        self.refresh: int | None = None
        self.refresh_began: datetime | None = None
        # The refresh (its `refresh`) that has asked every row: while it is unfinished, any run
        # continues it (`continues_refresh`), as the checkpoint's `refresh_reached` says.
        self.reached_for: int | None = None
        # Of the predicted run: whether it refreshes, whether it reaches every row it selects,
        # and the keys whose transient failure keeps their earlier answer (`predict`).
        self.refreshing = False
        self.reaches_all = True
        self.kept: set[int] = set()
        self.answering: dict[int, Row] = {}  # what the predicted run answers (paid or reused)
        self.renewed: set[int] = set()  # answered again without a call (a NULL request)
        self.seen = Counter(self.agent.stats().requests_by_key)  # calls: `calls_since`

    # -- what a target says (overridden) ---------------------------------------------------------

    def call_fingerprint(self) -> str:
        """The plan's fingerprint of the calls the job makes now."""
        raise NotImplementedError

    @property
    def output_file(self) -> int:
        """Which output the job writes now (a target with one output: 0)."""
        return 0

    @property
    def checkpointed(self) -> bool:
        """Whether runs now keep their answers in the checkpoint (`ledger`)."""
        return True

    def trusts(self, key: int, held: Held) -> bool:
        """Whether a run may reuse `held`, an answer to the current request that did not fail
        for now (a target may ask more of it)."""
        return True

    def refresh_in_target(self) -> datetime | None:
        """When the unfinished refresh that a --full-refresh continues began: the target's rows
        answering the current request since then are done, on either path (the REST fallback
        also reuses what its checkpoint holds since `refresh`); None when none is unfinished."""
        return self.refresh_began if self.refresh is not None else None

    @property
    def keeps_answers(self) -> bool:
        """Whether a full refresh here keeps a row's answer to the current request when its new
        call fails transiently (the REST fallback), leaving the refresh unfinished for it."""
        return True

    @property
    def refresh_reached(self) -> bool:
        return self.refresh is not None and self.reached_for == self.refresh

    def continues_refresh(self, full_refresh: bool) -> bool:
        """Whether a run runs as a full refresh: asked to, or continuing one that has asked
        every row and is unfinished only for rows that kept their earlier answer."""
        return full_refresh or self.refresh_reached

    def made(self, key: int, calls: Counter[str]) -> int:
        """The calls paid for `key` among `calls`."""
        return calls.get(request_key(self.request(key)), 0)

    def send_estimate(self, sample: int, full_refresh: bool) -> Any:
        """`agentbatch estimate` of the job with a sample of `sample` rows, its calls done."""
        raise NotImplementedError

    # -- the model -------------------------------------------------------------------------------

    @property
    def target(self) -> list[Row]:
        """The model's rows of the output the job writes now."""
        return self.targets.setdefault(self.output_file, [])

    @target.setter
    def target(self, rows: list[Row]) -> None:
        self.targets[self.output_file] = rows

    def request(self, key: int) -> str:
        return f"{self.project.settings.prompt}: {self.texts[key]}"

    def fingerprint(self, key: int) -> str:
        if self.texts[key] is None:
            return "null-request:" + self.call_fingerprint()
        text = self.call_fingerprint() + self.request(key)
        return hashlib.sha256(text.encode()).hexdigest()

    def current(self) -> dict[int, str]:
        return {k: self.fingerprint(k) for k in self.present}

    def sent(self) -> list[int]:
        """The source's keys whose request is sent (not NULL)."""
        return sorted(k for k in self.present if self.texts[k] is not None)

    def kind_of(self, key: int) -> str:
        text = self.texts[key]
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
        """(rows after the run, keys that must be paid, keys that may be paid). The keys the run
        answers are `self.answering`. Call after ticking the clock."""
        full_refresh = self.continues_refresh(full_refresh)
        # When a refresh this run begins began, as `answered_at` compares: before the run.
        self.starting = self.refresh_began or datetime.now(timezone.utc)
        rows = self.target
        current = self.current()
        since = (self.clock if self.refresh is None else self.refresh) if full_refresh else None
        stamps = self.stamps()
        # Done, or reusable: never a transient failure.
        kept: tuple[str, ...] = ("ok",) if retry_errors else ("ok", "permanent")

        def done(key: int) -> bool:
            same = [r for r in rows if r.key == key and r.fingerprint == current[key]]
            return not full_refresh and any(r.kind in kept for r in same)

        todo = [key for key in sorted(self.present) if not done(key)]
        began = self.refresh_in_target() if full_refresh else None
        if began is not None:
            # A refresh continued from the target: its answers to the current request since it
            # began (failed for good or not at all) are done.
            def refreshed(key: int) -> bool:
                at = stamps.get((key, current[key]))
                row = [r for r in rows if r.key == key and r.fingerprint == current[key]]
                return at is not None and utc(at) >= began and row[0].kind in kept

            todo = [key for key in todo if not refreshed(key)]
        self.reaches_all = limit is None or len(todo) <= limit
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
        self.renewed = set()
        for key in todo:
            kind = self.kind_of(key)
            held = self.ledger.get(key) if self.checkpointed else None
            if held is not None and since is not None and held.stamp < since:
                held = None  # paid before the refresh began
            reusable = (
                held is not None
                and held.fingerprint == current[key]
                and held.kind in kept
                and self.trusts(key, held)
            )
            if reusable:
                assert held is not None
                kind = held.kind  # written from the checkpoint
            elif self.texts[key] is None:
                self.renewed.add(key)  # never sent
            elif held is not None and held.kind == UNKNOWN:
                may.add(key)
            else:
                must.add(key)
            new[key] = Row(key, current[key], kind)
        self.answering = new
        self.refreshing = full_refresh
        # A refresh's transient failure keeps the key's answer to the same request, if the
        # target holds one: it is not written (the checkpoint still records the failure).
        self.kept = {
            key
            for key, row in new.items()
            if full_refresh
            and self.keeps_answers
            and row.kind == "transient"
            and any(
                r.key == key and r.fingerprint == row.fingerprint and r.kind == "ok" for r in rows
            )
        }
        answered = {k: r for k, r in new.items() if k not in self.kept}
        return self.written(rows, answered, stamps, self.project.settings.mode), must, may

    def written(
        self,
        rows: list[Row],
        new: dict[int, Row],
        stamps: dict[tuple[int, str], datetime],
        mode: str,
    ) -> list[Row]:
        """The target after writing the answers `new` over `rows` in `mode`."""
        current = self.current()

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
        """The target's rows as the target holds them (sorted)."""
        rows = (
            Row(r["review_id"], r["request_fingerprint"], kind_from(r["error"]))
            for r in self.project.target()
        )
        return sorted(rows, key=repr)

    def calls_since(self) -> Counter[str]:
        now = Counter(self.agent.stats().requests_by_key)
        delta = now - self.seen
        self.seen = now
        return delta

    def check_calls(self, must: set[int], may: set[int], calls: Counter[str]) -> set[int]:
        """Check the calls paid against the model; the keys paid."""
        paid = set()
        for key in self.sent():
            made = self.made(key, calls)
            if made:
                paid.add(key)
            if key in must:
                assert made == 1, f"key {key}: expected one paid call, saw {made}"
            elif key in may:
                assert made <= 1, f"key {key}: paid {made} times"
            else:
                assert made == 0, f"key {key}: paid again ({made}) though its answer was kept"
            self.totals["calls_paid"] += made
            self.totals["calls_model_must"] += key in must
        mine = sum(calls.get(request_key(self.request(k)), 0) for k in self.sent())
        assert sum(calls.values()) == mine, "a request for another fingerprint was sent"
        return paid

    def record(self, paid: set[int]) -> None:
        """The checkpoint after a run answered `self.answering`: paid answers at this clock,
        reused ones as they were (an answer in flight at a kill was held after all)."""
        if not self.checkpointed:
            return
        for key, row in self.answering.items():
            held = self.ledger.get(key)
            renewed = key in paid or key in self.renewed
            stamp = self.clock if renewed or held is None else held.stamp
            self.ledger[key] = Held(row.fingerprint, row.kind, stamp)

    def maybe_held(self, keys: set[int]) -> None:
        """`keys` were sent by a run that did not finish: the checkpoint may hold their answer."""
        if self.checkpointed:
            for key in keys:
                self.ledger[key] = Held(self.fingerprint(key), UNKNOWN, self.clock)

    def apply(self, rows: list[Row], paid: set[int], *, whole: bool = True) -> None:
        """The run finished: check the target against the model, then record what it answered
        (`whole`: it answered every key not done, so each has its current row; a limited run's
        others are as they were)."""
        self.target = rows
        self.record(paid)
        self.finish_refresh()
        assert self.observed() == sorted(rows, key=repr)
        current = self.current()
        live = [r.key for r in self.observed() if current.get(r.key) == r.fingerprint]
        if whole:
            assert sorted(live) == sorted(self.present)  # one current row per source key

    def finish_refresh(self) -> None:
        """A run finished: it leaves no refresh to continue, unless it refreshed and rows kept
        their earlier answer (the REST fallback), or it continued a refresh that has asked every
        row without reaching all it left. `refresh_began` was set when the run began."""
        unfinished = (
            self.refreshing
            and self.keeps_answers
            and (self.kept or (self.refresh_reached and not self.reaches_all))
        )
        if not unfinished:
            self.refresh = self.refresh_began = None
            return
        if self.refresh is None:
            self.refresh, self.refresh_began = self.clock, self.starting
        if self.reaches_all:
            self.reached_for = self.refresh

    def kill_child(self, after: int, delay: float, *flags: str) -> bool:
        """Run the job as a CLI child; SIGKILL it `delay` s after its `after`-th agent call (at
        once when `after` is 0). Whether it was still running then."""

        def keyed() -> int:  # agent calls, not the run's probe of the route
            return sum(self.agent.stats().requests_by_key.values())

        start = keyed()
        child = self.project.start_cli(*flags)
        try:
            deadline = time.monotonic() + self.child_deadline_s
            while keyed() < start + after and child.poll() is None:
                assert time.monotonic() < deadline, "the child never called the agent"
                time.sleep(0.002)
            running = kill_after(child, delay)
        finally:
            child.kill()
            child.wait()
        return running

    def take_refresh_checkpoint(self, since: int, called: set[int]) -> None:
        """A --full-refresh begun at `since` was killed after paying `called`: what it received
        is in its checkpoint (read from the file: those answers must not be paid again); a call
        in flight at the kill is not, and is paid again."""
        _, received = refresh_answers(self.project.state)
        kept = {k for k, held in self.ledger.items() if held.stamp >= since}  # this refresh's
        assert set(received) & set(self.sent()) <= called | kept, "an answer nobody paid for"
        for key in called & set(received):
            self.ledger[key] = Held(*received[key], stamp=self.clock)

    def after_killed_refresh(self, continued: bool) -> None:
        """`--full-refresh` again (`continued`: it pays only what the killed one did not
        receive), or a plain run, which gives the refresh up: the next one pays every row."""
        if continued:
            self.run(True, False)
        else:
            self.run(False, False)  # gives the refresh up
            self.run(True, False)  # so this one pays for every row again

    # -- rules both targets share ----------------------------------------------------------------

    @rule(full_refresh=st.booleans(), retry_errors=st.booleans())
    def run(self, full_refresh: bool, retry_errors: bool, limit: int | None = None) -> None:
        self.totals["runs"] += 1
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
        assert summary.get("kept_previous_answer", 0) == len(self.kept), (summary, self.kept)
        self.totals["rows_reused"] += int(summary.get("reused", 0))
        if limit is not None:
            self.totals["limited_runs"] += 1
            assert summary["rows"] == len(self.answering), summary
        self.apply(rows, paid, whole=limit is None or len(self.answering) < limit)

    # A trial run of a few rows; --limit with --full-refresh refreshes the oldest answers. A
    # subclass binds it as a rule with its own bound on `limit`.
    def limited_run(self, limit: int, full_refresh: bool, retry_errors: bool) -> None:
        self.run(full_refresh, retry_errors, limit=limit)

    # Runs are what the model checks: two more rules make them a larger share of the steps.
    @rule()
    def plain_run(self) -> None:
        self.run(False, False)

    @rule()
    def another_plain_run(self) -> None:
        self.run(False, False)

    @rule(sample=st.integers(min_value=0, max_value=3), full_refresh=st.booleans())
    def estimate(self, sample: int, full_refresh: bool) -> None:
        """`agentbatch estimate`: it pays for its sample only (each row once, none the table or
        the checkpoint answers), writes the sample as a merge (an overwrite job drops nothing),
        and says how many rows the next run sends; the next runs never pay for the sample
        again. With --full-refresh it starts the refresh it samples."""
        self.totals["estimates"] += 1
        self.clock += 1
        rows = self.target
        held_twice = any(n > 1 for n in Counter(r.key for r in rows).values())
        if held_twice and self.project.settings.mode != "append":
            with pytest.raises(UsageError):
                self.project.estimate(sample=sample, full_refresh=full_refresh)
            assert sum(self.calls_since().values()) == 0
            return
        refreshing = self.continues_refresh(full_refresh)
        since = (self.clock if self.refresh is None else self.refresh) if refreshing else None
        began = self.refresh_began or datetime.now(timezone.utc)
        _, must, may = self.predict(full_refresh=full_refresh, retry_errors=False)
        found = self.send_estimate(sample, full_refresh)
        calls = self.calls_since()
        sent = self.sent()
        paid = {k for k in sent if self.made(k, calls)}
        for key in sent:
            assert self.made(key, calls) <= (key in must | may), f"key {key}"
        assert sum(calls.values()) == sum(calls.get(request_key(self.request(k)), 0) for k in sent)
        assert sum(self.made(k, calls) for k in sent) <= sample, "paid for more than its sample"
        # A NULL request is never sent (the run answers it with its row error): the estimate
        # neither counts nor samples it, as the run's own count does not.
        low, high = len(must), len(must | may)
        assert low <= found.to_send <= high, (found.to_send, must, may)
        assert found.sampled == min(sample, found.to_send), found
        assert found.sampled == len(paid), (found, paid)  # the sample: the keys paid
        self.answering = {k: self.answering[k] for k in paid}
        mode = "append" if self.project.settings.mode == "append" else "merge"
        answered = {k: r for k, r in self.answering.items() if k not in self.kept}
        self.target = sorted(self.written(rows, answered, self.stamps(), mode), key=repr)
        self.record(paid)
        if since is not None:  # it starts the refresh it samples
            self.refresh, self.refresh_began = since, began
        assert self.observed() == self.target

    # A subclass binds it as a rule over its own prompts.
    def edit_prompt(self, prompt: str) -> None:
        self.project.settings.prompt = prompt

    @rule(mode=st.sampled_from(["merge", "append", "overwrite"]))
    def change_mode(self, mode: str) -> None:
        self.project.settings.mode = mode
