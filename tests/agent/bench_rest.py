"""Throughput of the REST fallback against the demo agent server in its own process.

Not a test (no timing assertions belong in tests): run it to measure.

    python -m tests.agent.bench_rest                  # every scenario
    python -m tests.agent.bench_rest capacity-32      # one of them

Scenarios: the agent admits 32 concurrent calls at 50 ms and 429s beyond (ideal 640 rows/s); an
unlimited agent at 50 ms and at 500 ms; the same capacity-bound agent streaming; and 1M rows
through `builtin:instant` (run + reading the answers back for the sink).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from agentbatch.agent.bulk import run_bulk
from agentbatch.agent.calls import CallSpec, call_fingerprint, row_fingerprint
from agentbatch.agent.ledger import Ledger

HTTP_SCENARIOS = {
    "capacity-32": ({"latency-ms": 50, "capacity": 32}, 10_000, False),
    "unlimited-50ms": ({"latency-ms": 50}, 5_000, False),
    "unlimited-500ms": ({"latency-ms": 500}, 3_000, False),
    "capacity-32-stream": ({"latency-ms": 50, "capacity": 32}, 5_000, True),
}


def batches(spec: CallSpec, rows: int, size: int = 1_000) -> Iterator[pa.RecordBatch]:
    call_fp = call_fingerprint(spec)
    for start in range(0, rows, size):
        ids = list(range(start, min(rows, start + size)))
        texts = [f"ticket {i}: the printer is broken" for i in ids]
        yield pa.RecordBatch.from_pydict(
            {
                "id": pa.array(ids, pa.int64()),
                "_request": pa.array(texts),
                "request_fingerprint": pa.array([row_fingerprint(call_fp, t) for t in texts]),
            }
        )


def http_scenario(name: str) -> None:
    options, rows, stream = HTTP_SCENARIOS[name]
    args = [sys.executable, "-m", "agentbatch.testing.agent_server"]
    for option, value in options.items():
        args += [f"--{option}", str(value)]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        spec = CallSpec(endpoint=url, stream=stream, timeout_s=60)
        with (
            tempfile.TemporaryDirectory() as folder,
            Ledger(Path(folder) / "l", key="id") as ledger,
        ):
            stats = asyncio.run(run_bulk(batches(spec, rows), call=spec, key="id", ledger=ledger))
        with urllib.request.urlopen(f"{url}/_stats") as reply:
            served = json.load(reply)
    finally:
        server.terminate()
        server.wait()
    d = stats.as_dict()
    share = d["http_429"] / max(1, d["requests"])
    print(
        f"{name}: {rows} rows, {d['rows_per_s']} rows/s, 429s {share:.1%} of requests, "
        f"peak limit {d['peak_concurrency']}, server max in flight {served['max_in_flight']}, "
        f"p50 {d['p50_latency_ms']} ms, errors {d['errors']}"
    )


def builtin_scenario(rows: int = 1_000_000, size: int = 50_000) -> None:
    spec = CallSpec(endpoint="builtin:instant")
    call_fp = call_fingerprint(spec)
    inputs = []
    for start in range(0, rows, size):
        ids = pa.array(range(start, min(rows, start + size)), pa.int64())
        texts = pc.binary_join_element_wise("ticket ", pc.cast(ids, pa.string()), ": broken", "")
        inputs.append(
            pa.RecordBatch.from_pydict(
                {
                    "id": ids,
                    "_request": texts,
                    "request_fingerprint": pa.array([call_fp] * len(ids)),
                }
            )
        )
    with tempfile.TemporaryDirectory() as folder, Ledger(Path(folder) / "l", key="id") as ledger:
        started = time.perf_counter()
        asyncio.run(run_bulk(inputs, call=spec, key="id", ledger=ledger))
        ran = time.perf_counter() - started
        read = sum(b.num_rows for b in ledger.rows_of_run(200_000))
        total = time.perf_counter() - started
    print(
        f"builtin-1M: run {rows / ran:,.0f} rows/s; run + read back {read:,} rows: "
        f"{rows / total:,.0f} rows/s"
    )


def main(names: list[str]) -> None:
    for name in names or [*HTTP_SCENARIOS, "builtin-1M"]:
        if name == "builtin-1M":
            builtin_scenario()
        else:
            http_scenario(name)


if __name__ == "__main__":
    main(sys.argv[1:])
