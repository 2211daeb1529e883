"""Load: 100,000 rows through the REST fallback against a fast agent in another process, twice.
Memory, file descriptors, sockets and threads are measured in this process before, between and
after; the second identical run (fresh target and ledger) must not grow them.
"""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.spec.loader import load_job_text

from .conftest import record_figures
from .processes import FAST_AGENT, AgentProcess

ROWS = 100_000
# The second run may not keep more than this much extra memory (allocator slack, caches).
RSS_GROWTH_MB = 64

JOB = """
name: load
source: {table: main.s.rows, key: id, columns: [body]}
request: "body"
agent: {endpoint: apps/load, timeout_seconds: 60}
output: {table: main.s.out, mode: merge}
"""


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


def probe() -> dict[str, int]:
    """What this process holds now."""
    gc.collect()
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return {
        "rss_mb": _status("VmRSS") // 1024,
        "peak_rss_mb": _status("VmHWM") // 1024,
        "fds": len(links),
        "sockets": sum(link.startswith("socket:") for link in links),
        "python_threads": threading.active_count(),
        "os_threads": len(os.listdir("/proc/self/task")),
    }


@pytest.mark.slow
def test_two_runs_of_100k_rows_leak_nothing(tmp_path: Path) -> None:
    source = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array(range(ROWS), pa.int64()),
                "body": [f"question number {i}" for i in range(ROWS)],
            }
        ),
        source,
    )
    job = load_job_text(JOB, "load.yml")
    agent = AgentProcess([], tmp_path / "agent.log", FAST_AGENT)
    probes = [probe()]
    summaries = []
    try:
        for run in range(2):
            result = agentbatch.run(
                job,
                tables={"main.s.rows": source, "main.s.out": tmp_path / f"out{run}.parquet"},
                endpoints={"apps/load": agent.url},
                project_dir=tmp_path,
                state_dir=tmp_path / f"state{run}",
                progress=False,
            )
            summaries.append(result.summary)
            assert result.engine is not None
            result.engine.close()
            del result
            probes.append(probe())
    finally:
        agent.stop()
    before, first, second = probes
    record_figures(
        "load (2 x 100k rows)",
        {
            "rows_per_s": [s["rows_per_s"] for s in summaries],
            "wall_s": [s["wall_s"] for s in summaries],
            "peak_concurrency": [s["peak_concurrency"] for s in summaries],
            "before": before,
            "after_run_1": first,
            "after_run_2": second,
        },
    )
    for summary in summaries:
        assert summary["ok"] == ROWS and summary["errors"] == 0
        assert summary["table_rows"] == ROWS
    for after in (first, second):
        assert after["fds"] <= before["fds"] + 2, (before, after)
        assert after["sockets"] == before["sockets"], (before, after)
        # No thread left behind; a thread of an earlier test may end meanwhile (the count drops).
        assert after["python_threads"] <= before["python_threads"], (before, after)
    assert second["os_threads"] <= first["os_threads"] + 2, (first, second)
    assert second["rss_mb"] <= first["rss_mb"] + RSS_GROWTH_MB, (first, second)
