"""SIGKILL during the write step, run after run: the answers are all paid and checkpointed, and the
run is writing them into the output table (a Parquet file, a Delta folder, or the local
warehouse's DuckDB file) when it is killed. The table must then be as it was before the run or
as the run leaves it, never in between (no key lost, none twice), and the next run must finish
it from the checkpoint without paying again.

The child is the real CLI (`python -m agentbatch run ...`) with one addition: it says on stdout
when its engine starts writing the answers, so the kill can be aimed at the write step (a few
moments after that line, different each time) rather than at the calls.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentbatch.cli.main import main as cli_main
from agentbatch.testing.agent_server import AgentServer

from .history import ENDPOINT, OUTPUT, SOURCE
from .processes import child_env, kill_after

ROOT = Path(__file__).resolve().parents[2]
ROWS = 1000
# Moments after the write begins (s): at once, within it, and about when it ends.
DELAYS = (0.0, 0.01, 0.03, 0.08)

CHILD = textwrap.dedent(
    """
    import sys

    from agentbatch.engines.local import LocalEngine

    write = LocalEngine.write_results

    def announced(self, *args, **kwargs):
        print("writing", flush=True)
        return write(self, *args, **kwargs)

    LocalEngine.write_results = announced

    from agentbatch.cli.main import main

    sys.exit(main(sys.argv[1:]))
    """
)


class Project:
    def __init__(self, root: Path, agent: AgentServer, output: str) -> None:
        self.root = root
        self.agent = agent
        self.kind = output
        self.prompt = "Review"
        self.mode = "merge"
        self.keys = range(ROWS)
        (root / "child.py").write_text(CHILD)

    @property
    def output(self) -> Path | None:
        return {
            "parquet": self.root / "answers.parquet",
            "delta": self.root / "answers",
            "warehouse": None,
        }[self.kind]

    def write_source(self) -> None:
        with (self.root / "reviews.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review_id", "text"])
            for key in self.keys:
                writer.writerow([key, f"review number {key} " + "lorem ipsum " * 10])

    def args(self) -> list[str]:
        job = self.root / "jobs" / "reviews.yml"
        job.parent.mkdir(exist_ok=True)
        job.write_text(
            f"""name: reviews
source: {{table: {SOURCE}, key: review_id, columns: [text]}}
request: "concat('{self.prompt}: ', text)"
agent: {{endpoint: {ENDPOINT}, max_retries: 0}}
output: {{table: {OUTPUT}, mode: {self.mode}}}
"""
        )
        output = [] if self.output is None else ["--table", f"{OUTPUT}={self.output}"]
        return [
            "run", str(job), "--json", "--no-progress", "--show", "0",
            "--table", f"{SOURCE}={self.root / 'reviews.csv'}", *output,
            "--endpoint", f"{ENDPOINT}={self.agent.url}",
            "--state-dir", str(self.root / "state"), "--project-dir", str(self.root),
        ]  # fmt: skip

    def run(self) -> dict[str, Any]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main(self.args())
        assert code == 0, out.getvalue()
        summary: dict[str, Any] = json.loads(out.getvalue())["summary"]
        return summary

    def kill_while_writing(self, delay: float) -> bool:
        """Run the job in a child, SIGKILL it `delay` s after its write step begins. Whether it
        was still running then."""
        child = subprocess.Popen(
            [sys.executable, str(self.root / "child.py"), *self.args()],
            cwd=ROOT,
            env=child_env({"PYTHONPATH": str(ROOT)}),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert child.stdout is not None
            for line in child.stdout:
                if line.strip() == "writing":
                    break
            else:
                raise AssertionError("the child never reached its write step")
            running = kill_after(child, delay)
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        return running

    def table(self) -> list[dict[str, Any]]:
        if self.output is None:
            import duckdb

            path = self.root / ".agentbatch" / "warehouse" / "main.duckdb"
            with duckdb.connect(str(path), read_only=True) as con:
                rows: list[dict[str, Any]] = (
                    con.sql("SELECT * FROM shop.review_answers").to_arrow_table().to_pylist()
                )
                return rows
        if self.output.is_dir():
            from deltalake import DeltaTable

            return DeltaTable(str(self.output)).to_pyarrow_table().to_pylist()
        return pq.read_table(self.output).to_pylist()

    def answers(self) -> Counter[tuple[int, str]]:
        """(key, prompt answered) of every row."""
        return Counter(
            (r["review_id"], r["response"].removeprefix("answer: ").split(":")[0])
            for r in self.table()
        )


def whole(keys: range, *prompts: str) -> Counter[tuple[int, str]]:
    return Counter((k, p) for k in keys for p in prompts)


@pytest.mark.slow
@pytest.mark.parametrize("output", ["parquet", "delta", "warehouse"])
def test_a_kill_while_writing_leaves_the_old_table_or_the_new_one(
    tmp_path: Path, agent: AgentServer, output: str
) -> None:
    p = Project(tmp_path, agent, output)
    p.write_source()
    first = agent.stats().requests_total
    p.run()
    paid = agent.stats().requests_total
    assert paid == first + ROWS
    landed = 0
    # merge replaces every row, append adds a row per key, overwrite rewrites the table (and
    # drops the keys that left the source); each step goes on from the last one's table.
    steps = list(zip(("merge", "append", "overwrite", "merge"), DELAYS, strict=True))
    for step, (mode, delay) in enumerate(steps):
        before = p.answers()
        p.mode = mode
        p.prompt = f"Prompt{step}"
        if mode == "overwrite":
            p.keys = range(ROWS - 10 * (step + 1))  # the source loses rows too
            p.write_source()
        if mode == "merge":
            new = whole(p.keys, p.prompt) + Counter(
                {a: n for a, n in before.items() if a[0] not in p.keys}
            )
        elif mode == "append":
            new = before + whole(p.keys, p.prompt)
        else:
            new = whole(p.keys, p.prompt)
        landed += p.kill_while_writing(delay)
        # Every answer was paid and checkpointed before the write began.
        assert agent.stats().requests_total == paid + len(p.keys)
        paid = agent.stats().requests_total
        assert p.answers() in (before, new), (step, mode, delay)
        # The next run writes from the checkpoint: nothing paid again, nothing lost or doubled.
        summary = p.run()
        assert (agent.stats().requests_total, summary["sent"]) == (paid, 0)
        assert p.answers() == new, (step, mode, delay)
    assert landed >= 1, "no kill landed while the run was still writing"
