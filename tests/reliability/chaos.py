"""The chaos harness: a real job, run as a CLI process against the fault-injecting agent server,
SIGKILLed at random moments (its ledger sometimes torn on top) and resumed until it finishes.

Invariants checked after every kill and at the end of every trial:

* checkpoint files are sound after a kill: the ledger passes SQLite's quick_check and the output
  file reads;
* a run that resumes from a damaged ledger does not crash (no traceback, exit 0 or our SIGKILL);
* no row answered at the moment of a kill (in the surviving ledger, or in the output) is sent again
  afterwards: the server's per-input request counts of those rows do not move;
* at the end every source key is in the output exactly once, and every row has an answer or an
  error message, never both, never neither.
"""

from __future__ import annotations

import csv
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from agentbatch.results import TRANSIENT_ERROR
from agentbatch.testing import request_key

from .processes import PYTHON, AgentProcess, child_env

# Mixed faults (per attempt, 35% in all). Hangs outlast the job's 2 s timeout.
FAULT_MIX: dict[str, Any] = {
    "latency_ms": 15.0,
    "jitter_ms": 10.0,
    "p_rate_limit": 0.04,
    "p_rate_limit_no_retry_after": 0.03,
    "p_server_error": 0.05,
    "p_unavailable": 0.04,
    "p_connection_reset": 0.04,
    "p_hang": 0.01,
    "p_malformed_json": 0.02,
    "p_truncated_stream": 0.05,
    "p_slow_stream": 0.03,
    "p_stream_error": 0.04,
    "retry_after_s": 0.3,
    "hang_s": 2.5,
    "slow_chunk_ms": 30.0,
}
# Every 40th row can never succeed (the server answers 400 to its marker).
PERMANENT_EVERY = 40
MAX_LAUNCHES = 12
OUTPUT_TABLE = "main.chaos.answers"
SOURCE_TABLE = "main.chaos.rows"

Damage = Literal["none", "wal_truncate", "wal_garble", "db_truncate"]


def job_yaml(stream: bool) -> str:
    return f"""\
name: chaos_{"stream" if stream else "json"}
source:
  table: {SOURCE_TABLE}
  key: id
  columns: [body]
request: "concat('Row ', id, ': ', body)"
agent:
  endpoint: apps/chaos-agent
  stream: {"true" if stream else "false"}
  timeout_seconds: 2
  max_retries: 4
output:
  table: {OUTPUT_TABLE}
  mode: merge
"""


def row_text(i: int) -> tuple[str, str]:
    """(body, the prompt the agent receives) of row `i`."""
    body = f"ticket {i}: the printer is on fire" + (
        " PERMANENT_ERROR" if i % PERMANENT_EVERY == 7 else ""
    )
    return body, f"Row {i}: {body}"


@dataclass
class Project:
    root: Path
    rows: int

    @property
    def job(self) -> Path:
        return self.root / "jobs" / "chaos.yml"

    @property
    def source(self) -> Path:
        return self.root / "rows.csv"

    @property
    def output(self) -> Path:
        return self.root / "out.parquet"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def ledgers(self) -> list[Path]:
        return sorted(self.state.glob("*.ledger.sqlite"))

    def quarantined(self) -> list[Path]:
        return sorted(
            p for p in self.state.glob("*.corrupt-*") if not p.name.endswith(("-wal", "-shm"))
        )

    def server_keys(self) -> dict[str, int]:
        """The agent server's input key of every row -> the row's id."""
        return {request_key(row_text(i)[1]): i for i in range(self.rows)}

    def cli_args(self, url: str) -> list[str]:
        return [
            "run",
            str(self.job),
            "--table",
            f"{SOURCE_TABLE}={self.source}",
            "--table",
            f"{OUTPUT_TABLE}={self.output}",
            "--endpoint",
            f"apps/chaos-agent={url}",
            "--state-dir",
            str(self.state),
            "--project-dir",
            str(self.root),
            "--no-progress",
        ]


def make_project(root: Path, rows: int, stream: bool) -> Project:
    (root / "jobs").mkdir(parents=True)
    project = Project(root, rows)
    project.job.write_text(job_yaml(stream), encoding="utf-8")
    with project.source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "body"])
        for i in range(rows):
            writer.writerow([i, row_text(i)[0]])
    return project


# --- reading checkpoints the way a resumed run will ------------------------------------------


