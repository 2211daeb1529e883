"""The results as Markdown: the targets, one table per scenario, and how it was measured."""

from __future__ import annotations

import os
from collections.abc import Iterable

from bench.measure import Measurement
from bench.scale import OUTPUT_TITLES, SecondRuns
from bench.scenarios import Scenario
from bench.setups import COOKBOOK_TIME_BUDGET_S
from bench.targets import Check, memory_growth

_HEADER = (
    "| client | setup | rows | rows/s | x ideal | x raw | CPU ms/row | server CPU ms/req "
    "| 429s | failed | peak RSS MB | fixed s | busy rows/s |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)

NOTES = f"""\
## How this was measured

- Every client runs in its own process on the same rows (the bundled support tickets, repeated);
  the agent server runs in another process (`python -m agentbatch.testing.agent_server`), one
  server per scenario, its counters reset before each client.
- **rows/s** is answered rows over the client's wall time, from the first request to the last
  answer (for agentbatch.run: the whole run, engine reads and writes included). Imports and
  reading the inputs are set-up and not timed.
- **x ideal** is rows/s over the ideal (in-flight requests / latency); **x raw** over the raw
  aiohttp client of the same run.
- **fixed s** is the client's wall time outside the agent's busy window (first request to last
  reply, on the server's clock): what a run costs besides its calls (engine start, reads, SQL,
  writes; for the spark target its jobs). **busy rows/s** is rows over that window.
- **CPU ms/row** is the client process's user + system CPU time (all threads) over the rows it
  finished; **server CPU ms/req** the server process's over the requests it received.
- **429s** are the 429 replies the server sent (every client alike); **failed** rows ended
  without an answer; **peak RSS** is the client process's own high-water mark (`VmHWM`;
  not `ru_maxrss`, which keeps the parent's peak across fork and exec).
- **This machine has few cores, and the client and the agent server compete for them** (as do
  any other jobs on it). Absolute numbers vary run to run; compare ratios within one run. Where
  a target compares clients (S1, S5, S6; `--repeat N` for all) every client runs in several
  interleaved rounds: the table shows the median run, with every round's rows/s beside it, and
  a target's ratio is the median of the per-round ratios (each round listed beside it).
- Limits this machine cannot lift: in S6 (5 ms) every client is CPU-bound (the ideal rate needs
  about ten cores at the measured CPU per row of client and agent server together; they share
  two, with whatever else runs here), so its rows/s follow the CPU left to each round and the
  per-round ratios scatter; CPU per row is the figure that compares the clients there. In S7
  and S8 a Spark run's own jobs (counting the selection, checkpointing the inputs, shuffles, the
  write) take 10-20 s on these cores whatever the rows: the end-to-end ratios are bounded by
  that fixed cost, and **busy rows/s** is the rate of the calls themselves. S7's Python worker
  processes are not the driver's: its CPU ms/row counts the driver only.
- Configurations: every client gets the scenario's concurrency, except agentbatch in S3 (defaults:
  it finds the rate itself). The raw baseline is told the capacity in S3 (an oracle). The
  cookbook-style processor has only rate buckets: its rate is concurrency / latency (S3: 90% of
  the capacity's rate), and it stops after {COOKBOOK_TIME_BUDGET_S:.0f}s (its 15 s pause after any
  429 would otherwise run for many minutes; rows left are `unfinished`). Clients that retry make
  up to 8 retries. Every client gets the same rows, rounds and untimed set-up (imports, building
  its client), except the sequential openai loop: it runs once, on the first rows only (its rate
  is steady long before; the setup column says how many).
"""


def scenario_section(scenario: Scenario, results: list[Measurement]) -> str:
    ideal = scenario.ideal_rows_per_s
    capacity = f", capacity {scenario.capacity} (429 beyond)" if scenario.capacity else ""
    stream = ", streaming" if scenario.stream else ""
    lines = [
        f"## {scenario.id}: {scenario.title}",
        "",
        f"{scenario.latency_ms:g} ms latency, concurrency {scenario.concurrency}{capacity}"
        f"{stream}; {scenario.rows:,} rows; ideal {ideal:,.0f} rows/s.",
        "",
        _HEADER,
    ]
    raw = next((m for m in results if m.client == "raw aiohttp" and not m.error), None)
    for m in results:
        lines.append(_row(m, ideal, raw.rows_per_s if raw else None))
    limits = [
        f"- {m.client}: {limit_of(m, scenario)}"
        for m in results
        if not m.error
        and (m.client.startswith(("agentbatch", "spark")) or m.client == "raw aiohttp")
    ]
    if limits:
        lines += ["", "What limits each (from the measured CPU time, the agent's busy window):", ""]
        lines += limits
    return "\n".join(lines)


def limit_of(m: Measurement, scenario: Scenario, cores: int | None = None) -> str:
    """What bounds a client's rows/s here, read off its measurements: its fixed cost, the
    machine's cores (client and agent server share them), the client's one event loop, or the
    agent (its capacity, or latency x concurrency)."""
    cores = cores or os.cpu_count() or 1
    if not m.wall_s:
        return "not measured"
    client = m.cpu_s / m.wall_s
    server = (m.server_cpu_s or 0.0) / m.wall_s
    fixed = m.fixed_s or 0.0
    share = m.rows_per_s / scenario.ideal_rows_per_s
    if fixed >= 0.3 * m.wall_s:
        return (
            f"its fixed cost: {fixed:.1f} s of {m.wall_s:.1f} s outside the agent's busy window "
            f"({_num(m.busy_rows_per_s, 0)} rows/s while busy)"
        )
    per_row = (m.cpu_s + (m.server_cpu_s or 0.0)) / m.ok if m.ok else 0.0
    needed = per_row * scenario.ideal_rows_per_s
    if client + server >= 0.8 * cores or needed > cores:
        return (
            f"the machine's CPU: the ideal rate needs {needed:.1f} cores at the measured "
            f"{1000 * per_row:.2f} ms per row (client and agent server); they used "
            f"{client:.2f} + {server:.2f} of {cores} cores (the rest: other load on the machine)"
        )
    if client >= 0.85:
        return f"the client's CPU: its event loop is busy ({client:.2f} cores)"
    if scenario.capacity is not None:
        return (
            f"the agent's capacity ({scenario.capacity} at once; {m.http_429 or 0} 429s); "
            f"CPU: client {client:.2f}, server {server:.2f} cores"
        )
    return (
        f"the agent: latency x concurrency ({share:.2f}x ideal; CPU: client {client:.2f}, "
        f"server {server:.2f} cores)"
    )


def scale_section(results: list[Measurement]) -> str:
    base = next((m for m in results if m.rows == 0 and not m.error), None)
    lines = [
        "## S4: scale and memory",
        "",
        "`agentbatch.run` on the local engine over a generated Parquet table, the endpoint mapped to "
        "`builtin:instant` (no HTTP); each size in its own process. **above imports** is peak RSS "
        "over a process that only imports what a run imports"
        + (f" ({base.peak_rss_mb:,.0f} MB)" if base is not None else "")
        + ": what the rows cost. The local engine's DuckDB buffer pool (capped by its "
        "`memory_limit`, 256 MB by default; it spills beyond) fills on the way to the first "
        "million rows, so memory is judged flat between the two largest sizes.",
        "",
        "| rows | rows/s | CPU ms/row | peak RSS MB | above imports MB | MB per 1,000 rows | failed |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        if m.rows == 0 and not m.error:
            continue
        if m.error:
            lines.append(f"| {m.note} | failed: {m.error} | | | | | |")
            continue
        grown = m.peak_rss_mb - base.peak_rss_mb if base is not None else None
        per_k = 1000 * grown / m.rows if grown is not None and m.rows else None
        lines.append(
            f"| {m.rows:,} | {m.rows_per_s:,.0f} | {_num(m.cpu_ms_per_row, 4)} "
            f"| {m.peak_rss_mb:,.0f} | {_num(grown, 0)} | {_num(per_k, 3)} | {m.failed} |"
        )
    return "\n".join(lines)


def second_run_section(found: SecondRuns) -> str:
    bases = ", ".join(
        f"{OUTPUT_TITLES.get(output, output)}: "
        + ("failed" if base.error else f"{base.peak_rss_mb:,.0f} MB")
        for output, base in found.baselines.items()
    )
    lines = [
        "## S4r: second run replacing every row",
        "",
        "What a scheduled job does on its second run: `agentbatch.run` on the local engine "
        "(`builtin:instant`, no HTTP) over the rows a first run answered into the output, the "
        "request edited, so every row is answered again and the MERGE replaces every row of the "
        "output. The first run is set-up, in its own process; the second runs in another, so its "
        "peak RSS is its own. Outputs: the local warehouse table, and a Delta folder "
        '(`tables={"main.bench.answers": "<folder>"}`, written by agentbatch with `deltalake`). '
        "**above imports** is peak RSS over a process that only imports what such a run imports "
        f"({bases}; the Delta one imports `deltalake` too).",
        "",
        "| output | rows | rows/s | CPU ms/row | peak RSS MB | above imports MB "
        "| MB per 1,000 rows | first run: rows/s, peak RSS MB | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    kinds = list(found.baselines)
    ordered = sorted(
        found.runs,
        key=lambda r: (kinds.index(r.output) if r.output in kinds else len(kinds), r.rows),
    )
    for run in ordered:
        title = OUTPUT_TITLES.get(run.output, run.output)
        m, base = run.second, found.baselines.get(run.output)
        first = (
            f"failed: {run.setup.error}"
            if run.setup.error
            else f"{run.setup.rows_per_s:,.0f}, {run.setup.peak_rss_mb:,.0f}"
        )
        if m.error:
            lines.append(f"| {title} | {run.rows:,} | failed: {m.error} | | | | | {first} | |")
            continue
        grown = m.peak_rss_mb - base.peak_rss_mb if base is not None and not base.error else None
        per_k = 1000 * grown / run.rows if grown is not None else None
        lines.append(
            f"| {title} | {run.rows:,} | {m.rows_per_s:,.0f} | {_num(m.cpu_ms_per_row, 4)} "
            f"| {m.peak_rss_mb:,.0f} | {_num(grown, 0)} | {_num(per_k, 3)} | {first} "
            f"| {m.failed} |"
        )
    growth = []
    for output, base in found.baselines.items():
        runs = sorted((r for r in found.runs if r.output == output), key=lambda r: r.rows)
        if len(runs) < 2 or base.error or runs[-2].second.error or runs[-1].second.error:
            continue
        _, measured = memory_growth(base, runs[-2].second, runs[-1].second)
        growth.append(
            f"- {OUTPUT_TITLES.get(output, output)}, {runs[-1].rows:,} over {runs[-2].rows:,} "
            f"rows: {measured}"
        )
    if growth:
        lines += ["", "Growth of the second run's memory above imports:", "", *growth]
    return "\n".join(lines)


def targets_section(checks: Iterable[Check]) -> str:
    lines = ["## Targets", "", "| target | measured | holds |", "|---|---|---|"]
    for check in checks:
        verdict = {True: "yes", False: "**no**", None: "not measured"}[check.holds]
        lines.append(f"| {check.target} | {check.measured} | {verdict} |")
    return "\n".join(lines)


def document(title_line: str, machine: str, sections: list[str]) -> str:
    head = f"# Benchmark results\n\n{title_line}\n\nMachine: {machine}.\n"
    return "\n\n".join([head.rstrip(), *sections, NOTES]).rstrip() + "\n"


def _row(m: Measurement, ideal: float, raw: float | None) -> str:
    if m.error:
        return f"| {m.client} | {m.note} | | failed: {m.error} | | | | | | | | | |"
    server = (
        1000.0 * m.server_cpu_s / m.requests if m.server_cpu_s is not None and m.requests else None
    )
    unfinished = f" (+{m.unfinished} unfinished)" if m.unfinished else ""
    rounds = (
        " (" + ", ".join(f"{rate:,.0f}" for rate in m.round_rates) + ")" if m.round_rates else ""
    )
    return (
        f"| {m.client} | {m.note} | {m.ok + m.failed:,} | {m.rows_per_s:,.0f}{rounds} "
        f"| {m.rows_per_s / ideal:.2f} | {_num(m.rows_per_s / raw if raw else None)} "
        f"| {_num(m.cpu_ms_per_row)} | {_num(server)} | {m.http_429 or 0} "
        f"| {m.failed}{unfinished} | {m.peak_rss_mb:,.0f} | {_num(m.fixed_s, 1)} "
        f"| {_num(m.busy_rows_per_s, 0)} |"
    )


def _num(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"
