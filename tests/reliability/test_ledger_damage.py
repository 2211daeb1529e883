"""A ledger torn or garbled between a kill and the resume: detected, dropped, never fatal.

The writer is a child process that checkpoints a few group commits and is then SIGKILLed, so the
ledger is left exactly as a killed run leaves it (WAL not checkpointed, shared memory stale).
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentbatch.agent.ledger import Ledger
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.faults import FaultConfig
from tests.support.triage import OPEN_TICKETS, TRIAGE, triage_cli_args

from .processes import PYTHON, child_env

BATCHES = 6
ROWS_PER_BATCH = 25

WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import pyarrow as pa
    from agentbatch.agent.ledger import Ledger

    ledger = Ledger(sys.argv[1], key="id")
    for b in range({batches}):
        ids = list(range(b * {rows}, (b + 1) * {rows}))
        ledger.append(pa.table({{
            "id": pa.array(ids, pa.int64()),
            "response": [f"answer {{i}}" for i in ids],
            "error": pa.nulls(len(ids), pa.string()),
            "request_fingerprint": [f"fp{{i}}" for i in ids],
        }}))
    os.kill(os.getpid(), signal.SIGKILL)
    """
).format(batches=BATCHES, rows=ROWS_PER_BATCH)


def killed_writer(path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-c", WRITER, str(path)], env=child_env(), capture_output=True, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def inputs(n: int) -> pa.RecordBatch:
    ids = list(range(n))
    return pa.RecordBatch.from_pydict(
        {
            "id": pa.array(ids, pa.int64()),
            "_request": [f"q{i}" for i in ids],
            "request_fingerprint": [f"fp{i}" for i in ids],
        }
    )


def survivors(path: Path) -> set[int]:
    """Ids the reopened ledger considers answered; every read path must work on it.

    The sink's read comes first: it is what finds an unreadable stored batch and forgets it."""
    with Ledger(path, key="id") as ledger:
        unwritten = [row for batch in ledger.rows_of_run() for row in batch.to_pylist()]
        todo = ledger.reuse(inputs(BATCHES * ROWS_PER_BATCH), None, retry_errors=False)[1]
    answered = set(range(BATCHES * ROWS_PER_BATCH)) - set(todo.column("id").to_pylist())
    lost = answered - {row["id"] for row in unwritten}
    assert not lost, f"answered for the producer, never handed to the sink: {sorted(lost)}"
    assert {row["id"] for row in unwritten} <= answered
    assert all(row["response"] == f"answer {row['id']}" for row in unwritten)
    return answered


def whole_batches(answered: set[int]) -> int:
    """The number of leading group commits `answered` is made of; fails on a partial commit."""
    count = len(answered) // ROWS_PER_BATCH
    assert answered == set(range(count * ROWS_PER_BATCH)), "a group commit survived in part"
    return count


def test_killed_writer_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "l.ledger.sqlite"
    killed_writer(path)
    assert Path(str(path) + "-wal").stat().st_size > 0  # the kill left the WAL as it was
    assert whole_batches(survivors(path)) == BATCHES


@pytest.mark.parametrize("seed", range(12))
def test_torn_wal_tail_drops_only_the_torn_commits(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "l.ledger.sqlite"
    killed_writer(path)
    wal = Path(str(path) + "-wal")
    size = wal.stat().st_size
    cut = rng.randint(32, size - 1)
    if seed % 2:
        with wal.open("r+b") as f:
            f.truncate(cut)
    else:
        with wal.open("r+b") as f:
            f.seek(cut)
            f.write(rng.randbytes(size - cut))
    kept = whole_batches(survivors(path))
    assert kept < BATCHES  # the last commit frame is always in the damaged tail
    # Resuming on top of it works: new answers are recorded and read back.
    with Ledger(path, key="id") as ledger:
        ledger.append(
            pa.table(
                {
                    "id": pa.array([10_000], pa.int64()),
                    "response": ["late"],
                    "error": pa.nulls(1, pa.string()),
                    "request_fingerprint": ["fp-late"],
                }
            )
        )
        assert ledger.stats()["answers"] == kept * ROWS_PER_BATCH + 1


# Found by a 400-seed sweep: 28 and 370 garble the schema text; 283 garbles the answers_by_batch
# index, which quick_check does not compare with its table (integrity_check does), so six answers
# are "answered" for the producer but never reach the sink.
@pytest.mark.parametrize("seed", [*range(16), 28, 283, 370])
def test_garbled_main_file_is_never_fatal(
    tmp_path: Path, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes overwritten anywhere in a checkpointed ledger: quarantined, or rows re-sent."""
    rng = random.Random(seed)
    path = tmp_path / "l.ledger.sqlite"
    killed_writer(path)
    with Ledger(path, key="id"):
        pass  # the last connection to close checkpoints the WAL into the main file
    assert not Path(str(path) + "-wal").exists()
    size = path.stat().st_size
    offset = rng.randint(0, size - 64)
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(rng.randbytes(rng.randint(1, 64)))
    with caplog.at_level(logging.WARNING, logger="agentbatch"):
        answered = survivors(path)
    assert answered <= set(range(BATCHES * ROWS_PER_BATCH))
    quarantined = list(tmp_path.glob("*.corrupt-*"))
    if quarantined:
        assert answered == set()
        assert any("damaged" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "content", [b"", b"not a database at all\n", b"SQLite format 3\x00" + b"\xff" * 4000]
)
def test_ledger_that_is_not_a_database_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "l.ledger.sqlite"
    path.write_bytes(content)
    assert survivors(path) == set()
    if content:
        assert len(list(tmp_path.glob("*.corrupt-*"))) == 1


ENDLESS_WRITER = textwrap.dedent(
    """
    import sys
    import pyarrow as pa
    from agentbatch.agent.ledger import Ledger

    ledger = Ledger(sys.argv[1], key="id", run_id="killed")
    b = 0
    while True:  # commits until it is killed, mid-commit or between two
        ids = list(range(b * 200, (b + 1) * 200))
        ledger.append(pa.table({
            "id": pa.array(ids, pa.int64()),
            "response": [f"answer {i}" for i in ids],
            "error": pa.nulls(len(ids), pa.string()),
            "request_fingerprint": [f"fp{i}" for i in ids],
        }))
        print(b, flush=True)
        b += 1
    """
)


@pytest.mark.parametrize("trial", range(5))
def test_a_kill_mid_commit_leaves_whole_commits_only(tmp_path: Path, trial: int) -> None:
    """SIGKILL at a random moment while the writer commits: the ledger opens without damage, and
    every answer it holds is reusable with exactly the row that was committed."""
    import time

    rng = random.Random()
    path = tmp_path / "ledger.sqlite"
    child = subprocess.Popen(
        [PYTHON, "-c", ENDLESS_WRITER, str(path)],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        wanted = rng.randint(1, 20)
        for line in child.stdout:
            if int(line) + 1 >= wanted:
                break
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside a later commit, or between two
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    with Ledger(path, key="id", run_id="resume") as ledger:
        assert not list(tmp_path.glob("*.corrupt-*")), "a kill must not damage the ledger"
        committed = ledger.stats()["answers"]
        assert committed >= wanted * 200 and committed % 200 == 0  # whole commits only
        reused, todo = ledger.reuse(inputs(committed + 400), None, retry_errors=False)
        assert reused is not None
        rows = sorted(reused.to_pylist(), key=lambda r: r["id"])
        assert [r["id"] for r in rows] == list(range(committed))
        assert all(r["response"] == f"answer {r['id']}" for r in rows)
        assert todo["id"].to_pylist() == list(range(committed, committed + 400))


# A disk that refuses writes (RLIMIT_FSIZE: any write past 512 bytes fails, as a FUSE mount such
# as /Workspace or /dbfs refuses SQLite's): SQLite says "disk I/O error", which is no damage.
REFUSING_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from agentbatch.agent.ledger import Ledger
    from agentbatch.errors import ConfigError, exit_code_for

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))
    try:
        Ledger(sys.argv[1], key="id").close()
    except ConfigError as e:
        print(exit_code_for(e), e)
    """
)


@pytest.mark.parametrize("existing", [True, False])
def test_a_ledger_the_disk_refuses_is_left_in_place_and_named(
    tmp_path: Path, existing: bool
) -> None:
    """Not a damaged file: the run stops with a configuration error naming the file and
    `state_dir`, and a sound ledger keeps its answers for the run after (was: moved aside as
    damaged, its answers lost, then the same error unexplained)."""
    path = tmp_path / "l.ledger.sqlite"
    if existing:
        killed_writer(path)
        with Ledger(path, key="id"):
            pass  # checkpointed: the main file alone holds every answer
    refused = subprocess.run(
        [PYTHON, "-c", REFUSING_DISK, str(path)], env=child_env(), capture_output=True, text=True
    )
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.startswith("3 cannot use the checkpoint "), refused.stdout
    assert str(path) in refused.stdout and "state_dir" in refused.stdout
    assert list(tmp_path.glob("*.corrupt-*")) == []
    expected = set(range(BATCHES * ROWS_PER_BATCH)) if existing else set()
    assert survivors(path) == expected


# A run whose disk refuses the checkpoint's growth mid-run (RLIMIT_FSIZE: 60 KB lets the ledger
# open and take its first commits, and the output file of 237 rows be written).
RUN_ON_A_FILLING_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from agentbatch.cli.main import main

    limit, *args = sys.argv[1:]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    sys.exit(main(args))
    """
)


def test_answers_the_checkpoint_refuses_mid_run_reach_the_target(tmp_path: Path) -> None:
    """A commit refused mid-run (the disk full, an I/O error): the run stops sending, writes
    every answer it received to the output table (was: a traceback, the answers paid for and
    lost: the table empty), and says why (exit 3, the checkpoint and state_dir named); the next
    run pays only the rest."""
    out = tmp_path / "out.parquet"
    with serve_agent(FaultConfig(latency_ms=50)) as agent:  # answers still coming at the refusal
        args = [
            "run",
            str(TRIAGE),
            *triage_cli_args(out, agent.url),
            *["--state-dir", str(tmp_path / "state"), "--no-progress"],
        ]
        refused = subprocess.run(
            [PYTHON, "-c", RUN_ON_A_FILLING_DISK, "60000", *args],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 3, refused.stderr
        assert "cannot keep answers in the checkpoint" in refused.stderr
        assert "state_dir" in refused.stderr and "Traceback" not in refused.stderr
        paid = agent.stats().requests_total
        written = pq.read_table(out).column("ticket_id").to_pylist()
        assert 0 < paid < OPEN_TICKETS  # stopped early: the refusal came mid-run
        assert len(written) == len(set(written)) == paid  # every paid answer, once

        again = subprocess.run(
            [PYTHON, "-m", "agentbatch", *args], env=child_env(), capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        assert agent.stats().requests_total == OPEN_TICKETS  # each key paid once in all
        keys = pq.read_table(out).column("ticket_id").to_pylist()
        assert len(keys) == len(set(keys)) == OPEN_TICKETS