def ledger_snapshot(ledger: Path, scratch: Path) -> tuple[bool, set[int]]:
    """(sound, answered ids) of a ledger as a new run would find it.

    The database and its WAL are copied without the shared-memory index, so SQLite recovers the
    WAL from scratch (checksums decide which frames count), exactly as a fresh process does. An
    unsound file is what the run quarantines: none of its answers count."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    copy = scratch / ledger.name
    shutil.copyfile(ledger, copy)
    wal = Path(str(ledger) + "-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(str(copy) + "-wal"))
    try:
        conn = sqlite3.connect(copy)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                return False, set()
            # A transient failure is sent again by design: it is no answer.
            keys = conn.execute("SELECT key FROM answers WHERE transient = 0").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False, set()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True, {int(k) for (k,) in keys}


def output_ids(project: Project, *, answered_only: bool = False) -> list[int]:
    """The output's keys (with `answered_only`, not those that failed transiently: they are sent
    again by design)."""
    if not project.output.exists():
        return []
    table = pq.read_table(project.output, columns=["id", "error"]).to_pylist()
    return [
        int(r["id"])
        for r in table
        if not (answered_only and (r["error"] or "").startswith(TRANSIENT_ERROR))
    ]


def damage_ledger(project: Project, rng: random.Random) -> Damage:
    """Tear the ledger's tail the way a dying disk write would (or leave it alone)."""
    ledgers = project.ledgers()
    if not ledgers:
        return "none"
    ledger = ledgers[0]
    wal = Path(str(ledger) + "-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    choice = rng.random()
    if choice < 0.5:
        return "none"
    if wal_size > 64 and choice < 0.7:
        with wal.open("r+b") as f:
            f.truncate(rng.randint(32, wal_size - 1))
        return "wal_truncate"
    if wal_size > 64 and choice < 0.9:
        span = rng.randint(1, min(4096, wal_size - 32))
        with wal.open("r+b") as f:
            f.seek(wal_size - span)
            f.write(rng.randbytes(span))
        return "wal_garble"
    size = ledger.stat().st_size
    if size > 512:
        with ledger.open("r+b") as f:
            f.truncate(rng.randint(100, size - 1))
        return "db_truncate"
    return "none"


# --- one trial -----------------------------------------------------------------------------


@dataclass
class TrialReport:
    seed: int
    stream: bool
    launches: int = 0
    launch_seconds: list[float] = field(default_factory=list)
    kills: int = 0
    # Kills that landed while the run was calling the agent (after its first request).
    kills_mid_run: int = 0
    damage: Counter[str] = field(default_factory=Counter)
    quarantined: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    rows: int = 0
    ok_rows: int = 0
    error_rows: int = 0
    rows_lost: int = 0
    duplicate_keys: int = 0
    resent_after_answer: int = 0
    problems: list[str] = field(default_factory=list)


def _wait_for_first_request(
    agent: AgentProcess, before: int, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and proc.poll() is None:
        if agent.stats()["requests_total"] > before:
            return
        time.sleep(0.02)


def _wait_quiet(agent: AgentProcess) -> None:
    """Until the server has finished with the killed client's requests (they were all counted)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and agent.stats()["in_flight"] > 0:
        time.sleep(0.02)


def _launch(project: Project, url: str, number: int) -> tuple[subprocess.Popen[bytes], Path]:
    err = project.root / f"launch-{number}.stderr"
    with err.open("wb") as err_file, (project.root / f"launch-{number}.stdout").open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "agentbatch", *project.cli_args(url)],
            cwd=project.root,
            env=child_env(),
            stdout=out,
            stderr=err_file,
        )
    return proc, err


def run_trial(agent: AgentProcess, root: Path, seed: int, rows: int = 300) -> TrialReport:
    rng = random.Random(seed)
    stream = seed % 2 == 1
    project = make_project(root, rows, stream)
    report = TrialReport(seed=seed, stream=stream, rows=rows)
    agent.reset()
    agent.configure(seed=seed, **FAULT_MIX)
    kills_planned = rng.randint(1, 3)
    # After a kill: the rows answered at that moment, and their request counts then.
    watch: tuple[set[int], dict[str, int]] | None = None
    keys = project.server_keys()
    finished = False
    while not finished:
        report.launches += 1
        if report.launches > MAX_LAUNCHES:
            report.problems.append(f"not finished after {MAX_LAUNCHES} launches")
            break
        before = agent.stats()["requests_total"]
        launched = time.monotonic()
        proc, err = _launch(project, agent.url, report.launches)
        try:
            if report.kills < kills_planned:
                # The first kill always lands while the run calls the agent; later ones may come
                # during start-up or planning too.
                if report.kills and rng.random() < 0.25:
                    time.sleep(rng.uniform(0.2, 1.6))
                else:
                    _wait_for_first_request(agent, before, proc)
                    time.sleep(rng.uniform(0.0, 1.0))
                if proc.poll() is None:
                    calling = agent.stats()["requests_total"] > before
                    proc.send_signal(signal.SIGKILL)
                    report.kills += 1
                    report.kills_mid_run += calling
            returncode = proc.wait(timeout=180)
            report.launch_seconds.append(round(time.monotonic() - launched, 2))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = err.read_text(encoding="utf-8", errors="replace")
        if "Traceback" in stderr:
            report.problems.append(f"launch {report.launches}: traceback:\n{stderr[-3000:]}")
        if returncode not in (0, -signal.SIGKILL):
            report.problems.append(
                f"launch {report.launches}: exit {returncode}:\n{stderr[-3000:]}"
            )
            break
        _wait_quiet(agent)
        counts: dict[str, int] = agent.stats()["requests_by_key"]
        unknown = set(counts) - set(keys)
        if unknown:
            report.problems.append(f"server saw inputs that are no row's: {sorted(unknown)[:3]}")
        if watch is not None:
            answered, then = watch
            for key, row in keys.items():
                if row in answered and counts.get(key, 0) > then.get(key, 0):
                    report.resent_after_answer += 1
                    report.problems.append(
                        f"row {row} was answered before kill {report.kills} and sent again"
                    )
        finished = returncode == 0
        if finished:
            break
        # Killed: the checkpoints must be sound as the kill left them.
        answered = set(output_ids(project, answered_only=True))
        for ledger in project.ledgers():
            sound, _ = ledger_snapshot(ledger, root / "scratch")
            if not sound:
                report.problems.append(f"kill {report.kills}: ledger unsound after SIGKILL")
        damage = damage_ledger(project, rng)
        report.damage[damage] += 1
        for ledger in project.ledgers():
            _, ids = ledger_snapshot(ledger, root / "scratch")
            answered |= ids
        watch = (answered, dict(counts))
    if not report.kills_mid_run:
        report.problems.append("no kill landed mid-run: the trial proves nothing about kills")
    report.quarantined = len(project.quarantined())
    stats = agent.stats()
    report.faults.update(stats["faults"])
    report.requests = stats["requests_total"]
    if finished:
        _check_output(project, report)
    return report


def _check_output(project: Project, report: TrialReport) -> None:
    table = pq.read_table(project.output).to_pylist()
    ids = [int(r["id"]) for r in table]
    counted = Counter(ids)
    report.duplicate_keys = sum(n - 1 for n in counted.values() if n > 1)
    report.rows_lost = len(set(range(project.rows)) - set(ids))
    extra = set(ids) - set(range(project.rows))
    if extra:
        report.problems.append(f"output has keys that are no source row's: {sorted(extra)[:5]}")
    for row in table:
        has_answer = row["response"] is not None
        has_error = row["error"] is not None and row["error"].strip() != ""
        if has_answer == has_error:
            report.problems.append(
                f"row {row['id']}: response={row['response']!r} error={row['error']!r}"
            )
        report.ok_rows += has_answer and not has_error
        report.error_rows += has_error
    for i in range(project.rows):
        if i % PERMANENT_EVERY == 7 and counted[i]:
            row = next(r for r in table if int(r["id"]) == i)
            if row["error"] is None or "PERMANENT_ERROR" not in row["error"]:
                report.problems.append(f"row {i}: the permanent failure is not its error")


def sum_reports(reports: list[TrialReport]) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    damage: Counter[str] = Counter()
    for r in reports:
        faults.update(r.faults)
        damage.update(r.damage)
    return {
        "trials": len(reports),
        "stream_trials": sum(r.stream for r in reports),
        "launches": sum(r.launches for r in reports),
        "kills_survived": sum(r.kills for r in reports),
        "kills_mid_run": sum(r.kills_mid_run for r in reports),
        "ledger_damage": dict(sorted(damage.items())),
        "ledgers_quarantined": sum(r.quarantined for r in reports),
        "requests": sum(r.requests for r in reports),
        "faults_injected": sum(v for k, v in faults.items() if k != "permanent"),
        "faults_by_kind": dict(sorted(faults.items())),
        "rows": sum(r.rows for r in reports),
        "ok_rows": sum(r.ok_rows for r in reports),
        "error_rows": sum(r.error_rows for r in reports),
        "rows_lost": sum(r.rows_lost for r in reports),
        "duplicate_keys": sum(r.duplicate_keys for r in reports),
        "resent_after_answer": sum(r.resent_after_answer for r in reports),
    }
