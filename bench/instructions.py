"""Client CPU per row as instructions, not seconds: `python -m bench.instructions [S6] [--rows N]`.

CPU time on a shared two-core machine moves by more than the few percent a change to the hot
path saves. callgrind counts the instructions a process executes, which do not depend on what
else the machine is doing. Each client runs once under `valgrind --tool=callgrind` (the agent
server in its own process, not under valgrind, as in the benchmark); instrumentation is off
during the set-up and on for the timed part only (a small C library whose start()/stop() the
worker calls, built here with the compiler and valgrind's header). Reported: instructions per
answered row (all threads of the client) and the ratio to the raw aiohttp client's.

`agentbatch.run dbsql` (not among the defaults) runs on the databricks-sql target: its set-up
starts the loopback SQL warehouse in a process of its own (valgrind follows no child process)
and loads the source table there, so the SQL a warehouse runs on Databricks is not counted.

Under callgrind a client runs some fifty times slower, so the agent looks nearly instant to
it: the figure is the client's own work per row, not its behaviour at the scenario's rate.
Needs valgrind (with `valgrind/callgrind.h`) and a C compiler.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.agents import prepare_inputs
from bench.clients.base import CLIENT_NAMES
from bench.scenarios import AGENT_SCENARIOS
from bench.server import agent_process
from bench.setups import setups
from bench.worker import CALLGRIND_TOGGLE_ENV

DEFAULT_CLIENTS = ("raw aiohttp", "agentbatch run_bulk", "agentbatch.run")
BASELINE = "raw aiohttp"
TIMEOUT_S = 1800.0

_TOGGLE_SOURCE = """
#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void stop(void) { CALLGRIND_DUMP_STATS_AT("timed"); CALLGRIND_STOP_INSTRUMENTATION; }
"""


@dataclass
class Count:
    client: str
    rows: int
    ok: int
    instructions: int

    @property
    def per_row(self) -> float:
        return self.instructions / self.ok if self.ok else 0.0


def build_toggle(folder: Path) -> Path:
    source = folder / "callgrind_toggle.c"
    source.write_text(_TOGGLE_SOURCE, encoding="ascii")
    library = folder / "callgrind_toggle.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source)],
        check=True,
        capture_output=True,
    )
    return library


def timed_instructions(dump: str) -> int:
    """The `summary:` of callgrind's dump of the timed part (one events column: Ir)."""
    for line in dump.splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError("no 'summary:' line in the callgrind dump")


def count_client(client: str, config: object, toggle: Path, folder: Path) -> Count:
    out = folder / "measurement.json"
    dumps = folder / "callgrind.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={dumps}.%p",
        sys.executable,
        "-m",
        "bench.worker",
        client,
        json.dumps(asdict(config)),  # type: ignore[call-overload]
        str(out),
    ]
    env = {**os.environ, CALLGRIND_TOGGLE_ENV: str(toggle)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{client} failed under callgrind:\n{done.stderr[-3000:]}")
    # The dump the stop() request wrote, all threads together: `<file>.<pid>.1` (the
    # end-of-program dump is `<file>.<pid>`).
    [timed] = folder.glob("callgrind.out.*.1")
    measured = json.loads(out.read_text(encoding="utf-8"))
    return Count(
        client, measured["rows"], measured["ok"], timed_instructions(timed.read_text("utf-8"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", nargs="?", default="S6")
    parser.add_argument(
        "--rows",
        default="1000,4000",
        help="row counts, comma-separated; two or more also give the cost per added row "
        "(a run's fixed cost left out) and the fixed cost",
    )
    parser.add_argument("--clients", default=",".join(DEFAULT_CLIENTS))
    parser.add_argument(
        "--keep", type=Path, default=None, help="copy each client's callgrind dump here"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("cc") is None:
        parser.error("needs valgrind and a C compiler (cc)")
    base = next(s for s in AGENT_SCENARIOS if s.id == args.scenario)
    sizes = sorted({int(n) for n in args.rows.split(",")})
    clients = tuple(name.strip() for name in args.clients.split(","))
    unknown = [name for name in clients if name not in CLIENT_NAMES]
    if unknown:
        parser.error(f"unknown clients {', '.join(unknown)}; one of: {', '.join(CLIENT_NAMES)}")
    counts: list[Count] = []
    with tempfile.TemporaryDirectory(prefix="agentbatch-instructions-") as tmp:
        root = Path(tmp)
        toggle = build_toggle(root)
        for rows in sizes:
            # The clients named, whether or not the scenario's timed runs have them (the
            # databricks-sql client is measured here only).
            scenario = dataclasses.replace(base, rows=rows, clients=clients)
            inputs = prepare_inputs(scenario, root / str(rows))
            with agent_process(scenario) as agent:
                for setup in setups(scenario, clients):
                    folder = inputs / f"client-{_slug(setup.client)}"
                    folder.mkdir()
                    agent.reset()
                    config = setup.config(agent.url, str(inputs), str(folder), scenario)
                    count = count_client(setup.client, config, toggle, folder)
                    if args.keep is not None:
                        _keep(folder, args.keep, f"{_slug(setup.client)}.{rows}")
                    sys.stderr.write(
                        f"{count.client}, {rows:,} rows: {count.per_row:,.0f} instructions/row\n"
                    )
                    counts.append(count)
    sys.stdout.write(report(base.id, counts))
    return 0


def _keep(folder: Path, into: Path, name: str) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for dump in folder.glob("callgrind.out.*.1"):
        shutil.copy(dump, into / f"callgrind.{name}.out")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower())


@dataclass
class Line:
    """A client's figures over its runs: at its largest size, and per added row."""

    client: str
    rows: int
    per_row: float
    # Instructions per row added (a least-squares line over the sizes), and the line's fixed
    # cost (its intercept); None with one size.
    marginal: float | None
    fixed: float | None


def fit(counts: list[Count]) -> Line:
    """The least-squares line of instructions over rows answered for one client's runs."""
    largest = max(counts, key=lambda c: c.ok)
    if len({c.ok for c in counts}) < 2:
        return Line(largest.client, largest.ok, largest.per_row, None, None)
    n = len(counts)
    mean_x = sum(c.ok for c in counts) / n
    mean_y = sum(c.instructions for c in counts) / n
    sxx = sum((c.ok - mean_x) ** 2 for c in counts)
    sxy = sum((c.ok - mean_x) * (c.instructions - mean_y) for c in counts)
    slope = sxy / sxx
    return Line(largest.client, largest.ok, largest.per_row, slope, mean_y - slope * mean_x)


def report(scenario: str, counts: list[Count]) -> str:
    clients = list(dict.fromkeys(c.client for c in counts))
    lines = {name: fit([c for c in counts if c.client == name]) for name in clients}
    base = lines.get(BASELINE)
    out = [
        f"{scenario}: client instructions per answered row (callgrind, timed part only)",
        "",
        f"| client | rows | instructions/row | vs {BASELINE} | per added row | vs {BASELINE} "
        "| fixed (M instructions) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for line in lines.values():
        ratio = _ratio(line.per_row, base.per_row if base else None)
        marginal = f"{line.marginal:,.0f}" if line.marginal is not None else "-"
        marginal_ratio = _ratio(line.marginal, base.marginal if base else None)
        fixed = f"{line.fixed / 1e6:,.0f}" if line.fixed is not None else "-"
        out.append(
            f"| {line.client} | {line.rows:,} | {line.per_row:,.0f} | {ratio} | {marginal} "
            f"| {marginal_ratio} | {fixed} |"
        )
    return "\n".join(out) + "\n"


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


if __name__ == "__main__":
    raise SystemExit(main())
