"""Histories of runs on the spark target, for both kinds of output table the engine rewrites whole:
a parquet catalog table (storage: catalog) and a parquet folder mapped with `--table`.

What the user does between runs: drop or truncate the table, change the mode, edit the prompt,
retry errors, and kill a run between the catalog / file operations of its write. After every run
that exits, each selected key has exactly one row answering the current prompt (README: "The
output table decides what is done").
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agentbatch
from agentbatch.engines.spark.catalog import CatalogTable
from agentbatch.engines.spark.files import FileTable
from agentbatch.errors import UsageError
from agentbatch.testing.agent_server import AgentServer
from tests.engines.spark.histories import FAILING, KEYS, Crash, write_source


class CatalogOutput:
    """A parquet table of the session catalog."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.table = f"default.hist_{uuid.uuid4().hex[:8]}"
        self.tables: dict[str, Path] = {}
        self.settings = {"storage": "catalog"}

    def rows(self) -> list[dict[str, Any]]:
        return [r.asDict() for r in self.spark.table(self.table).collect()]

    def exists(self) -> bool:
        return bool(self.spark.catalog.tableExists(self.table))

    def drop(self) -> None:
        self.spark.sql(f"DROP TABLE {self.table}")

    def truncate(self) -> None:
        self.spark.sql(f"TRUNCATE TABLE {self.table}")

    def crash_before_swap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Kill the run after the new content is saved aside, before the old table is moved."""
        real = CatalogTable._sql

        def sql(table: CatalogTable, text: str) -> None:
            if "RENAME TO" in text and text.startswith(f"ALTER TABLE {table.name} "):
                raise Crash(text)
            real(table, text)

        monkeypatch.setattr(CatalogTable, "_sql", sql)

    def cleanup(self) -> None:
        for suffix in ("", "__agentbatch_new", "__agentbatch_old"):
            self.spark.sql(f"DROP TABLE IF EXISTS {self.table}{suffix}")


class FolderOutput:
    """A parquet folder mapped with `--table`."""

    def __init__(self, spark: Any, folder: Path) -> None:
        self.spark = spark
        self.table = "main.s.hist"
        self.path = folder / "hist.parquet"
        self.tables = {self.table: self.path}
        self.settings: dict[str, str] = {}

    def rows(self) -> list[dict[str, Any]]:
        return [r.asDict() for r in self.spark.read.parquet(str(self.path.resolve())).collect()]

    def exists(self) -> bool:
        return self.path.exists()

    def drop(self) -> None:
        self.path.unlink()  # `rm` of the table

    def truncate(self) -> None:
        for data in self.path.resolve().glob("part-*"):
            data.unlink()

    def crash_before_swap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Kill the run after the new version is written, before its link is swapped in."""

        def link(table: FileTable, target: Path) -> None:
            raise Crash(str(target))

        monkeypatch.setattr(FileTable, "_link", link)

    def cleanup(self) -> None:
        pass


@pytest.fixture(params=["catalog", "folder"])
def output(request: pytest.FixtureRequest, spark: Any, tmp_path: Path) -> Iterator[Any]:
    made = CatalogOutput(spark) if request.param == "catalog" else FolderOutput(spark, tmp_path)
    yield made
    made.cleanup()


def test_every_selected_key_has_one_current_answer_after_each_run(
    agent: AgentServer,
    output: Any,
    make_engine: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_engine()  # the suite's session is the active one: the runs use it
    source = write_source(tmp_path / "src.csv")
    jobs = tmp_path / "jobs"
    jobs.mkdir()

    def job(prefix: str, mode: str) -> Path:
        path = jobs / f"hist_{prefix}_{mode}.yml"
        path.write_text(
            "name: hist\nsource: {table: main.s.src, key: id, columns: [txt]}\n"
            f"request: \"concat('{prefix}: ', txt)\"\nagent: {{endpoint: apps/hist}}\n"
            f"output: {{table: {output.table}, mode: {mode}}}\n"
        )
        return path

    def run(prefix: str, mode: str, **options: Any) -> dict[str, Any]:
        before = agent.stats().requests_total
        with agentbatch.run(
            job(prefix, mode),
            target="spark",
            tables={"main.s.src": source, **output.tables},
            endpoints={"apps/hist": agent.url},
            state_dir=tmp_path / "state",
            project_dir=tmp_path,
            settings={"warehouse_dir": str(tmp_path / "warehouse"), **output.settings},
            progress=False,
            **options,
        ) as result:
            summary = dict(result.summary)
        summary["calls"] = agent.stats().requests_total - before
        if not options.get("dry_run"):
            current(prefix)
        return summary

    def current(prefix: str) -> None:
        """Each key has one row answering `prefix` (older answers may stay in append mode); the
        failing key, as many rows as the others, the latest a failure."""
        rows = output.rows()
        answers = Counter(
            r["id"] for r in rows if (r["response"] or "").startswith(f"answer: {prefix}: ")
        )
        assert sorted(answers) == KEYS[:-1] and set(answers.values()) == {1}, rows
        every = Counter(r["id"] for r in rows)
        assert every[FAILING] == every[1] and all(r["error"] for r in rows if r["id"] == FAILING), (
            rows
        )

    first = run("Q", "merge")
    assert (first["rows"], first["errors"], first["calls"]) == (8, 1, 8)
    assert run("Q", "merge")["calls"] == 0  # nothing twice
    retried = run("Q", "merge", retry_errors=True)
    assert (retried["rows"], retried["calls"]) == (1, 1)

    # A prompt edit whose run is killed before its write is swapped in, then the table dropped.
    with monkeypatch.context() as patch:
        output.crash_before_swap(patch)
        with pytest.raises(Crash):
            run("Q2", "merge")
    assert len(output.rows()) == 8  # the old content stays
    output.drop()
    assert run("Q2", "merge", dry_run=True)["rows"] == 8  # dropped means dropped
    assert not output.exists()
    after_drop = run("Q2", "merge")
    assert (after_drop["skipped"], after_drop["rows"], after_drop["calls"]) == (0, 8, 0)

    output.truncate()
    after_truncate = run("Q2", "merge")
    assert (after_truncate["skipped"], after_truncate["rows"]) == (0, 8)

    appended = run("Q2", "append")  # a mode change: the rows are done
    assert (appended["skipped"], appended["calls"]) == (8, 0)
    run("Q3", "append")  # an edit in append mode keeps the Q2 rows beside the Q3 ones
    assert len(output.rows()) == 16
    calls = agent.stats().requests_total
    with pytest.raises(UsageError, match="more than one row"):
        run("Q4", "merge")  # merge would keep one row per key: refused before any call
    assert agent.stats().requests_total == calls
    rewritten = run("Q3", "overwrite")
    assert (rewritten["calls"], len(output.rows())) == (0, 8)

    # An overwrite killed before its write is swapped in: the next run pays nothing again.
    with monkeypatch.context() as patch:
        output.crash_before_swap(patch)
        with pytest.raises(Crash):
            run("Q4", "overwrite")
    resumed = run("Q4", "overwrite")
    assert (resumed["skipped"], resumed["rows"], resumed["calls"]) == (0, 8, 0)
    assert run("Q4", "overwrite", full_refresh=True)["calls"] == 8
    if isinstance(output, FolderOutput):
        shutil.rmtree(output.path.resolve())  # the link's version removed: dropped too
        output.path.unlink()
    else:
        output.drop()
    again = run("Q4", "overwrite")
    assert (again["skipped"], again["rows"]) == (0, 8)
