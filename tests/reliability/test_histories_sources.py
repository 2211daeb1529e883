"""Histories of runs whose *inputs* change between runs (hypothesis stateful testing).

`test_run_histories.py` changes the job and the output between runs of a fixed source; here the
source and the way the job is run change too, as on a schedule: rows added, deleted and edited
(to a failing or a NULL request), the `where` filter narrowed and widened, the agent failing some
rows transiently then recovering, `--limit`, `--max-rows` (refused, or fitting thanks to the
checkpoint), `estimate --sample` (its sample is kept), `--retry-errors`, `--full-refresh`, mode
changes in every order, and outputs as Parquet files and Delta folders that the user drops,
truncates, re-maps or restores from an older copy. Every run goes through the CLI
(`agentbatch.cli.main.main`) against the loopback agent server.

After each step a plain model predicts the whole output table (key, request, outcome of every
row), the calls the agent must have received (a paid answer is never paid again, but through
--full-refresh), the run's summary counts and its exit code; a refused run changes nothing and
creates nothing.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

import agentbatch
from agentbatch.cli.main import main as cli_main
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from agentbatch.testing.inbound import request_key

from .conftest import record_figures
from .history import ENDPOINT, OUTPUT, SOURCE

PROMPTS = ("Review", "Judge")
WHERES = (None, "review_id < 7", "review_id % 2 = 0")
STEADY = FaultConfig(permanent={"PERMANENT_ERROR": 400})
FLAKY = FaultConfig(permanent={"PERMANENT_ERROR": 400, "FLAKY": 500})
TOTALS: Counter[str] = Counter()
WAREHOUSE = 4  # the output number that is not mapped to a file


@dataclass(frozen=True)
class Row:
    key: int
    request: str | None  # None: a NULL request (never sent)
    kind: str  # ok | permanent | transient
    seq: int  # when it was paid for (answered_at order)


@dataclass
class Held:
    """The checkpoint's latest answer for a key."""

    request: str | None
    kind: str
    seq: int


