"""A run on the driver copies its answers to the checkpoint folder as they arrive (copies.py).

On serverless compute the REST fallback runs on the driver and its ledger lives on the task's
local disk, which a killed or preempted task takes along: the next run is a new task with an
empty disk. With `checkpoint_dir` set (a volume), the answers the ledger commits are copied there
too, so that run pays only for what the killed one had not copied. Here the "new disk" is a new
state folder, the kill a SIGKILL of a real child process, and the agent a real server on
127.0.0.1 that counts each request.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig
from tests.engines.spark.histories import KEYS, History

from .driver_copies_child import run as run_child_job
from .test_spark_resume import run_until_killed, text_key

HERE = Path(__file__).parent
ROWS = 100
KILL_AFTER = 10  # answers copied before the kill


def copied_keys(volume: Path) -> set[int]:
    """The keys of the answers in the checkpoint folder's files."""
    keys: set[int] = set()
    for path in volume.glob("*/*/part-*.parquet"):
        keys.update(pq.read_table(path).column("ticket_id").to_pylist())
    return keys


def lose_disk(history: History) -> None:
    """The task's local disk is gone: the state folder, and the ledger in it, with it."""
    shutil.rmtree(history.tmp_path / "state", ignore_errors=True)


def test_a_new_disk_reuses_the_answers_a_run_on_the_driver_copied(history: History) -> None:
    volume = history.tmp_path / "volume"
    settings = {"rest_fallback_on": "driver", "checkpoint_dir": str(volume)}
    assert history.run("Q", settings=settings)["calls"] == len(KEYS)
    answered = history.rows()
    # After the write the run's copies are marked done (any later fold may take them).
    (folder,) = volume.glob("*/*")
    (copy,) = folder.glob("part-*.parquet")
    run = copy.name.split("-")[1]
    assert sorted(p.name for p in folder.iterdir()) == sorted([copy.name, f"done-{run}"])
    assert sorted(pq.read_table(copy).column("id").to_pylist()) == KEYS

    # The task's disk is gone (the ledger with it), and the table too: the copies answer all.
    lose_disk(history)
    history.drop()
    again = history.run("Q", settings=settings)
    assert (again["rows"], again["reused"], again["calls"]) == (len(KEYS), len(KEYS), 0)
    assert history.rows() == answered

    # Runs on the executors read the same folder as their own checkpoint: nothing paid there.
    lose_disk(history)
    history.truncate()
    moved = history.run("Q", settings={**settings, "rest_fallback_on": "executors"})
    assert (moved["rows"], moved["reused"], moved["calls"]) == (len(KEYS), len(KEYS), 0)
    assert history.rows() == answered

    # An edited request is paid once, and its copies are the latest answer per key: after a
    # lost disk the job's first request is paid again (one answer per key), never written stale.
    lose_disk(history)
    assert history.run("R", settings=settings)["calls"] == len(KEYS)
    history.answering("R")
    lose_disk(history)
    assert history.run("Q", settings=settings)["calls"] == len(KEYS)
    history.answering("Q")


@pytest.mark.parametrize(
    ("killed_on", "continued_on"),
    [("driver", "driver"), ("executors", "executors"), ("driver", "executors")],
)
def test_a_full_refresh_killed_as_it_writes_is_continued_on_a_new_disk(
    history: History, monkeypatch: pytest.MonkeyPatch, killed_on: str, continued_on: str
) -> None:
    """The refresh's start is in the ledger, which a new disk (a new task) does not have: the
    checkpoint folder records it too. A refresh killed as it writes (its calls all made, their
    answers in the folder) is continued by the next `--full-refresh` on a new disk, on either
    side, without paying again; finished, the record goes, and a later refresh pays again."""
    from agentbatch.engines.spark.checkpoints import REFRESH_MARKER
    from agentbatch.engines.spark.engine import SparkEngine
    from tests.engines.spark.histories import Crash

    volume = history.tmp_path / "volume"

    def on(side: str) -> dict[str, Any]:
        return {"rest_fallback_on": side, "checkpoint_dir": str(volume)}

    assert history.run("Q", settings=on(killed_on))["calls"] == len(KEYS)

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise Crash("killed as it writes")

    before = history.agent.stats().requests_total
    with monkeypatch.context() as patch:
        patch.setattr(SparkEngine, "write_results", killed)
        patch.setattr(SparkEngine, "write_dataframe", killed)
        with pytest.raises(Crash):
            history.run("Q", settings=on(killed_on), full_refresh=True)
    assert history.agent.stats().requests_total - before == len(KEYS)  # every row asked again
    (marker,) = volume.glob(f"*/*/{REFRESH_MARKER}")

    lose_disk(history)
    continued = history.run("Q", settings=on(continued_on), full_refresh=True)
    assert continued["calls"] == 0, continued
    history.answering("Q")
    assert not marker.exists()  # the refresh finished

    lose_disk(history)
    assert history.run("Q", settings=on(continued_on), full_refresh=True)["calls"] == len(KEYS)


