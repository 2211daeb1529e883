"""The executors' checkpoint keeps paid answers across finished runs, as the driver's ledger does.

README ("Paid answers are reused, never lost"): a row whose key's latest checkpointed answer has
the current fingerprint is written from the checkpoint instead of calling again, whatever became
of the output table since. Histories of runs through the public API on the spark target with the
calls on the executors, against a catalog table the user truncates and drops between runs.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentbatch.engines.spark import checkpoints, distributed
from tests.engines.spark.histories import KEYS, Crash, History


@pytest.mark.slow  # a dozen runs
def test_answers_outlive_finished_runs_as_in_the_ledger(history: History) -> None:
    first = history.run("Q")
    assert (first["rows"], first["errors"], first["calls"]) == (8, 1, 8)
    history.answering("Q")
    paid = history.rows()

    history.truncate()
    again = history.run("Q")
    assert (again["skipped"], again["rows"], again["reused"], again["calls"]) == (0, 8, 8, 0)
    assert history.rows() == paid  # the same answers, first answered_at kept
    # One file of the latest answer per key (key and result columns), nothing else.
    (kept,) = history.checkpoint_files()
    assert kept.startswith(distributed.COMPACTED)

    history.drop()
    assert history.run("Q")["calls"] == 0
    assert history.rows() == paid
    assert history.checkpoint_files() == [kept]  # nothing new: no compaction, no Spark job

    # `--retry-errors` sends the kept failure again, and only it.
    retried = history.run("Q", retry_errors=True)
    assert (retried["rows"], retried["calls"]) == (1, 1)

    # A prompt edit pays every row again; then its answers are the ones kept.
    edited = history.run("Q2")
    assert (edited["rows"], edited["calls"]) == (8, 8)
    history.answering("Q2")
    history.truncate()
    assert history.run("Q2")["calls"] == 0
    history.answering("Q2")
    assert len(history.checkpoint_files()) == 1
    # One answer per key, the latest: the request changed back is paid again (README).
    history.truncate()
    assert history.run("Q")["calls"] == 8

    # A full refresh pays every row once, though the checkpoint holds them all; a truncate after
    # it is written from the refresh's answers.
    started = datetime.now()  # as Spark hands timestamps to Python: local, naive
    assert history.run("Q", full_refresh=True)["calls"] == 8
    refreshed = history.rows()
    assert all(at >= started for _, _, at in refreshed.values())
    history.truncate()
    assert history.run("Q")["calls"] == 0
    assert history.rows() == refreshed


@pytest.mark.parametrize(
    ("step", "after"),
    [
        ("_publish", 0),  # the compacted file written aside, not renamed in
        ("_remove", 0),  # renamed in, no old file removed yet
        ("_remove", 2),  # part of the old files removed
    ],
)
def test_a_kill_during_the_compaction_leaves_a_checkpoint_the_next_run_reuses(
    history: History, monkeypatch: pytest.MonkeyPatch, step: str, after: int
) -> None:
    history.run("Q")
    history.truncate()
    real = getattr(checkpoints, step)
    calls: list[Path] = []

    def killed(*paths: Path) -> None:
        if len(calls) == after:
            raise Crash(step)
        calls.append(paths[0])
        real(*paths)

    # A prompt edit killed while its answers and the earlier run's are being folded together.
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, step, killed)
        with pytest.raises(Crash):
            history.run("Q2")
    history.answering("Q2")  # written before the compaction began
    assert len(history.checkpoint_files()) > 1
    # A Spark write killed mid-file leaves a torn file in its hidden folder: readers skip it,
    # a fold removes it once a day old (a younger one may be another run's fold at work).
    folder = history.checkpoint_folder()
    (folder / ".compacting-torn").mkdir(exist_ok=True)
    (folder / ".compacting-torn" / "part-00000.parquet").write_bytes(b"PAR1 torn")
    for path in (folder / ".compacting-torn", folder / ".compacting-torn" / "part-00000.parquet"):
        os.utime(path, (1, 1))

    history.truncate()
    resumed = history.run("Q2")
    assert (resumed["rows"], resumed["reused"], resumed["calls"]) == (8, 8, 0)
    history.answering("Q2")
    # The next run finished the fold: one file, the day-old leftover gone (the killed fold's
    # own hidden folder waits its day: it could be another run's fold at work).
    files = history.checkpoint_files()
    (kept,) = (name for name in files if not name.startswith("."))
    assert ".compacting-torn" not in files
    table = pq.read_table(folder / kept)
    assert sorted(table.column("id").to_pylist()) == KEYS


@pytest.mark.parametrize("prompt", ["Q", "Q2"])  # Q2: a prompt edit as well, nothing to reuse
def test_a_key_that_changed_type_pays_again_once_and_never_sticks_the_job(
    history: History, caplog: pytest.LogCaptureFixture, prompt: str
) -> None:
    # The key read as text (a source.query casting it), then as a number: the checkpoint's files
    # disagree on its type, which one Spark read of the folder cannot take.
    as_text = 'query: "SELECT CAST(id AS STRING) AS id, txt FROM main.s.src"'
    assert history.run("Q", source=as_text)["calls"] == 8
    history.drop()  # a target keyed by text refuses numeric keys: the user drops it
    folder = history.checkpoint_folder()
    with caplog.at_level("WARNING", logger=distributed.__name__):
        typed = history.run(prompt)
    # The text-keyed answers cannot be read with this run's rows: paid again, with a warning.
    assert (typed["rows"], typed["reused"], typed["calls"]) == (8, 0, 8)
    history.answering(prompt)
    warned = [r.getMessage() for r in caplog.records if str(folder) in r.getMessage()]
    assert warned and all("paid again" in m or "removed" in m for m in warned), warned
    # The compaction kept this run's answers only: a folder the next runs read.
    (kept,) = history.checkpoint_files()
    assert pq.read_table(folder / kept).schema.field("id").type == "int32"

    caplog.clear()
    history.truncate()
    again = history.run(prompt)
    assert (again["rows"], again["reused"], again["calls"]) == (8, 8, 0)
    history.answering(prompt)
    assert not [r for r in caplog.records if str(folder) in r.getMessage()]
