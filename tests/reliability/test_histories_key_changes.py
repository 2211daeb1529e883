"""Runs of one job whose `source.key` changes between runs, over the target (and checkpoint) the
earlier key wrote.

A run either refuses before any call, naming the job's key, or leaves a table that holds exactly
the rows its mode promises: merge one row per key, append one row per key and request, overwrite
one row per selected key; each answer the answer to its own row's request (never another key's),
and no key with two rows for one request. Three changes:

* the key becomes a column the target already holds (a passthrough column of the old key), whose
  values repeat in the target: rows of the old key that the new key makes one. Merge refuses
  (the table holds a key twice). Append held the pair (key, request) twice and wrote the new
  answer into both rows, and the counts said more rows were done than were selected; it now
  refuses as merge does, and an overwrite keeps one row per key and counts the source's rows;
* the key column is renamed in the source and the job follows: the target has no column for it,
  merge and append refuse, overwrite replaces the table (keeping none of its rows);
* the key changes back: the table written by the new key serves the old one again;
* the key is renamed in case only (`review_id` -> `Review_ID`): the same column to every engine
  (column names are case-insensitive), so the table of the old spelling serves the new one and
  the checkpoint's answers the table does not hold yet (a run killed before its write) are
  written without paying for them again.

Each on the local target and on the databricks-sql target (the loopback warehouse), over the
REST fallback and push-down. (A key of two columns is not a spec value: `source.key` is one
name, so a composite key is built in `source.query`, a column of another name: the rename case.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import databricks.sql
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.errors import UsageError
from agentbatch.testing.agent_server import AgentServer
from tests.support.databricks_env import isolate
from tests.support.warehouse.server import Warehouse

from .history import ENDPOINT, OUTPUT, REPO, SOURCE
from .processes import child_env
from .warehouse_history import APP, MODEL, TARGET, TOKEN, serve


class Project:
    def __init__(self, root: Path, agent: AgentServer) -> None:
        self.root = root
        self.agent = agent
        self.key = "review_id"
        self.columns: tuple[str, ...] = ("sku", "text")
        self.mode = "merge"
        self.prompt = "Review"

    @property
    def output(self) -> Path:
        return self.root / "answers.parquet"

    def source(self, header: str, rows: list[tuple[int, int, str]]) -> None:
        lines = [header, *(",".join(str(v) for v in row) for row in rows)]
        (self.root / "reviews.csv").write_text("\n".join(lines) + "\n")

    endpoint = ENDPOINT
    target: tuple[str, ...] = ()  # the run's target: the local one

    def job(self) -> Path:
        path = self.root / "jobs" / "reviews.yml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            f"name: reviews\nsource: {{table: {SOURCE}, key: {self.key}, "
            f"columns: [{', '.join(self.columns)}]}}\n"
            f"request: \"concat('{self.prompt}: ', text)\"\n"
            f"agent: {{endpoint: {self.endpoint}, max_retries: 0}}\n"
            f"output: {{table: {OUTPUT}, mode: {self.mode}}}\n"
        )
        return path

    def options(self, **options: Any) -> dict[str, Any]:
        return {
            "tables": {SOURCE: self.root / "reviews.csv", OUTPUT: self.output},
            "endpoints": {ENDPOINT: self.agent.url},
            "state_dir": self.root / "state",
            "project_dir": self.root,
            "progress": False,
            **options,
        }

    def run(self, **options: Any) -> tuple[dict[str, Any], int]:
        """The run's summary and the calls it paid."""
        before = self.agent.stats().requests_total
        with agentbatch.run(self.job(), *self.target, **self.options(**options)) as result:
            summary = dict(result.summary)
        return summary, self.agent.stats().requests_total - before

    def refused(self, match: str, **options: Any) -> None:
        """The run stops before any call with a message matching `match`, the table unchanged."""
        before, paid = self.table(), self.agent.stats().requests_total
        with pytest.raises(UsageError, match=match):
            self.run(**options)
        with pytest.raises(UsageError, match=match):
            agentbatch.estimate(self.job(), *self.target, **self.options(sample=1))
        assert self.agent.stats().requests_total == paid
        assert self.table() == before

    def table(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = pq.read_table(self.output).to_pylist()
        return rows

    def column_names(self) -> list[str]:
        return list(pq.read_schema(self.output).names)

    def killed_before_writing(self) -> None:
        """`agentbatch run` of the job in a child process that is SIGKILLed when its engine
        begins writing the answers: every answer paid and checkpointed, none in the table."""
        child = self.root / "child.py"
        child.write_text(KILLED_AT_WRITE)
        args = [
            "run", str(self.job()), "--no-progress", "--show", "0",
            "--table", f"{SOURCE}={self.root / 'reviews.csv'}",
            "--table", f"{OUTPUT}={self.output}", "--endpoint", f"{ENDPOINT}={self.agent.url}",
            "--state-dir", str(self.root / "state"), "--project-dir", str(self.root),
        ]  # fmt: skip
        done = subprocess.run(
            [sys.executable, str(child), *args],
            cwd=REPO,
            env=child_env({"PYTHONPATH": str(REPO)}),
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]

    def unwritten(self, keys: list[int]) -> None:
        """Answers of `keys` the checkpoint holds and the table does not: on the local target
        a run killed at its write step (`killed_before_writing`)."""
        self.killed_before_writing()

    def check(self, texts: dict[int, str]) -> None:
        """The table as its mode promises for the selection `texts` (key -> text): each key's
        current answer once, every answer its own row's, no (key, request) twice."""
        rows = self.table()
        pairs = Counter((r[self.key], r["request_fingerprint"]) for r in rows)
        assert max(pairs.values()) == 1, pairs
        for row in rows:  # the agent answers `answer: <request>`: the row's own text
            assert row["response"].endswith(f": {row['text']}"), row
        current = [r for r in rows if r["response"] == f"answer: {self.prompt}: {r['text']}"]
        assert sorted((r[self.key], r["text"]) for r in current) == sorted(texts.items())
        if self.mode != "append":
            assert sorted(r[self.key] for r in rows) == sorted(texts), rows


# The CLI, SIGKILLed by itself when the local engine begins writing the answers.
KILLED_AT_WRITE = textwrap.dedent(
    """
    import os
    import signal
    import sys

    from agentbatch.engines.local import LocalEngine

    def killed(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    LocalEngine.write_results = killed

    from agentbatch.cli.main import main

    sys.exit(main(sys.argv[1:]))
    """
)


class WarehouseProject(Project):
    """The same job on the databricks-sql target (the loopback warehouse through the unmodified
    connector): over the REST fallback (`rest`) or pushed down to the warehouse's ai_query."""

    def __init__(self, root: Path, agent: AgentServer, wh: Warehouse, path: str) -> None:
        super().__init__(root, agent)
        self.wh = wh
        self.rest = path == "rest"
        self.endpoint = APP if self.rest else MODEL
        self.target = (TARGET,)
        (root / "agentbatch.yml").write_text(
            f"targets:\n  {TARGET}:\n    engine: databricks-sql\n"
            f"    host: http://{wh.host}:{wh.port}\n    warehouse_id: {wh.warehouse_id}\n"
        )

    def options(self, **options: Any) -> dict[str, Any]:
        return {
            "settings": {
                "host": f"http://{self.wh.host}:{self.wh.port}",
                "warehouse_id": self.wh.warehouse_id,
            },
            "endpoints": {APP: self.agent.url} if self.rest else {},
            "state_dir": self.root / "state",
            "project_dir": self.root,
            "progress": False,
            **options,
        }

    def sql(self, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with databricks.sql.connect(**self.wh.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute(statement)
            names = [d[0] for d in cur.description or ()]
            return names, [tuple(r) for r in cur.fetchall()] if cur.description else []

    def source(self, header: str, rows: list[tuple[int, int, str]]) -> None:
        first, second, text = header.split(",")
        self.sql(f"CREATE SCHEMA IF NOT EXISTS {SOURCE.rsplit('.', 1)[0]}")
        self.sql(
            f"CREATE OR REPLACE TABLE {SOURCE} ({first} BIGINT, {second} BIGINT, {text} STRING)"
        )
        self.sql(f"INSERT INTO {SOURCE} VALUES {', '.join(repr(row) for row in rows)}")

    def table(self) -> list[dict[str, Any]]:
        names, rows = self.sql(f"SELECT * FROM {OUTPUT}")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def column_names(self) -> list[str]:
        return self.sql(f"SELECT * FROM {OUTPUT} LIMIT 0")[0]

    def unwritten(self, keys: list[int]) -> None:
        """Paid now, then gone from the table (the checkpoint, when the path keeps one, still
        holds their answers)."""
        self.run()
        self.sql(f"DELETE FROM {OUTPUT} WHERE review_id IN ({', '.join(map(str, keys))})")


@pytest.fixture(
    params=[
        "local",
        *(pytest.param(path, marks=pytest.mark.slow) for path in ("rest", "push-down")),
    ]
)
def project(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    agent: AgentServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Project]:
    """The project on the local target, or on the warehouse over either path."""
    if request.param == "local":
        yield Project(tmp_path, agent)
        return
    isolate(monkeypatch, tmp_path / "auth", token=TOKEN)
    with serve(agent) as wh:
        yield WarehouseProject(tmp_path, agent, wh, request.param)


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_a_key_changed_to_a_column_the_target_holds_twice(project: Project, mode: str) -> None:
    p = project
    p.mode = mode
    # Reviews 1 and 2 are of one product (sku 10), with the same text: one request.
    p.source("review_id,sku,text", [(1, 10, "a"), (2, 10, "a"), (3, 20, "c")])
    summary, paid = p.run()
    assert (summary["selected"], paid) == (3, 3)
    # The job is keyed by product now; the source holds one review per product.
    p.source("review_id,sku,text", [(1, 10, "a"), (3, 20, "c")])
    p.key, p.columns = "sku", ("review_id", "text")
    if mode != "overwrite":
        # Two rows of the table answer sku 10's request: neither mode can keep one row per
        # key (merge) or per key and request (append). The message names the job's key.
        p.refused(
            r"holds 1 key\(s\) in more than one row.*'sku', the job's source.key.*mode overwrite"
        )
        p.mode = "overwrite"  # the way out the message names
    summary, paid = p.run()
    # The table held both products' answers: nothing to pay, each source row counted once.
    assert (summary["selected"], summary["skipped"], paid) == (2, 2, 0), summary
    p.check({10: "a", 20: "c"})
    p.mode = mode
    summary, paid = p.run()
    assert (summary["selected"], summary["skipped"], paid) == (2, 2, 0), summary
    p.check({10: "a", 20: "c"})
    # An edited prompt: every row paid once more, in the mode's own way.
    p.prompt = "Judge"
    summary, paid = p.run(limit=1)
    assert paid == 1
    summary, paid = p.run()
    assert (summary["skipped"], paid) == (1, 1), summary
    p.check({10: "a", 20: "c"})
    summary, paid = p.run(full_refresh=True)
    assert paid == 2
    p.check({10: "a", 20: "c"})
    # Back to the review key: the table (one row per product now) serves it again.
    p.key, p.columns = "review_id", ("sku", "text")
    summary, paid = p.run()
    assert (summary["selected"], summary["skipped"], paid) == (2, 2, 0), summary
    p.check({1: "a", 3: "c"})


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_a_key_column_renamed_in_the_source(project: Project, mode: str) -> None:
    p = project
    p.mode = mode
    p.source("review_id,sku,text", [(1, 10, "a"), (2, 11, "b"), (3, 20, "c")])
    summary, paid = p.run(limit=2)  # a checkpoint and a table of the old key
    assert paid == 2
    p.source("id,sku,text", [(1, 10, "a"), (2, 11, "b"), (3, 20, "c")])
    p.key = "id"
    if mode != "overwrite":
        p.refused(r"has no column 'id', the job's source.key.*mode overwrite")
        p.mode = "overwrite"
    summary, paid = p.run()
    # Replaced, keeping none of the old key's rows: every row answered (paid) again.
    assert (summary["selected"], summary["skipped"], paid) == (3, 0, 3), summary
    assert p.column_names()[:3] == ["id", "sku", "text"]
    p.check({1: "a", 2: "b", 3: "c"})
    p.mode = mode
    summary, paid = p.run()
    assert (summary["skipped"], paid) == (3, 0), summary
    p.check({1: "a", 2: "b", 3: "c"})


@pytest.mark.parametrize("mode", ["merge", "append", "overwrite"])
def test_a_key_renamed_in_case_only_keeps_the_table_and_the_checkpoint(
    project: Project, mode: str
) -> None:
    p = project
    p.mode = mode
    p.source("review_id,sku,text", [(1, 10, "a"), (2, 11, "b")])
    summary, paid = p.run()
    assert paid == 2
    # Two more rows, paid for and checkpointed but not in the table.
    p.source("review_id,sku,text", [(1, 10, "a"), (2, 11, "b"), (3, 20, "c"), (4, 21, "d")])
    paid_before = p.agent.stats().requests_total
    p.unwritten([3, 4])
    assert p.agent.stats().requests_total == paid_before + 2
    assert sorted(r["review_id"] for r in p.table()) == [1, 2]
    # The source and the job spell the key `Review_ID` now: the same column to every engine.
    p.source("Review_ID,sku,text", [(1, 10, "a"), (2, 11, "b"), (3, 20, "c"), (4, 21, "d")])
    p.key = "Review_ID"
    summary, paid = p.run()
    pushed_down = isinstance(p, WarehouseProject) and not p.rest
    # The table's rows are done; the checkpoint's answers are written, not paid again (push-down
    # keeps no checkpoint: it pays for the rows the table does not hold).
    assert (summary["selected"], summary["skipped"]) == (4, 2), summary
    assert paid == (2 if pushed_down else 0), summary
    rows = p.table()
    [name] = [n for n in p.column_names() if n.lower() == "review_id"]
    assert sorted(r[name] for r in rows) == [1, 2, 3, 4], rows
    for row in rows:
        assert row["response"] == f"answer: Review: {row['text']}", row
    summary, paid = p.run()
    assert (summary["skipped"], paid) == (4, 0), summary
    assert sorted(r[name] for r in p.table()) == [1, 2, 3, 4]