def test_the_folder_is_folded_once_it_holds_enough_files(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold rewrites every key's answer, so a run folds only a folder of `FOLD_AT_FILES`
    files; the folded folder answers as the files did."""
    from agentbatch.engines.spark import copies

    monkeypatch.setattr(copies, "FOLD_AT_FILES", 2)
    volume = history.tmp_path / "volume"
    settings = {"rest_fallback_on": "driver", "checkpoint_dir": str(volume)}
    assert history.run("Q", settings=settings)["calls"] == len(KEYS)
    (folder,) = volume.glob("*/*")
    assert len(list(folder.glob("part-*.parquet"))) == 1  # under the bound: not folded
    assert history.run("R", settings=settings)["calls"] == len(KEYS)
    answered = history.rows()
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 1 and files[0].startswith("part-compacted-"), files
    lose_disk(history)
    history.drop()
    again = history.run("R", settings=settings)
    assert (again["reused"], again["calls"]) == (len(KEYS), 0)
    assert history.rows() == answered


def test_no_checkpoint_dir_no_copies(history: History) -> None:
    """The default folder is on the ledger's own disk: nothing is copied there."""
    assert history.run("Q", settings={"rest_fallback_on": "driver"})["calls"] == len(KEYS)
    assert not (history.tmp_path / "state" / "spark-checkpoints").exists()


@pytest.fixture
def slow_agent() -> Iterator[AgentServer]:
    with serve_agent(FaultConfig(latency_ms=100)) as server:
        yield server


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the process tree in /proc")
def test_a_killed_run_on_the_driver_is_continued_from_its_copies_on_a_new_disk(
    slow_agent: AgentServer, tmp_path: Path, make_engine: Any
) -> None:
    (tmp_path / "tickets.csv").write_text(
        "ticket_id,body\n" + "".join(f"{i},ticket number {i}\n" for i in range(ROWS))
    )
    volume = tmp_path / "volume"
    run_until_killed(
        HERE / "driver_copies_child.py",
        [slow_agent.url, str(tmp_path)],
        lambda: len(copied_keys(volume)) >= KILL_AFTER,
    )
    copied = copied_keys(volume)
    assert KILL_AFTER <= len(copied) < ROWS
    # Killed before its write: the answers are in its ledger, and the copied ones in the folder.
    assert pq.read_table(tmp_path / "summaries").num_rows == 0
    sent_by_child = slow_agent.stats().requests_total

    # The next run is a new task: another state folder (its ledger is empty), the same volume.
    make_engine()  # the suite's session is the active one: the run uses it
    summary = run_child_job(slow_agent.url, tmp_path, "new-disk")
    assert (summary["rows"], summary["reused"]) == (ROWS, len(copied))
    server = slow_agent.stats()
    assert server.requests_total - sent_by_child == ROWS - len(copied)
    for key in copied:  # copied before the kill: sent once, never again
        assert server.requests_for(text_key(f"Summarise: ticket number {key}")) == 1
    rows = pq.read_table(tmp_path / "summaries").to_pylist()
    assert sorted(r["ticket_id"] for r in rows) == list(range(ROWS))
    assert all(r["error"] is None for r in rows)


def test_a_folder_that_refuses_copies_is_named_and_the_run_goes_on(
    history: History, caplog: pytest.LogCaptureFixture
) -> None:
    """Copies only save calls: a `checkpoint_dir` the disk refuses (here a file, not a folder)
    stops them with a warning; the run answers and writes every row."""
    refusing = history.tmp_path / "not-a-folder"
    refusing.write_text("")
    settings = {"rest_fallback_on": "driver", "checkpoint_dir": str(refusing)}
    with caplog.at_level("WARNING", logger="agentbatch.engines.spark.copies"):
        assert history.run("Q", settings=settings)["calls"] == len(KEYS)
    history.answering("Q")
    assert [r for r in caplog.records if "cannot copy answers" in r.getMessage()]


def test_answers_past_the_memory_bound_are_copied_before_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held answers are bounded in bytes, not only in time: past the bound they are written at
    once, though the interval (an hour here) has not passed."""
    import pyarrow as pa

    from agentbatch.engines.spark import copies
    from agentbatch.results import RESULT_COLUMN_NAMES

    monkeypatch.setattr(copies, "MOST_BYTES", 1)
    copier = copies.DriverCopies(tmp_path, "id", "run", every_s=3600)
    rows = pa.table(
        {"id": [1, 2], "txt": ["a", "b"], **{name: [None, None] for name in RESULT_COLUMN_NAMES}}
    )
    copier.add(rows)
    deadline = time.monotonic() + 30  # a bound, not a timing
    while not list(tmp_path.glob("part-*.parquet")):
        assert time.monotonic() < deadline, "nothing was copied"
        time.sleep(0.02)
    (written,) = tmp_path.glob("part-*.parquet")
    assert pq.read_table(written).column_names == ["id", *RESULT_COLUMN_NAMES]
    copier.close()
    assert copier.copied == 2


def test_rows_the_copies_cannot_take_never_fail_the_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Copies only save calls: rows they cannot take (here, no result columns) stop the copies
    with a warning, and neither `add` (the ledger's commit) nor `close` (before the run's write)
    raises."""
    import pyarrow as pa

    from agentbatch.engines.spark.copies import DriverCopies

    copier = DriverCopies(tmp_path, "id", "run", every_s=3600)
    with caplog.at_level("WARNING", logger="agentbatch.engines.spark.copies"):
        copier.add(pa.table({"id": [1, 2]}))
        copier.close()
    assert copier.copied == 0 and not list(tmp_path.glob("part-*"))
    assert [r for r in caplog.records if "cannot copy answers" in r.getMessage()]


class HungWrite:
    """A volume write that never returns until released (a FUSE mount that hangs)."""

    def __init__(self) -> None:
        import threading

        self.started = threading.Event()
        self.release = threading.Event()

    def write(self, table: Any) -> None:
        self.started.set()
        self.release.wait(60)


def test_a_copy_that_hangs_does_not_hold_the_runs_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`close` runs before the run's write, on a stop too: a copy still being written after
    `CLOSE_WAIT_S` is left behind with a warning, so the write of what the run answered (the
    ledger holds it) goes on before a stopped task's grace period ends."""
    import threading

    import pyarrow as pa

    from agentbatch.engines.spark import copies
    from agentbatch.results import RESULT_COLUMN_NAMES

    monkeypatch.setattr(copies, "MOST_BYTES", 1)
    monkeypatch.setattr(copies, "CLOSE_WAIT_S", 0.2)
    copier = copies.DriverCopies(tmp_path, "id", "run", every_s=3600)
    hung = HungWrite()
    copier._writer = hung  # type: ignore[assignment]

    def rows(key: int) -> pa.Table:
        return pa.table({"id": [key], **{name: [None] for name in RESULT_COLUMN_NAMES}})

    copier.add(rows(1))
    assert hung.started.wait(30), "the copy never began"
    copier.add(rows(2))  # held while the first copy hangs
    closing = threading.Thread(target=copier.close)
    with caplog.at_level("WARNING", logger="agentbatch.engines.spark.copies"):
        closing.start()
        closing.join(30)  # a bound, not a timing
        assert not closing.is_alive(), "close waited for the hung copy"
    assert [r for r in caplog.records if "took over 0.2 s" in r.getMessage()]
    assert copier.copied == 0
    hung.release.set()
    copier._thread.join(30)
