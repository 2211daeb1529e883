"""Memory flat in the number of rows, on every path a user runs: peak RSS at N and 4N rows.

    python -m bench.memory_paths                        # every path, 50,000 and 200,000 rows
    python -m bench.memory_paths --rows 20000 --paths api-parquet,show
    python -m bench.memory_paths --trace --paths eval   # + tracemalloc's top allocations

Each path and size runs in its own process (`--child`), against one fast agent (another process,
`tests/support/fast_agent.py`) and, for `dbsql`, the loopback warehouse (a third process,
`bench/warehouse.py`). A child notes its peak RSS once it has imported what it runs and built its
inputs (a pandas source is built before: the frame is the user's), then runs the path and notes
the peak again. The table prints both, and the growth from N to 4N rows per 1,000 added rows: a
path whose memory is flat in the rows grows by little more than noise and the engine's capped
buffers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from bench import warehouse
from bench.data import KEY, REQUEST_SQL, write_table

PATHS = (
    "api-parquet",
    "api-csv",
    "api-pandas",
    "cli-parquet",
    "dbsql",
    "spark-driver",
    "spark-driver-cluster",
    "eval",
    "compare",
    "show",
    "estimate",
    "ledger",
)
SOURCE = "main.bench.tickets"
OUTPUT = "main.bench.answers"
ENDPOINT = "apps/bench-agent"
CHILD_TIMEOUT_S = 1200.0
# The local target's settings for the api-* paths, e.g. '{"memory_limit": "64MB"}' to tell the
# DuckDB buffer pool's growth (capped) from the rest.
LOCAL_SETTINGS: dict[str, Any] = json.loads(os.environ.get("MEMORY_PATHS_LOCAL_SETTINGS", "{}"))


def job_spec(source: str = SOURCE, *, evaluation: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "memory",
        "source": {"table": source, "key": KEY, "columns": ["subject"]},
        "request": REQUEST_SQL,
        "agent": {"endpoint": ENDPOINT, "api": "responses", "max_concurrency": 64},
        "output": {"table": OUTPUT, "mode": "merge"},
    }
    if evaluation:
        # The fast agent answers "ok": exact_match against the subject scores every row 0.
        spec["evaluation"] = {
            "expected": "subject",
            "scorers": [{"exact_match": None}, {"error_rate": None}, {"latency": None}],
        }
    return spec


def peak_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage: after fork and exec, ru_maxrss starts at
    the parent's RSS (Linux keeps the forked copy's high-water mark), which hid small peaks."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB elsewhere


# --- one path in this process -------------------------------------------------------------------


def child(path: str, rows: int, workdir: Path, agent: str, trace: bool) -> dict[str, Any]:
    """Set up `path` (imports, inputs), note the peak, run it, note the peak again."""
    import agentbatch  # noqa: F401 - imports are the baseline, not the rows' cost

    run = _setups()[path](rows, workdir, agent)
    if trace:
        import tracemalloc

        tracemalloc.start(10)
    before = peak_mb()
    summary = run()
    after = peak_mb()
    found: dict[str, Any] = {"before_mb": before, "peak_mb": after, "summary": summary}
    with contextlib.suppress(ImportError):
        import pyarrow as pa

        found["arrow_peak_mb"] = pa.default_memory_pool().max_memory() / 2**20
    if trace:
        import tracemalloc

        snapshot = tracemalloc.take_snapshot()
        top = snapshot.statistics("traceback")[:8]
        found["trace_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        found["top"] = [f"{s.size / 2**20:.1f} MB\n" + "\n".join(s.traceback.format()) for s in top]
    return found


Run = Callable[[], Any]


def _setups() -> dict[str, Callable[[int, Path, str], Run]]:
    return {
        "api-parquet": lambda n, w, a: _api(w, a, str(w.parent / "tickets.parquet")),
        "api-csv": lambda n, w, a: _api(w, a, str(w.parent / "tickets.csv")),
        "api-pandas": _api_pandas,
        "cli-parquet": _cli,
        "dbsql": _dbsql,
        "spark-driver": _spark_driver,
        "spark-driver-cluster": _spark_driver_cluster,
        "eval": _eval,
        "compare": _compare,
        "show": _show,
        "estimate": _estimate,
        "ledger": _ledger,
    }


def _job_file(workdir: Path, spec: dict[str, Any]) -> Path:
    path = workdir / "jobs" / "memory.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("strategy", "selected", "rows", "sent", "ok", "errors", "table_rows")
    return {k: summary.get(k) for k in keep}


def _api(workdir: Path, agent: str, source: Any) -> Run:
    import agentbatch

    job = _job_file(workdir, job_spec())

    def run() -> Any:
        result = agentbatch.run(
            job,
            tables={SOURCE: source},
            endpoints={ENDPOINT: agent},
            project_dir=workdir,
            progress=False,
            settings=LOCAL_SETTINGS,
        )
        if result.engine is not None:
            result.engine.close()
        return _brief(result.summary)

    return run


def _api_pandas(rows: int, workdir: Path, agent: str) -> Run:
    import pandas as pd

    frame = pd.read_parquet(workdir.parent / "tickets.parquet")
    return _api(workdir, agent, frame)


def _cli(rows: int, workdir: Path, agent: str) -> Run:
    from agentbatch.cli.main import main

    job = _job_file(workdir, job_spec())
    argv = [
        "run",
        str(job),
        "--table",
        f"{SOURCE}={workdir.parent / 'tickets.parquet'}",
        "--endpoint",
        f"{ENDPOINT}={agent}",
        "--project-dir",
        str(workdir),
        "--json",
    ]

    def run() -> Any:
        with open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
            return {"exit": main(argv)}

    return run


def _dbsql(rows: int, workdir: Path, agent: str) -> Run:
    import agentbatch

    os.environ.update(warehouse.environment(workdir))
    importlib_modules("agentbatch.engines.databricks_sql.engine", "databricks.sql")
    spec = job_spec(f"main.bench.tickets_{rows}")
    spec["output"]["table"] = f"main.bench.answers_{rows}"  # one warehouse serves both sizes
    job = _job_file(workdir, spec)
    settings = warehouse.settings(os.environ["MEMORY_PATHS_WAREHOUSE"])

    def run() -> Any:
        result = agentbatch.run(
            job,
            target="databricks-sql",
            settings=settings,
            endpoints={ENDPOINT: agent},
            project_dir=workdir,
            state_dir=workdir / "state",
            progress=False,
        )
        if result.engine is not None:
            result.engine.close()
        return _brief(result.summary)

    return run


def _spark_driver(rows: int, workdir: Path, agent: str) -> Run:
    import agentbatch
    from agentbatch.engines.spark import session as spark_session

    settings = {
        "master": "local[2]",
        "warehouse_dir": str(workdir / "warehouse"),
        "rest_fallback_on": "driver",
        "spark_conf": {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"},
    }
    spark = spark_session.local_session(settings)
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1).count()
    job = _job_file(workdir, job_spec())

    def run() -> Any:
        result = agentbatch.run(
            job,
            target="spark",
            settings=settings,
            tables={SOURCE: str(workdir.parent / "tickets.parquet")},
            endpoints={ENDPOINT: agent},
            project_dir=workdir,
            state_dir=workdir / "state",
            progress=False,
        )
        return _brief(result.summary)

    return run


def _spark_driver_cluster(rows: int, workdir: Path, agent: str) -> Run:
    """`spark-driver` as on a cluster: answers handed to Spark from memory, not a local file
    (the session is local here, so the engine is told it is not)."""
    from agentbatch.engines.spark import session

    session.is_local = lambda spark: False
    return _spark_driver(rows, workdir, agent)


def _eval(rows: int, workdir: Path, agent: str) -> Run:
    from agentbatch.evaluation.run import evaluate

    job = _job_file(workdir, job_spec(evaluation=True))
    source = str(workdir.parent / "tickets.parquet")

    def run() -> Any:
        result = evaluate(
            job,
            tables={SOURCE: source},
            endpoints={ENDPOINT: agent},
            project_dir=workdir,
            progress=False,
            mlflow=False,
        )
        return {"scored": result.scored.table.num_rows}

    return run


def _compare(rows: int, workdir: Path, agent: str) -> Run:
    from agentbatch.evaluation.run import compare

    job = _job_file(workdir, job_spec(evaluation=True))
    source = str(workdir.parent / "tickets.parquet")

    def run() -> Any:
        result = compare(
            job,
            endpoint_b=agent,
            tables={SOURCE: source},
            endpoints={ENDPOINT: agent},
            project_dir=workdir,
            progress=False,
            mlflow=False,
        )
        return {"a": result.a.scored.table.num_rows, "b": result.b.scored.table.num_rows}

    return run


def _show(rows: int, workdir: Path, agent: str) -> Run:
    """`agentbatch show` (its default 20 rows) over an output of `rows` rows, answered by the
    instant builtin agent in a set-up process of its own (its peak is not the show's)."""
    from agentbatch.cli.main import main

    job = _job_file(workdir, job_spec())
    setup = [sys.executable, "-m", "agentbatch", "run", str(job), "--project-dir", str(workdir)]
    setup += ["--table", f"{SOURCE}={workdir.parent / 'tickets.parquet'}"]
    setup += ["--endpoint", f"{ENDPOINT}=builtin:instant"]
    subprocess.run(setup, check=True, capture_output=True)
    os.chdir(workdir)

    def run() -> Any:
        with open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
            return {"exit": main(["show", OUTPUT, "--json"])}

    return run


def _estimate(rows: int, workdir: Path, agent: str) -> Run:
    import agentbatch

    job = _job_file(workdir, job_spec())

    def run() -> Any:
        found = agentbatch.estimate(
            job,
            tables={SOURCE: str(workdir.parent / "tickets.parquet")},
            endpoints={ENDPOINT: agent},
            project_dir=workdir,
            sample=20,
            seed=1,
        )
        return {"to_send": found.to_send, "sampled": found.sampled}

    return run


def _ledger(rows: int, workdir: Path, agent: str) -> Run:
    """The checkpoint alone: `rows` answers appended in group commits of 500 rows (the bulk
    writer's), read back for the write, compacted."""
    import pyarrow as pa

    from agentbatch.agent.ledger import Ledger
    from agentbatch.results import FINGERPRINT_COLUMN

    def batch(start: int, size: int) -> pa.RecordBatch:
        keys = pa.array(range(start, start + size), pa.int64())
        return pa.RecordBatch.from_pydict(
            {
                KEY: keys,
                "response": pa.array([f"answer {i} " * 8 for i in range(start, start + size)]),
                "error": pa.nulls(size, pa.string()),
                FINGERPRINT_COLUMN: pa.array(["fp"] * size),
            }
        )

    def run() -> Any:
        with Ledger(workdir / "memory.ledger.sqlite", key=KEY) as ledger:
            for start in range(0, rows, 500):
                ledger.append(batch(start, min(500, rows - start)))
            read = sum(b.num_rows for b in ledger.rows_of_run())
            ledger.compact()
        return {"read": read}

    return run


def importlib_modules(*names: str) -> None:
    import importlib

    for name in names:
        importlib.import_module(name)


# --- the parent: agent, warehouse, every path and size ------------------------------------------


@contextlib.contextmanager
def _process(*argv: str) -> Iterator[str]:
    """A helper process that prints its address first; stopped on leaving."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(30)


def _inputs(folder: Path, rows: int) -> None:
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    parquet = write_table(folder / "tickets.parquet", rows)
    pv.write_csv(pq.read_table(parquet), folder / "tickets.csv")


def measure(path: str, rows: int, folder: Path, agent: str, trace: bool) -> dict[str, Any]:
    workdir = folder / path
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "memory.json"
    command = [sys.executable, "-m", "bench.memory_paths", "--child", path, str(rows)]
    command += [str(workdir), agent, str(out)] + (["--trace"] if trace else [])
    done = subprocess.run(command, timeout=CHILD_TIMEOUT_S, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    found: dict[str, Any] = json.loads(out.read_text())
    return found


def report(path: str, small: int, large: int, at: dict[int, dict[str, Any]]) -> str:
    a, b = at[small], at[large]
    if "error" in a or "error" in b:
        return f"| {path} | {a.get('error', '')} {b.get('error', '')} | | | |"
    grow_a = a["peak_mb"] - a["before_mb"]
    grow_b = b["peak_mb"] - b["before_mb"]
    per_k = (b["peak_mb"] - a["peak_mb"]) / ((large - small) / 1000)
    return (
        f"| {path} | {a['peak_mb']:.0f} (+{grow_a:.0f}) | {b['peak_mb']:.0f} (+{grow_b:.0f}) "
        f"| {per_k:.3f} | {a.get('arrow_peak_mb', 0):.0f} / {b.get('arrow_peak_mb', 0):.0f} "
        f"| {b['summary']} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_paths", description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000, help="N (4N is measured too)")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--trace", action="store_true", help="tracemalloc top allocations")
    parser.add_argument(
        "--agent", help="the agent's URL, or builtin:instant (default: a fast agent on loopback)"
    )
    parser.add_argument("--child", nargs=5, metavar=("PATH", "ROWS", "WORKDIR", "AGENT", "OUT"))
    args = parser.parse_args(argv)
    if args.child:
        path, rows, workdir, agent, out = args.child
        found = child(path, int(rows), Path(workdir), agent, args.trace)
        Path(out).write_text(json.dumps(found, default=str), encoding="utf-8")
        return 0
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    sizes = (args.rows, 4 * args.rows)
    fast_agent = str(Path(__file__).resolve().parents[1] / "tests" / "support" / "fast_agent.py")
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memory-paths-")))
        agent = args.agent or stack.enter_context(_process(fast_agent))
        for rows in sizes:
            _inputs(root / str(rows), rows)
        if "dbsql" in paths:
            volumes = root / "volumes"
            host = stack.enter_context(warehouse.warehouse_process(volumes))
            os.environ["MEMORY_PATHS_WAREHOUSE"] = host
            for rows in sizes:
                parquet = root / str(rows) / "tickets.parquet"
                warehouse.load_table(host, volumes, f"main.bench.tickets_{rows}", parquet)
        lines = [
            f"| path | peak MB at {sizes[0]:,} (+ above set-up) | at {sizes[1]:,} "
            "| MB per 1,000 added rows | Arrow pool peak MB | summary at 4N |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for path in paths:
            at = {rows: measure(path, rows, root / str(rows), agent, args.trace) for rows in sizes}
            lines.append(report(path, *sizes, at))
            sys.stderr.write(lines[-1] + "\n")
            for rows in sizes:
                for top in at[rows].get("top", [])[:4]:
                    sys.stderr.write(f"  [{path} {rows:,}] {top}\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
