"""Two runs of one job at once share the executors' checkpoint folder, with no lock.

Run B is started inside run A at a chosen step (a deterministic interleaving, no threads): A's
listing then B's write and fold then A's read; A's tasks then B then A's read-back. No run fails,
every selected key is in the target once, and nothing paid for is paid again or lost.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from agentbatch.engines.spark import checkpoints, distributed
from agentbatch.engines.spark.distributed import CheckpointWriter
from agentbatch.results import result_arrow_fields
from tests.engines.spark.histories import History

DAY = 24 * 3600
HALF = "table: main.s.src, where: 'id <= 4'"  # the job's first half of the keys


def test_a_read_whose_files_another_runs_fold_removes_reads_the_folded_file(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert history.run("Q", source=HALF)["calls"] == 4  # keys 1-4 kept in one folded file
    history.truncate()
    real = checkpoints._read_files
    other: list[dict[str, Any]] = []

    def then_run_b(*args: Any) -> Any:
        read = real(*args)  # A's listing: the folded file of keys 1-4
        if not other:
            other.append({})
            # B pays keys 5-8, writes them, folds them and the file A listed into a new one.
            other[0] = history.run("Q")
        return read

    monkeypatch.setattr(checkpoints, "_read_files", then_run_b)
    a = history.run("Q")
    b = other[0]
    assert (b["rows"], b["reused"], b["calls"]) == (8, 4, 4)
    # A read again from B's folded file: every answer reused, nothing paid twice (A's calls
    # count B's, made inside it).
    assert (a["rows"], a["reused"], a["sent"], a["calls"]) == (8, 8, 0, 4)
    history.answering("Q")


def test_a_run_keeps_its_own_answers_when_another_run_folds_before_its_write(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = checkpoints.read_checkpoint
    other: list[dict[str, Any]] = []

    def run_b_first(spark: SparkSession, folder: Path, run_id: str = "") -> Any:
        if run_id and not other:  # A's tasks wrote its answers; A has not read them back yet
            other.append({})
            # B answers the 2 lowest keys from A's files, writes them, and folds the folder.
            other[0] = history.run("Q", limit=2)
        return real(spark, folder, run_id)

    monkeypatch.setattr(distributed, "read_checkpoint", run_b_first)
    a = history.run("Q")
    b = other[0]
    assert (b["rows"], b["reused"], b["calls"]) == (2, 2, 0)
    assert (a["rows"], a["sent"], a["calls"], a["rows_written"]) == (8, 8, 8, 8)
    history.answering("Q")  # every key once: A's answers were still there for its write
    history.truncate()
    assert history.run("Q")["calls"] == 0  # and kept for later runs
    history.answering("Q")


def answered(keys: list[int]) -> pa.Table:
    """A task's checkpoint group: the key and every result column."""
    columns: dict[str, Any] = {"k": pa.array(keys, pa.int64())}
    for f in result_arrow_fields():
        columns[f.name] = pa.nulls(len(keys), f.type)
    columns["response"] = pa.array([f"a{k}" for k in keys])
    columns["request_fingerprint"] = pa.array(["fp"] * len(keys))
    now = datetime.datetime.now(datetime.timezone.utc)
    columns["answered_at"] = pa.array([now] * len(keys), pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


def age(path: Path, seconds: float) -> None:
    for each in [path, *path.rglob("*")] if path.is_dir() else [path]:
        then = time.time() - seconds
        os.utime(each, (then, then))


def keys_in(folder: Path) -> dict[str, list[int]]:
    import pyarrow.parquet as pq

    return {
        p.name: sorted(pq.read_table(p, columns=["k"]).column("k").to_pylist())
        for p in folder.glob("part-*.parquet")
    }


def test_a_fold_takes_only_finished_or_dead_runs_files(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "t" / "0123456789abcdef"
    CheckpointWriter(folder, "own", 0, 0).write(answered([1]))
    CheckpointWriter(folder, "done", 0, 0).write(answered([2]))
    (folder / "done-done").write_bytes(b"")  # run `done` wrote its answers to the target
    CheckpointWriter(folder, "dead", 0, 0).write(answered([3]))
    age(next(folder.glob("part-dead-*")), 2 * DAY)  # killed a while ago: wrote nothing since
    CheckpointWriter(folder, "live", 0, 0).write(answered([4]))  # before its write
    (folder / ".compacting-live").mkdir()  # another run folding now
    (folder / ".compacting-killed").mkdir()
    (folder / ".compacting-killed" / "part-00000.parquet").write_bytes(b"PAR1 torn")
    age(folder / ".compacting-killed", 2 * DAY)

    checkpoints.compact(spark, folder, "k", run_id="own")

    files = keys_in(folder)
    assert files.pop("part-live-p00000-a0-000000.parquet") == [4]  # still the live run's own
    ((name, folded),) = files.items()
    assert name.startswith(checkpoints.COMPACTED) and folded == [1, 2, 3]
    left = sorted(p.name for p in folder.iterdir() if not p.name.startswith("part-"))
    assert left == [".compacting-live"]  # markers of folded runs and the killed fold's leftover


def test_folders_of_other_agent_settings_are_removed_once_untouched_for_a_month(
    spark: SparkSession, tmp_path: Path
) -> None:
    table = tmp_path / "main.s.out"
    folder = table / "0123456789abcdef"
    CheckpointWriter(folder, "own", 0, 0).write(answered([1]))
    old = table / "1111111111111111"  # settings changed 31 days ago
    CheckpointWriter(old, "r", 0, 0).write(answered([1]))
    (old / ".compacting-x").mkdir()
    age(old, 31 * DAY)
    recent = table / "2222222222222222"  # settings last used 29 days ago: kept
    CheckpointWriter(recent, "r", 0, 0).write(answered([1]))
    age(recent, 29 * DAY)
    touched = table / "3333333333333333"  # old, but one file written since (a run in it now)
    CheckpointWriter(touched, "r", 0, 0).write(answered([1]))
    age(touched, 40 * DAY)
    CheckpointWriter(touched, "s", 0, 0).write(answered([2]))
    (table / "notes").mkdir()  # not a checkpoint folder: never agentbatch's to remove
    age(table / "notes", 40 * DAY)

    checkpoints.compact(spark, folder, "k", run_id="own")

    assert sorted(p.name for p in table.iterdir()) == [
        "0123456789abcdef",
        "2222222222222222",
        "3333333333333333",
        "notes",
    ]
    assert len(list(touched.glob("part-*"))) == 2
