"""SIGTERM stops `agentbatch run` as Ctrl-C does: the answers received are written before it exits.

Schedulers and containers stop a process with SIGTERM, then SIGKILL after a grace period (a job's
timeout or cancellation, `docker stop`, Kubernetes, `timeout`). Python's default ends the process
at once: the answers would stay in a checkpoint on a disk that such compute throws away. Here a
real CLI child runs the REST fallback against a slow agent server and gets SIGTERM mid-run (once,
or twice: the second while it writes); then a second run finishes the job.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from agentbatch.testing import request_key
from agentbatch.testing.agent_server import AgentServer
from tests.support.databricks_env import isolate
from tests.support.warehouse.operations import States

from .chaos import ledger_snapshot, make_project, output_ids, row_text
from .processes import PYTHON, AgentProcess, child_env, run_cli
from .warehouse_history import TOKEN, WRITES, WarehouseProject, serve

ROWS = 400


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_writes_what_was_answered_and_the_next_run_pays_only_for_the_rest(
    tmp_path: Path, signals: int
) -> None:
    agent = AgentProcess(["--latency-ms", "100"], tmp_path / "agent.log")
    try:
        project = make_project(tmp_path / "project", ROWS, stream=False)
        args = [*project.cli_args(agent.url), "--json"]
        with (tmp_path / "out.json").open("wb") as out, (tmp_path / "err.log").open("wb") as err:
            child = subprocess.Popen(
                [PYTHON, "-m", "agentbatch", *args],
                cwd=project.root,
                env=child_env(),
                stdout=out,
                stderr=err,
            )
            try:
                deadline = time.monotonic() + 60
                while agent.stats()["requests_total"] < 40:
                    assert child.poll() is None, "finished before it was stopped"
                    assert time.monotonic() < deadline, "the run never called the agent"
                    time.sleep(0.02)
                for _ in range(signals):
                    child.send_signal(signal.SIGTERM)
                    time.sleep(0.05)
                child.wait(timeout=60)
            finally:
                child.kill()
                child.wait()
        stderr = (tmp_path / "err.log").read_text()
        assert child.returncode == 143, stderr
        assert "terminated (SIGTERM)" in stderr

        # What it answered is in the table, once per key; the summary says so.
        summary = json.loads((tmp_path / "out.json").read_text())["summary"]
        assert summary["stopped"] == "terminated (SIGTERM)", summary
        written = output_ids(project)
        assert 0 < len(written) < ROWS, len(written)
        assert len(written) == len(set(written)) == summary["rows_written"], summary
        (ledger,) = project.ledgers()
        sound, answered = ledger_snapshot(ledger, tmp_path / "scratch")
        assert sound
        assert answered == set(written), "an answer received but not written, or the reverse"

        # The next run pays for the others only, each once.
        asked_before = Counter(agent.stats()["requests_by_key"])
        done = run_cli(project.cli_args(agent.url), cwd=project.root)
        assert done.returncode == 0, done.stderr
        assert sorted(output_ids(project)) == list(range(ROWS))
        asked = Counter(agent.stats()["requests_by_key"]) - asked_before
        keys = {request_key(row_text(i)[1]): i for i in range(ROWS)}
        assert sorted(keys[k] for k in asked) == sorted(set(range(ROWS)) - set(written))
        assert set(asked.values()) == {1}, asked
    finally:
        agent.stop()


def test_a_sigterm_during_the_write_lets_it_finish(
    agent: AgentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM that lands while a run that made its calls writes them (the loopback warehouse
    holds its MERGE) is held until the write ends, where it used to cancel the statement and
    leave every answer out of the table: the table holds them all, the run exits 143 with its
    summary, and the next run sends nothing."""
    texts = {k: f"review number {k}" for k in range(12)}
    paid = {request_key(f"Review: {t}") for t in texts.values()}

    def calls() -> int:
        return sum(n for k, n in agent.stats().requests_by_key.items() if k in paid)

    isolate(monkeypatch, tmp_path / "auth", token=TOKEN)  # the in-process run's credentials
    with serve(agent) as wh:
        project = WarehouseProject(tmp_path / "project", agent, wh)
        project.write_source(texts)
        write = WRITES["rest", "merge"]
        gate = wh.hold(write)
        err = tmp_path / "err"
        child = project.start_cli("--json", logs=tmp_path)
        try:
            wh.wait_until_running(write, timeout_s=120)
            child.send_signal(signal.SIGTERM)
            # The child has taken the signal once it says so (held), or once the warehouse saw
            # the statement cancelled (not held).
            deadline = time.monotonic() + 60  # a bound, not a timing
            while "once the answers are written" not in err.read_text():
                if wh.service.operations(write)[-1].state != States.RUNNING_STATE:
                    break
                assert time.monotonic() < deadline, "the child never took the SIGTERM"
                time.sleep(0.02)
            gate.set()
            child.wait(timeout=60)
        finally:
            gate.set()
            child.kill()
            child.wait()
        stderr = err.read_text()
        assert child.returncode == 143, stderr
        summary = json.loads((tmp_path / "out").read_text())["summary"]
        assert summary["stopped"] == "terminated (SIGTERM)", summary
        assert summary["rows_written"] == len(texts), summary
        rows = project.target()
        assert sorted(r["review_id"] for r in rows) == sorted(texts)
        assert all(r["error"] is None for r in rows), rows
        assert calls() == len(texts)
        assert project.run()["sent"] == 0
        assert calls() == len(texts)
