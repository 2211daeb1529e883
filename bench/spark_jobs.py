"""The Spark jobs of one run on the `spark` target, step by step (issue #17's fixed cost).

`python -m bench.spark_jobs [--place driver|executors] [--rows 5000] [--runs 1]`, apart from
`python -m bench`: one process, a loopback agent (S1's, or S3's with `--capacity 32`), the bench's
job file and the `spark driver` / `spark executors x2` client's set-up (its session started and
warmed untimed, as the bench does), with Spark's event log on. Each run gets a fresh workdir (the
target absent, as in every bench round). The engine's calls are timed, and each Spark job (the
event log's job start and end) is counted under the engine call that was running when it began;
`fetch_batches` is the inputs' reader, which runs while the calls are made (its wall time is not
shown, its jobs are). Prints per step: calls, jobs, the jobs' seconds, the step's wall seconds."""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.clients.base import ClientConfig
from bench.data import write_table
from bench.scenarios import AGENT_SCENARIOS
from bench.server import agent_process

Steps = list[tuple[str, float, float]]  # (label, start, end) on time.time()


def _label(method: str, args: tuple[Any, ...]) -> str:
    sql = str(args[0]) if args else ""
    if method == "execute":
        words = " ".join(sql.split()[:4]).upper()
        for head in ("CREATE TABLE IF NOT EXISTS", "MERGE INTO", "INSERT", "CREATE OR REPLACE"):
            if words.startswith(head):
                return f"execute {head}"
        return f"execute {words[:30]}"
    if method == "fetch_one":
        if "repeated_keys" in sql or "`repeated_keys`" in sql:
            return "fetch_one preflight counts"
        if "answered_this_run" in sql:
            return "fetch_one summary"
        if "LIMIT 0" in sql:
            return "fetch_one column probe"
        return "fetch_one other"
    if method == "read_table":
        return "read_table (schema)"
    return method


def _timed(steps: Steps, cls: type, names: tuple[str, ...]) -> None:
    for name in names:
        original = getattr(cls, name)

        def wrapper(
            self: Any, *args: Any, _o: Callable[..., Any] = original, _n: str = name, **kwargs: Any
        ) -> Any:
            label = _label(_n, args)
            start = time.time()
            try:
                result = _o(self, *args, **kwargs)
            finally:
                steps.append((label, start, time.time()))
            if _n == "fetch_batches":
                return _gen(steps, label, start, result)
            return result

        setattr(cls, name, functools.wraps(original)(wrapper))


def _gen(steps: Steps, label: str, start: float, result: Iterator[Any]) -> Iterator[Any]:
    steps.pop()  # the generator's own span: from the call to its end
    try:
        yield from result
    finally:
        steps.append((label, start, time.time()))


def _jobs(folder: Path) -> list[tuple[float, float, int]]:
    starts: dict[int, float] = {}
    jobs = []
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("appstatus")
    ):
        for line in path.read_text(errors="replace").splitlines():
            event = json.loads(line)
            kind = event.get("Event")
            if kind == "SparkListenerJobStart":
                starts[event["Job ID"]] = event["Submission Time"] / 1000
            elif kind == "SparkListenerJobEnd":
                jid = event["Job ID"]
                jobs.append((starts[jid], event["Completion Time"] / 1000, jid))
    return sorted(jobs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spark_jobs")
    parser.add_argument("--place", default="driver", choices=("driver", "executors"))
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--scenario", default="S1")
    options = parser.parse_args(argv)
    scenario = next(s for s in AGENT_SCENARIOS if s.id == options.scenario)
    root = Path(tempfile.mkdtemp(prefix="spark-jobs-"))
    write_table(root / "tickets.parquet", options.rows)
    events = root / "events"
    events.mkdir()
    from agentbatch.engines.spark.engine import SparkEngine
    from agentbatch.engines.spark.session import local_session

    steps: Steps = []
    slots = 2
    local_session(
        {
            "master": f"local[{slots}]",
            "warehouse_dir": str(root / "warehouse"),
            "spark_conf": {
                "spark.eventLog.enabled": "true",
                "spark.eventLog.dir": str(events),
                "spark.eventLog.compress": "false",
                "spark.eventLog.rolling.enabled": "false",
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.sql.shuffle.partitions": str(slots),
                "spark.default.parallelism": str(slots),
            },
        }
    )
    from bench.clients import agentbatch_spark

    _timed(
        steps,
        SparkEngine,
        (
            "__init__",
            "table_exists",
            "execute",
            "fetch_one",
            "fetch_batches",
            "read_table",
            "write_dataframe",
        ),
    )
    with agent_process(scenario) as agent:
        for run in range(options.runs):
            workdir = root / f"run-{run}"
            workdir.mkdir()
            config = ClientConfig(
                url=agent.url,
                inputs=str(root),
                workdir=str(workdir),
                rows=options.rows,
                concurrency=scenario.concurrency if scenario.id != "S3" else None,
                variant=f"{options.place}:{slots}",
            )
            job = agentbatch_spark.prepare(config)
            steps.clear()
            time.sleep(1.0)
            begun = time.time()
            counts = job()
            ended = time.time()
            time.sleep(2.0)  # the event log is flushed
            jobs = [j for j in _jobs(events) if begun <= j[0] <= ended]
            _report(run, counts, steps, jobs, ended - begun)


def _report(
    run: int, counts: Any, steps: Steps, jobs: list[tuple[float, float, int]], wall: float
) -> None:
    ordered = sorted(steps, key=lambda s: s[1])
    rows: dict[str, list[float]] = {}  # label -> [calls, jobs, job seconds, wall seconds]
    for label, start, end in ordered:
        row = rows.setdefault(label, [0, 0, 0.0, 0.0])
        row[0] += 1
        row[3] += end - start
    unassigned = [0, 0.0]
    for start, end, _ in jobs:
        # The innermost step running when the job began: the latest started that spans it.
        spans = [s for s in ordered if s[1] <= start <= s[2]]
        if spans:
            row = rows[max(spans, key=lambda s: s[1])[0]]
            row[1] += 1
            row[2] += end - start
        else:
            unassigned[0] += 1
            unassigned[1] += end - start
    print(f"run {run}: {counts}; wall {wall:.2f} s; {len(jobs)} jobs")
    print(f"{'step':40} {'calls':>5} {'jobs':>5} {'jobs s':>7} {'wall s':>7}")
    for label, (calls, njobs, job_s, wall_s) in rows.items():
        shown = "-" if label == "fetch_batches" else f"{wall_s:7.2f}"
        print(f"{label:40} {calls:5d} {njobs:5d} {job_s:7.2f} {shown:>7}")
    print(f"{'(outside the engine calls)':40} {'':5} {unassigned[0]:5d} {unassigned[1]:7.2f}")


if __name__ == "__main__":
    main()