@dataclass
class Model:
    texts: dict[int, str | None]
    prompt: str = "Review"
    mode: str = "merge"
    where: str | None = None
    flaky: bool = False
    outputs: dict[int, list[Row] | None] = field(default_factory=dict)  # None: no table
    output: int = 0
    ledger: dict[int, Held] = field(default_factory=dict)
    seq: int = 0
    duplicate: int | None = None  # a key the source holds twice (a run selecting it is refused)
    # The unfinished full refresh: the seq of its first run (the rows it answered, or reused
    # since, are its own), and whether it has asked every row (then any run continues it: what
    # is left are rows whose new call failed transiently, which kept their earlier answer).
    refresh: int | None = None
    reached: bool = False

    def selected(self) -> list[int]:
        keys = sorted(self.texts)
        if self.where == "review_id < 7":
            return [k for k in keys if k < 7]
        if self.where == "review_id % 2 = 0":
            return [k for k in keys if k % 2 == 0]
        return keys

    def request(self, key: int) -> str | None:
        text = self.texts[key]
        return None if text is None else f"{self.prompt}: {text}"

    def outcome(self, key: int) -> str:
        text = self.texts[key]
        if text is None or "PERMANENT_ERROR" in text:
            return "permanent"
        return "transient" if self.flaky and "FLAKY" in text else "ok"

    @property
    def rows(self) -> list[Row]:
        return self.outputs.get(self.output) or []

    def refreshing(self, full_refresh: bool) -> bool:
        """Whether a run runs as a full refresh: asked to, or continuing one that has asked
        every row."""
        return full_refresh or (self.refresh is not None and self.reached)

    def done(self, key: int, *, retry_errors: bool, full_refresh: bool) -> Row | None:
        """The target's row that makes `key` done; a full refresh continuing one counts only
        those answered since it began."""
        if full_refresh and self.refresh is None:
            return None
        since = self.refresh if full_refresh else None
        for row in self.rows:
            answered = row.kind == "ok" or (row.kind == "permanent" and not retry_errors)
            fresh = since is None or row.seq >= since
            if row.key == key and row.request == self.request(key) and answered and fresh:
                return row
        return None

    def reusable(self, key: int, *, retry_errors: bool, full_refresh: bool = False) -> bool:
        """Whether the checkpoint answers `key` (a full refresh: only with what it paid since it
        began, if it continues one)."""
        held = self.ledger.get(key)
        if held is None or held.request != self.request(key):
            return False
        if full_refresh and (self.refresh is None or held.seq < self.refresh):
            return False
        return held.kind == "ok" or (held.kind == "permanent" and not retry_errors)

    def kept(self, answered: dict[int, Row], *, full_refresh: bool) -> set[int]:
        """The keys of a full refresh whose new call failed transiently and whose target row
        answers the same request: they keep it (not written)."""
        if not full_refresh:
            return set()
        return {
            key
            for key, new in answered.items()
            if new.kind == "transient"
            and any(r.key == key and r.request == new.request and r.kind == "ok" for r in self.rows)
        }

    def todo(
        self,
        *,
        retry_errors: bool,
        full_refresh: bool,
        limit: int | None,
        answered_at: Callable[[Row], Any] | None = None,
    ) -> list[int]:
        keys = [
            k
            for k in self.selected()
            if self.done(k, retry_errors=retry_errors, full_refresh=full_refresh) is None
        ]
        if full_refresh and limit is not None:
            assert answered_at is not None

            # The oldest answers to the current request first (none at all before them); rows
            # of one run are told apart by the times the table holds (`answered_at`).
            def age(key: int) -> tuple[Any, ...]:
                current = [r for r in self.rows if r.key == key and r.request == self.request(key)]
                if not current:
                    return (0, key)
                last = max(current, key=lambda r: r.seq)
                return (1, last.seq, answered_at(last), key)

            keys.sort(key=age)
        return keys[:limit] if limit is not None else keys

    def answer(self, keys: list[int], *, retry_errors: bool, full_refresh: bool) -> Answered:
        """The rows of `keys` answered by a run: from the checkpoint, or paid now."""
        self.seq += 1
        rows, paid, reused = {}, set(), set()
        for key in keys:
            held = self.ledger.get(key)
            if held and self.reusable(key, retry_errors=retry_errors, full_refresh=full_refresh):
                rows[key] = Row(key, held.request, held.kind, held.seq)
                reused.add(key)
            else:
                rows[key] = Row(key, self.request(key), self.outcome(key), self.seq)
                if self.texts[key] is not None:
                    paid.add(key)
        for key, row in rows.items():
            self.ledger[key] = Held(row.request, row.kind, row.seq)
        return Answered(rows, paid, reused)

    def write(self, new: dict[int, Row], *, mode: str | None = None) -> None:
        rows = self.rows
        mode = mode or self.mode
        if mode == "merge":
            after = [r for r in rows if r.key not in new] + list(new.values())
        elif mode == "append":
            after = [r for r in rows if not (r.key in new and r.request == new[r.key].request)]
            after += list(new.values())
        else:
            after = []
            for key in self.selected():
                if key in new:
                    after.append(new[key])
                    continue
                held = [r for r in rows if r.key == key]
                current = [r for r in held if r.request == self.request(key)]
                pick = current or held
                if pick:
                    after.append(max(pick, key=lambda r: r.seq))
        self.outputs[self.output] = after


@dataclass
class Answered:
    rows: dict[int, Row]
    paid: set[int]
    reused: set[int]


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentServer]:
    with serve_agent(STEADY) as server:
        yield server


class SourceHistories(RuleBasedStateMachine):
    agent: AgentServer

    @initialize()
    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="histories-sources-"))
        self.model = Model(texts={k: f"text {k}" for k in range(8)} | {8: "PERMANENT_ERROR 8"})
        self.model.texts[9] = "FLAKY 9"
        self.agent.configure(STEADY)
        self.write_source()
        plan = agentbatch.plan(
            self.write_job(),
            "local",
            project_dir=self.root,
            endpoints={ENDPOINT: self.agent.url},
        )
        self.call_fingerprint = plan.call_fingerprint
        self.seen = Counter(self.agent.stats().requests_by_key)
        self.backup: tuple[int, list[Row] | None, Path] | None = None
        self.edits = 0

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the project ------------------------------------------------------------------------

    @property
    def source(self) -> Path:
        return self.root / "reviews.csv"

    def output_path(self, number: int | None = None) -> Path:
        n = self.model.output if number is None else number
        # Even outputs are Parquet files, odd ones Delta folders; WAREHOUSE is not mapped: the
        # table lives in the local warehouse's DuckDB file.
        return self.root / (f"answers-{n}.parquet" if n % 2 == 0 else f"answers-{n}")

    @property
    def in_warehouse(self) -> bool:
        return self.model.output == WAREHOUSE

    def warehouse(self, *, read_only: bool) -> Any:
        import duckdb

        return duckdb.connect(str(self.root / ".agentbatch/warehouse/main.duckdb"), read_only)

    def write_source(self) -> None:
        with self.source.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review_id", "text"])
            for key, text in sorted(self.model.texts.items()):
                writer.writerow([key, "" if text is None else text])
                if key == self.model.duplicate:
                    writer.writerow([key, f"another row for {key}"])
            writer.writerow(["", "a row without a key"])  # never selected, never sent

    def write_job(self) -> Path:
        m = self.model
        where = f'  where: "{m.where}"\n' if m.where else ""
        path = self.root / "jobs" / "reviews.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"""name: reviews
