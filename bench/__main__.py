"""`python -m bench`: run the scenarios, print the results, write them to bench/results.md.

python -m bench                  # everything (a few minutes)
python -m bench --quick          # a small smoke run, written to bench/out/
python -m bench --only S1,S3     # some scenarios
python -m bench --only S4r       # a scheduled job's second run, replacing every row
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from bench import report
from bench.agents import run_agent_scenario
from bench.clients.base import CLIENT_NAMES
from bench.console import to_stderr
from bench.machine import describe_machine
from bench.measure import Measurement
from bench.scale import SecondRuns, run_scale, run_second_runs
from bench.scenarios import (
    AGENT_SCENARIOS,
    ALL_IDS,
    QUICK_SCALE_SIZES,
    SCALE_SIZES,
    SECOND_RUN_OUTPUTS,
    SECOND_RUN_SIZES,
)
from bench.targets import check_targets

HERE = Path(__file__).resolve().parent


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only", default=",".join(ALL_IDS), help="scenarios to run, e.g. S1,S3 (default: all)"
    )
    parser.add_argument(
        "--clients", default=",".join(CLIENT_NAMES), help="clients to run (default: all)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds of the raw client and agentbatch, median reported (default: S1, S5: 3)",
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="rows of every agent scenario (overrides sizes)"
    )
    parser.add_argument(
        "--scale-sizes",
        default=None,
        help="S4 and S4r sizes, e.g. 100000,1000000 (overrides sizes)",
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the Markdown")
    args = parser.parse_args(argv)
    if args.rows is not None and args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.scale_sizes is not None:
        try:
            args.scale_sizes = tuple(int(size) for size in args.scale_sizes.split(","))
        except ValueError:
            parser.error(f"--scale-sizes: comma-separated row counts, got {args.scale_sizes!r}")
        if not args.scale_sizes or min(args.scale_sizes) < 1:
            parser.error("--scale-sizes: every size must be at least 1")
    args.only = _choices(args.only, ALL_IDS, "--only", parser)
    args.clients = _choices(args.clients, CLIENT_NAMES, "--clients", parser)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.out is None:
        args.out = HERE / ("out/results-quick.md" if args.quick else "results.md")
    return args


def _choices(
    text: str, allowed: Sequence[str], option: str, parser: argparse.ArgumentParser
) -> tuple[str, ...]:
    chosen = tuple(item.strip() for item in text.split(",") if item.strip())
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        parser.error(f"{option}: choose from {', '.join(allowed)} (got {text!r})")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    when = datetime.now(timezone.utc)
    scenarios = [s.quick() if args.quick else s for s in AGENT_SCENARIOS if s.id in args.only]
    if args.rows is not None:
        scenarios = [s.with_rows(args.rows) for s in scenarios]
    sizes = args.scale_sizes or (QUICK_SCALE_SIZES if args.quick else SCALE_SIZES)
    second_sizes = args.scale_sizes or (QUICK_SCALE_SIZES if args.quick else SECOND_RUN_SIZES)
    measured: list[Measurement] = []
    scale: list[Measurement] = []
    second_runs: SecondRuns | None = None
    sections: list[str] = []
    with tempfile.TemporaryDirectory(prefix="agentbatch-bench-") as tmp:
        root = Path(tmp)
        for scenario in scenarios:
            to_stderr(f"{scenario.id}: {scenario.title} ({scenario.rows:,} rows)")
            results = run_agent_scenario(scenario, args.clients, root, rounds=args.repeat)
            measured += results
            sections.append(report.scenario_section(scenario, results))
        if "S4" in args.only:
            to_stderr("S4: scale and memory")
            scale = run_scale(sizes, root)
            sections.append(report.scale_section(scale))
        if "S4r" in args.only:
            to_stderr("S4r: second run replacing every row")
            second_runs = run_second_runs(second_sizes, SECOND_RUN_OUTPUTS, root)
            sections.append(report.second_run_section(second_runs))
    checks = check_targets(scenarios, measured, scale, second_runs)
    command = "python -m bench" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    title = (
        f"Run {when:%Y-%m-%d %H:%M} UTC with `{command}`; took {time.monotonic() - started:.0f} s."
    )
    text = report.document(title, describe_machine(), [report.targets_section(checks), *sections])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    to_stderr(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
