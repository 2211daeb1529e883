"""A small project for run-history tests: a reviews CSV, a job whose prompt, mode and stream
setting can change between runs, and a run helper against a loopback agent."""

from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import agentbatch
from agentbatch.testing.agent_server import AgentServer

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
  key: review_id
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

    def run(self, **options: Any) -> dict[str, Any]:
        with agentbatch.run(
            self.write_job(),
            tables={SOURCE: self.source, OUTPUT: self.output},
            endpoints={ENDPOINT: self.agent.url},
            state_dir=self.state,
            project_dir=self.root,
            progress=False,
            **options,
        ) as result:
            return dict(result.summary)

    def estimate(self, **options: Any) -> Any:
        """`agentbatch.estimate` of the job (its sample sent for real)."""
        return agentbatch.estimate(
            self.write_job(),
            tables={SOURCE: self.source, OUTPUT: self.output},
            endpoints={ENDPOINT: self.agent.url},
            state_dir=self.state,
            project_dir=self.root,
            progress=False,
            **options,
        )

    def start_cli(self, *flags: str) -> subprocess.Popen[bytes]:
        """`agentbatch run` of the job in a child process (to be killed), with `flags`."""
        args = [
            sys.executable, "-m", "agentbatch", "run", str(self.write_job()), "--no-progress",
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
        return pq.read_table(self.output).to_pylist()

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
