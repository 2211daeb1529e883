"""How close is `agentbatch estimate` to the run that follows it?

For each example job and trial, in a fresh project folder: `agentbatch estimate` (a sample of 20,
kept), then `agentbatch run` for the rest, both as real CLI processes against the loopback demo
agent (which reports token usage); prints the projected tokens and wall time of the calls beside
what the run measured.

    python -m bench.estimate_accuracy --trials 5 --latency-ms 300 --jitter-ms 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.faults import FaultConfig

ROOT = Path(__file__).resolve().parents[1]
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"
# Example jobs on the local engine: (job file, endpoint to map to the loopback agent).
JOBS = (
    ("ticket_triage.yml", "apps/triage-agent"),
    ("eval_triage.yml", "apps/triage-agent"),
    ("summarise_tickets.yml", "databricks-meta-llama-3-3-70b-instruct"),
)


def _cli(folder: Path, url: str, job: str, endpoint: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentbatch",
            *args[:1],
            str(ROOT / "jobs" / job),
            "--table",
            f"main.support.tickets={TICKETS}",
            "--endpoint",
            f"{endpoint}={url}",
            "--project-dir",
            str(folder),
            "--json",
            *args[1:],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{job} {args[0]} failed ({done.returncode}): {done.stderr[-500:]}")
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def trial(url: str, job: str, endpoint: str, sample: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        found = _cli(Path(folder), url, job, endpoint, "estimate", "--sample", str(sample))
        run = _cli(Path(folder), url, job, endpoint, "run", "--show", "0")["summary"]
    used = run["input_tokens"] + run["output_tokens"]
    return {
        "rows": run["sent"],
        "projected_rows": found["remaining"],
        "tokens": used,
        "projected_tokens": found["projected_tokens"]["mean"],
        "wall_s": run["wall_s"],
        "projected_wall_s": found["projected_wall_s"],
        "projected_wall_s_high": found["projected_wall_s_high"] or found["projected_wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--capacity", type=int, help="requests in flight before 429s")
    parser.add_argument("--jobs", nargs="*", help="job files of jobs/ to measure (default all)")
    args = parser.parse_args()
    faults = FaultConfig(
        latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, capacity=args.capacity
    )
    print(
        f"loopback agent: latency {args.latency_ms:g} ms +- {args.jitter_ms:g} ms, "
        f"capacity {args.capacity or 'unlimited'}"
    )
    print(
        "| job | trial | rows | tokens est / run | error | wall s est / run | error "
        "| wall s at the sample's concurrency |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with serve_agent(faults) as agent:
        for job, endpoint in JOBS:
            if args.jobs and job not in args.jobs:
                continue
            token_errors, wall_errors = [], []
            for number in range(1, args.trials + 1):
                r = trial(agent.url, job, endpoint, args.sample)
                assert r["rows"] == r["projected_rows"], r
                token_error = (r["projected_tokens"] - r["tokens"]) / r["tokens"]
                wall_error = (r["projected_wall_s"] - r["wall_s"]) / r["wall_s"]
                token_errors.append(abs(token_error))
                wall_errors.append(abs(wall_error))
                print(
                    f"| {job} | {number} | {r['rows']:.0f} | {r['projected_tokens']:,.0f} / "
                    f"{r['tokens']:,.0f} | {token_error:+.1%} | {r['projected_wall_s']:.2f} / "
                    f"{r['wall_s']:.2f} | {wall_error:+.1%} | {r['projected_wall_s_high']:.2f} |",
                    flush=True,
                )
            print(
                f"| {job} | mean abs | | | {statistics.fmean(token_errors):.1%} | | "
                f"{statistics.fmean(wall_errors):.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