source:
  table: {SOURCE}
  key: review_id
  columns: [text]
{where}request: "concat('{m.prompt}: ', text)"
agent:
  endpoint: {ENDPOINT}
  max_retries: 0
  max_concurrency: 4
output:
  table: {OUTPUT}
  mode: {m.mode}
"""
        )
        return path

    def cli(self, command: str, *extra: str) -> tuple[int, dict[str, Any]]:
        args = [
            command, str(self.write_job()), "--json",
            "--table", f"{SOURCE}={self.source}",
            *([] if self.in_warehouse else ["--table", f"{OUTPUT}={self.output_path()}"]),
            "--endpoint", f"{ENDPOINT}={self.agent.url}",
            "--state-dir", str(self.root / "state"), "--project-dir", str(self.root),
        ]  # fmt: skip
        if command == "run":
            args += ["--no-progress", "--show", "0"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main([*args, *extra])
        text = out.getvalue()
        printed = json.loads(text) if text.strip() else {}
        return code, printed.get("summary", printed)

    # -- observing ----------------------------------------------------------------------------

    def fingerprint(self, request: str | None) -> str:
        if request is None:
            return "null-request:" + self.call_fingerprint
        return hashlib.sha256((self.call_fingerprint + request).encode()).hexdigest()

    def table(self, number: int | None = None) -> list[dict[str, Any]] | None:
        if self.in_warehouse:
            if not (self.root / ".agentbatch/warehouse/main.duckdb").exists():
                return None
            with self.warehouse(read_only=True) as con:
                found = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'review_answers'"
                ).fetchall()
                if not found[0][0]:
                    return None
                return con.sql("SELECT * FROM shop.review_answers").to_arrow_table().to_pylist()
        path = self.output_path(number)
        if not path.exists():
            return None
        if path.is_dir():
            from deltalake import DeltaTable

            return DeltaTable(str(path)).to_pyarrow_table().to_pylist()
        return pq.read_table(path).to_pylist()

    def observed(self) -> list[tuple[int, str, str]] | None:
        rows = self.table()
        if rows is None:
            return None
        out = []
        for r in rows:
            error = r["error"]
            kind = (
                "ok"
                if error is None
                else "transient"
                if error.startswith("[transient]")
                else "permanent"
            )
            out.append((r["review_id"], r["request_fingerprint"], kind))
        return sorted(out)

    def expected(self) -> list[tuple[int, str, str]] | None:
        rows = self.model.outputs.get(self.model.output)
        if rows is None:
            return None
        return sorted((r.key, self.fingerprint(r.request), r.kind) for r in rows)

    def check_table(self) -> None:
        assert self.observed() == self.expected()
        requests = {self.fingerprint(r.request): r.request for r in self.model.rows}
        for r in self.table() or []:
            if r["error"] is None:  # an answer is the answer to the row's own request
                request = requests[r["request_fingerprint"]]
                assert r["response"] == f"answer: {request}"[: len("answer: ") + 80]

    def calls(self) -> Counter[str]:
        now = Counter(self.agent.stats().requests_by_key)
        delta, self.seen = now - self.seen, now
        return delta

    def check_calls(self, paid: set[int], calls: Counter[str]) -> None:
        expected = Counter(request_key(self.model.request(k) or "") for k in paid)
        assert calls == expected, (sorted(paid), calls, expected)
        TOTALS["calls"] += sum(calls.values())

    def refused(self, code: int, summary: dict[str, Any], before: Any, exit_code: int) -> None:
        assert code == exit_code, summary
        assert sum(self.calls().values()) == 0
        assert self.observed() == before  # changed nothing, created nothing
        TOTALS[f"refused_{exit_code}"] += 1

    def repeated(self) -> bool:
        """Whether a key the run selects occurs twice in the source."""
        return self.model.duplicate in self.model.selected()

    def merge_refused(self) -> bool:
        keys = Counter(r.key for r in self.model.rows)
        return self.model.mode == "merge" and any(n > 1 for n in keys.values())

    # -- runs ---------------------------------------------------------------------------------

    @rule(
        retry_errors=st.booleans(),
        full_refresh=st.sampled_from([False, False, False, True]),
        limit=st.sampled_from([None, None, 1, 3]),
        max_rows=st.sampled_from([None, None, None, 2, 5]),
    )
    def run(
        self, retry_errors: bool, full_refresh: bool, limit: int | None, max_rows: int | None
    ) -> None:
        m = self.model
        flags = ["--retry-errors"] * retry_errors + ["--full-refresh"] * full_refresh
        flags += ["--limit", str(limit)] if limit else []
        flags += ["--max-rows", str(max_rows)] if max_rows else []
        before = self.observed()
        TOTALS["runs"] += 1
        if self.merge_refused() or self.repeated():
            code, summary = self.cli("run", *flags)
            self.refused(code, summary, before, 2)
            return
        refresh = m.refreshing(full_refresh)
        options = {"retry_errors": retry_errors, "full_refresh": refresh}
        times = {
            (r["review_id"], r["request_fingerprint"]): r["answered_at"] for r in self.table() or []
        }
        keys = m.todo(
            limit=limit,
            answered_at=lambda row: times[(row.key, self.fingerprint(row.request))],
            **options,
        )
        done = [
            k for k in m.selected() if m.done(k, retry_errors=retry_errors, full_refresh=refresh)
        ]
        if max_rows is not None and len(keys) > max_rows:
            # Counted again without the rows the checkpoint answers and the NULL requests
            # (answered with their row error, never sent).
            to_send = [k for k in keys if m.texts[k] is not None and not m.reusable(k, **options)]
            if len(to_send) > max_rows:
                code, summary = self.cli("run", *flags)
                self.refused(code, summary, before, 7)
                return
        code, summary = self.cli("run", *flags)
        answered = m.answer(keys, **options)
        kept = m.kept(answered.rows, full_refresh=refresh)
        m.write({k: row for k, row in answered.rows.items() if k not in kept})
        assert code == 0, summary
        assert summary.get("kept_previous_answer", 0) == len(kept), (summary, kept)
        TOTALS["kept_previous_answer"] += len(kept)
        self.check_calls(answered.paid, self.calls())
        self.check_table()
        errors = sum(r.kind != "ok" for r in answered.rows.values())
        skipped_errors = sum(
            m.done(k, **options).kind != "ok"  # type: ignore[union-attr]
            for k in done
        )
        got = {k: summary.get(k, 0) for k in ("selected", "skipped", "rows", "sent", "errors")}
        assert got == {
            "selected": len(m.selected()),
            "skipped": len(done),
            "rows": len(keys),
            "sent": len(answered.paid),
            "errors": errors,
        }
        assert summary.get("reused", 0) == len(answered.reused)
        assert summary.get("skipped_errors", 0) == skipped_errors
        # The keyless row is selected by no filter (NULL < 7 is NULL), only counted without one.
        assert summary.get("null_keys", 0) == (0 if m.where else 1)
        assert (summary["table_rows"], summary["table_errors"]) == (
            len(m.rows),
            sum(r.kind != "ok" for r in m.rows),
        )
        # The refresh stays unfinished while rows kept their earlier answer, or while rows are
        # left of one that asked every row (a limited run may not reach them all).
        whole = limit is None or len(m.selected()) - len(done) <= limit
        if refresh and (kept or (m.refresh is not None and m.reached and not whole)):
            if m.refresh is None:
                m.refresh, m.reached = m.seq, False
            m.reached = m.reached or whole
        else:
            m.refresh, m.reached = None, False
        TOTALS["reused"] += len(answered.reused)
        TOTALS["limited"] += limit is not None
        TOTALS["limited_refreshes"] += limit is not None and full_refresh

    # Runs are what the model checks: more rules make them a larger share of the steps.
    @rule()
    def plain_run(self) -> None:
        self.run(False, False, None, None)

    @rule()
    def another_plain_run(self) -> None:
        self.run(False, False, None, None)

    @rule(limit=st.sampled_from([1, 2, 4]))
    def limited_run(self, limit: int) -> None:
        self.run(False, False, limit, None)

    @precondition(lambda self: not self.merge_refused())
    @rule(sample=st.sampled_from([1, 3]))
    def estimate(self, sample: int) -> None:
        m = self.model
        keys = Counter(r.key for r in m.rows)
        # An overwrite job's sample is added one row per key: a table holding a key in several
        # rows (an append history) is refused, as a merge run is.
        several = m.mode == "overwrite" and any(n > 1 for n in keys.values())
        if self.repeated() or several:
            before = self.observed()
            code, found = self.cli("estimate", "--sample", str(sample))
            self.refused(code, found, before, 2)
            return
        # Continuing a refresh that asked every row, as the run would.
        refresh = m.refreshing(False)
        candidates = [k for k in m.todo(retry_errors=False, full_refresh=refresh, limit=None)]
        reusable = [
            k for k in candidates if m.reusable(k, retry_errors=False, full_refresh=refresh)
        ]
        # A NULL request is never sent (a run answers it with its row error): the estimate
        # neither counts nor samples it, as the run's own count does not.
        to_send = [k for k in candidates if k not in reusable and m.texts[k] is not None]
        code, found = self.cli("estimate", "--sample", str(sample))
        assert code == 0, found
        assert (found["to_send"], found["reusable"]) == (len(to_send), len(reusable))
        calls = self.calls()
        sampled = {k for k in to_send if calls.get(request_key(m.request(k) or ""), 0)}
        assert len(sampled) == min(sample, len(to_send)) == found["sampled"]
        answered = m.answer(sorted(sampled), retry_errors=False, full_refresh=refresh)
        kept = m.kept(answered.rows, full_refresh=refresh)
        # An overwrite job's sample is added as a merge adds it: keys that left the selection
        # leave the table at the next run, not at an estimate.
        m.write(
            {k: row for k, row in answered.rows.items() if k not in kept},
            mode="merge" if m.mode == "overwrite" else None,
        )
        self.check_calls(answered.paid, calls)
        self.check_table()
        TOTALS["estimates"] += 1

    # -- the source ---------------------------------------------------------------------------

    @rule(
        key=st.integers(0, 12),
        text=st.sampled_from(["edited", "PERMANENT_ERROR", "FLAKY", None, "delete"]),
    )
    def edit_source(self, key: int, text: str | None) -> None:
        self.edits += 1
        if text == "delete":
            if len(self.model.texts) > 3:
                self.model.texts.pop(key, None)
        else:
            self.model.texts[key] = None if text is None else f"{text} {key} v{self.edits}"
        self.write_source()

    @rule(key=st.sampled_from([None, None, 0, 5]))
    def repeat_a_key(self, key: int | None) -> None:
        self.model.duplicate = key
        self.write_source()

    @rule(where=st.sampled_from(WHERES))
    def filter_rows(self, where: str | None) -> None:
        self.model.where = where

    @rule(prompt=st.sampled_from(PROMPTS))
    def edit_prompt(self, prompt: str) -> None:
        self.model.prompt = prompt

    @rule(mode=st.sampled_from(["merge", "append", "overwrite"]))
    def change_mode(self, mode: str) -> None:
        self.model.mode = mode

    @rule()
    def agent_flakes_or_recovers(self) -> None:
        self.model.flaky = not self.model.flaky
        self.agent.configure(FLAKY if self.model.flaky else STEADY)

    # -- the output and the state ------------------------------------------------------------

    @rule()
    def drop_output(self) -> None:
        if self.in_warehouse:
            if self.table() is not None:
                with self.warehouse(read_only=False) as con:
                    con.execute("DROP TABLE shop.review_answers").fetchall()
            self.model.outputs[WAREHOUSE] = None
            return
        path = self.output_path()
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        self.model.outputs[self.model.output] = None

    @precondition(lambda self: self.model.outputs.get(self.model.output) is not None)
    @rule()
    def truncate_output(self) -> None:
        if self.in_warehouse:
            with self.warehouse(read_only=False) as con:
                con.execute("DELETE FROM shop.review_answers").fetchall()
            self.model.outputs[WAREHOUSE] = []
            return
        path = self.output_path()
        if path.is_dir():
            from deltalake import DeltaTable, write_deltalake

            schema = DeltaTable(str(path)).to_pyarrow_table().schema
            write_deltalake(str(path), pa.Table.from_pylist([], schema=schema), mode="overwrite")
        else:
            schema = pq.read_schema(path)
            pq.write_table(pa.Table.from_pylist([], schema=schema), path)
        self.model.outputs[self.model.output] = []

    @rule(number=st.integers(0, WAREHOUSE))
    def remap_output(self, number: int) -> None:
        self.model.output = number

    @precondition(lambda self: not self.in_warehouse)
    @rule()
    def back_up_output(self) -> None:
        copy = self.root / "backup"
        shutil.rmtree(copy, ignore_errors=True)
        path = self.output_path()
        if path.is_dir():
            shutil.copytree(path, copy)
        elif path.exists():
            copy.mkdir()
            shutil.copy(path, copy / path.name)
        rows = self.model.outputs.get(self.model.output)
        self.backup = (self.model.output, None if rows is None else list(rows), copy)

    @precondition(lambda self: self.backup is not None)
    @rule()
    def restore_output(self) -> None:
        """The user puts an older copy of the output table back."""
        assert self.backup is not None
        number, rows, copy = self.backup
        self.model.output = number
        self.drop_output()
        path = self.output_path()
        if rows is not None:
            if path.suffix:
                shutil.copy(copy / path.name, path)
            else:
                shutil.copytree(copy, path)
        self.model.outputs[number] = None if rows is None else list(rows)

    @rule()
    def delete_state(self) -> None:
        shutil.rmtree(self.root / "state", ignore_errors=True)
        self.model.ledger.clear()
        self.model.refresh, self.model.reached = None, False


@pytest.mark.slow
def test_histories_with_changing_sources_match_the_model(agent: AgentServer) -> None:
    SourceHistories.agent = agent
    runner = SourceHistories.TestCase
    runner.settings = settings(
        max_examples=int(os.environ.get("AGENTBATCH_HISTORY_EXAMPLES", "30")),
        stateful_step_count=int(os.environ.get("AGENTBATCH_HISTORY_STEPS", "40")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("CI") is not None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate]
        if os.environ.get("AGENTBATCH_NO_SHRINK")
        else list(Phase),
    )
    runner().runTest()
    assert TOTALS["runs"] and TOTALS["estimates"], dict(TOTALS)
    record_figures("run histories with changing sources (local)", dict(TOTALS))


@pytest.mark.slow
def test_a_history_where_a_refresh_keeps_answers_matches_the_model(agent: AgentServer) -> None:
    """The model over one fixed history, so every run of the suite covers what the random ones
    rarely draw: a `--full-refresh` while the agent fails a row transiently (it keeps its
    earlier answer), plain runs that continue that refresh (still failing, then a row whose
    request changed meanwhile), a limited run and an estimate of what is left, then the run
    that finishes it, and a refresh of every row again."""
    SourceHistories.agent = agent
    machine = SourceHistories()
    kept_before = TOTALS["kept_previous_answer"]
    try:
        machine.start()
        machine.plain_run()
        machine.agent_flakes_or_recovers()  # key 9 (FLAKY) now fails transiently
        machine.run(retry_errors=False, full_refresh=True, limit=None, max_rows=None)
        machine.plain_run()  # asks key 9 again: it fails again, and keeps its answer
        machine.edit_source(key=3, text="FLAKY")
        machine.change_mode("overwrite")
        machine.plain_run()
        machine.agent_flakes_or_recovers()
        machine.limited_run(limit=1)
        machine.estimate(sample=1)
        machine.plain_run()
        machine.run(retry_errors=False, full_refresh=True, limit=None, max_rows=None)
    finally:
        machine.teardown()
    assert TOTALS["kept_previous_answer"] >= kept_before + 2, dict(TOTALS)
