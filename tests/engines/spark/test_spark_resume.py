"""A killed Spark run loses no answer: a re-run sends only the rows it had not answered."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agentbatch.planning.definition import RunOptions
from agentbatch.testing.agent_server import AgentServer, serve_agent
from agentbatch.testing.faults import FaultConfig

from .resume_child import engine as child_engine
from .resume_child import steps as child_steps

HERE = Path(__file__).parent
ROWS = 100
# How many answers the killed run must have checkpointed before it is killed.
KILL_AFTER = 10
# Bounds, not timings: the child needs a JVM start; the whole test stays well under these.
START_TIMEOUT_S = 150.0


def text_key(text: str) -> str:
    """The demo agent's per-request counter key for a plain prompt (see testing.inbound)."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent(FaultConfig(latency_ms=100)) as server:
        yield server


def checkpointed_keys(folder: Path) -> set[int]:
    if not folder.is_dir():
        return set()
    keys: set[int] = set()
    for path in folder.glob("part-*.parquet"):
        keys.update(pq.read_table(path, columns=["ticket_id"]).column("ticket_id").to_pylist())
    return keys


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the process tree in /proc")
def test_a_killed_run_resumes_without_resending(
    agent: AgentServer, tmp_path: Path, make_engine: Any
) -> None:
    tickets = tmp_path / "tickets.csv"
    tickets.write_text(
        "ticket_id,body\n" + "".join(f"{i},ticket number {i}\n" for i in range(ROWS))
    )
    output = tmp_path / "summaries"
    fallback, overrides = child_steps(agent.url, concurrency=2)
    checkpoints = tmp_path / "state" / "spark-checkpoints"
    run_until_killed(
        HERE / "resume_child.py",
        [agent.url, str(tickets), str(output), str(tmp_path)],
        lambda: len(checkpointed_keys_all(checkpoints)) >= KILL_AFTER,
    )
    done = checkpointed_keys_all(checkpoints)
    assert KILL_AFTER <= len(done) < ROWS
    # Killed before writing: the target is still empty, the answers live only in the checkpoint.
    assert pq.read_table(output).num_rows == 0
    sent_by_child = agent.stats().requests_total

    # Re-run in this process (its own session), faster: concurrency is not part of the fingerprint.
    fast, _ = child_steps(agent.url, concurrency=16)
    engine = child_engine(str(tickets), str(output), str(tmp_path), partitions=2)
    engine.spark = make_engine().spark  # the suite's shared session
    stats = engine.run_distributed(fast.distributed(RunOptions(endpoints=overrides)))

    rows = engine.read_table("main.support.summaries").to_pylist()
    assert sorted(r["ticket_id"] for r in rows) == list(range(ROWS))
    assert all(r["error"] is None for r in rows)
    assert stats["sent"] == ROWS - len(done)
    # Rows answered from the checkpoint are rows of this run, as on the driver: sent + reused.
    assert (stats["reused"], stats["rows_seen"], stats["ok"]) == (len(done), ROWS, ROWS)
    server = agent.stats()
    for key in done:  # answered before the kill: sent once, never again
        assert server.requests_for(text_key(f"Summarise: ticket number {key}")) == 1
    # Only rows in flight at the kill may have been sent twice.
    assert server.requests_total - ROWS <= sent_by_child - len(done)
    assert fallback.call.endpoint == fast.call.endpoint


def run_until_killed(script: Path, args: list[str], reached: Callable[[], bool]) -> None:
    """Run `script` with `args` in a child process (its own session, local Spark on loopback)
    until `reached()`, then SIGKILL it and every process under it."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    child = subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not reached():
            assert child.poll() is None, "the child run ended before it was killed"
            assert time.monotonic() < deadline, "the child run did not get there in time"
            time.sleep(0.1)
    finally:
        kill_tree(child)


def kill_tree(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child and every process under it (its JVM, and PySpark's Python daemon and
    workers, which put themselves in a process group of their own), by pid."""
    family = descendants(child.pid)
    for pid in [child.pid, *family]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.05)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited


def checkpointed_keys_all(root: Path) -> set[int]:
    keys: set[int] = set()
    if root.is_dir():
        for folder in root.glob("*/*"):
            keys |= checkpointed_keys(folder)
    return keys
