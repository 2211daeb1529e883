"""The targets, checked on the measurements of one run (ratios against baselines of that run)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bench.measure import Measurement
from bench.scale import OUTPUT_TITLES, SecondRuns
from bench.scenarios import Scenario

AGENTBATCH = "agentbatch.run"
SPARK_DRIVER = "spark driver"
S7_MAIN = "spark executors x2"
# Shown beside agentbatch.run's figure: the REST client alone, without the engine.
CLIENT_ONLY = "agentbatch run_bulk"


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    # None: not measured in this run.
    holds: bool | None


def check_targets(
    scenarios: Iterable[Scenario],
    measured: list[Measurement],
    scale: list[Measurement],
    second_runs: SecondRuns | None = None,
) -> list[Check]:
    by_key = {(m.scenario, m.client): m for m in measured if not m.error}
    checks: list[Check] = []
    for scenario in scenarios:
        ours = by_key.get((scenario.id, AGENTBATCH))
        bulk = by_key.get((scenario.id, CLIENT_ONLY))
        if scenario.id in ("S1", "S5"):
            for base, factor in (("raw aiohttp", 0.95), ("openai gather", 2.5)):
                checks.append(
                    _versus(scenario.id, ours, bulk, by_key.get((scenario.id, base)), factor)
                )
        elif scenario.id == "S2":
            checks.append(_ideal(scenario, ours, bulk, 0.9))
        elif scenario.id == "S3":
            checks.append(_ideal(scenario, ours, bulk, 0.8))
            checks.append(_complete(scenario, ours))
            checks.append(_rate_limited_share(scenario, ours, 0.05))
        elif scenario.id == "S7":
            checks += _spark_executors(scenario, by_key)
        elif scenario.id == "S6":
            raw = by_key.get((scenario.id, "raw aiohttp"))
            checks.append(_versus(scenario.id, ours, bulk, raw, 0.9))
            checks.append(_cpu_versus(scenario.id, ours, bulk, raw, 1.25))
        if scenario.id in ("S1", "S3") and "spark driver" in scenario.clients:
            checks.append(_spark_driver(scenario.id, by_key.get((scenario.id, SPARK_DRIVER)), ours))
    checks += _scale(scale)
    if second_runs is not None:
        checks += _second_runs(second_runs)
    return checks


def _versus(
    sid: str,
    ours: Measurement | None,
    bulk: Measurement | None,
    base: Measurement | None,
    factor: float,
) -> Check:
    name = base.client if base is not None else "baseline"
    target = f"{sid}: {AGENTBATCH} >= {factor:g}x {name}"
    if ours is None or base is None or base.rows_per_s == 0:
        return Check(target, "not measured", None)
    ratios = round_ratios(ours, base)
    ratio = median(ratios)
    measured = f"{ratio:.2f}x" + _spread(ratios)
    if bulk is not None:
        bulk_ratios = round_ratios(bulk, base)
        measured += f"; {CLIENT_ONLY}: {median(bulk_ratios):.2f}x" + _spread(bulk_ratios)
    return Check(target, measured, ratio >= factor)


def round_ratios(ours: Measurement, base: Measurement) -> list[float]:
    """Per-round ratios of rows/s (rounds are interleaved: round i of both ran back to back);
    the single ratio of the reported runs when either ran once."""
    if ours.round_rates and len(ours.round_rates) == len(base.round_rates):
        return [a / b for a, b in zip(ours.round_rates, base.round_rates, strict=True) if b > 0]
    return [ours.rows_per_s / base.rows_per_s]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _spread(ratios: list[float]) -> str:
    if len(ratios) < 2:
        return ""
    return " (rounds " + ", ".join(f"{r:.2f}" for r in ratios) + ")"


def _spark_driver(sid: str, spark: Measurement | None, local: Measurement | None) -> Check:
    """S8: the REST fallback on the spark target's driver against the local target's run, end to
    end and within the agent's busy window (a Spark run's fixed cost left out)."""
    target = f"S8 ({sid}): spark target, fallback on the driver >= 0.9x {AGENTBATCH} (local)"
    if spark is None or local is None or not local.rows_per_s:
        return Check(target, "not measured", None)
    ratios = round_ratios(spark, local)
    ratio = median(ratios)
    measured = f"{ratio:.2f}x end to end" + _spread(ratios)
    held = ratio >= 0.9
    if spark.busy_rows_per_s and local.busy_rows_per_s:
        busy = spark.busy_rows_per_s / local.busy_rows_per_s
        measured += (
            f"; {busy:.2f}x within the agent's busy window; fixed cost {spark.fixed_s:.1f} s "
            f"against {local.fixed_s:.1f} s"
        )
    return Check(target, measured, held)


def _spark_executors(scenario: Scenario, by_key: dict[tuple[str, str], Measurement]) -> list[Check]:
    """S7: the fallback on local executors at the agent's capacity, default settings."""
    ideal = scenario.ideal_rows_per_s
    checks = []
    main = by_key.get((scenario.id, S7_MAIN))
    target = f"S7: {S7_MAIN} >= 0.8x ideal"
    if main is None:
        checks.append(Check(target, "not measured", None))
    else:
        ratio = main.rows_per_s / ideal
        measured = f"{ratio:.2f}x end to end ({main.rows_per_s:.0f} rows/s)"
        held: bool | None = ratio >= 0.8
        if main.busy_rows_per_s:
            busy = main.busy_rows_per_s / ideal
            measured += (
                f"; {busy:.2f}x within the agent's busy window; fixed cost {main.fixed_s:.1f} s"
            )
        checks.append(Check(target, measured, held))
    for name in scenario.clients:
        if not name.startswith("spark executors"):
            continue
        m = by_key.get((scenario.id, name))
        checks.append(_rate_limited_share(scenario, m, 0.05, name))
    return checks


def _cpu_versus(
    sid: str,
    ours: Measurement | None,
    bulk: Measurement | None,
    base: Measurement | None,
    factor: float,
) -> Check:
    target = f"{sid}: {AGENTBATCH} CPU per row <= {factor:g}x raw aiohttp"
    base_cpu = base.cpu_ms_per_row if base is not None else None
    ours_cpu = ours.cpu_ms_per_row if ours is not None else None
    if ours is None or base is None or ours_cpu is None or not base_cpu:
        return Check(target, "not measured", None)
    # The median of per-round ratios: the machine's load moves both clients of a round alike,
    # while the reported runs (each client's median by rows/s) may come from different rounds.
    ratios = cpu_ratios(ours, base)
    ratio = median(ratios)
    measured = f"{ratio:.2f}x" + _spread(ratios) + f" ({ours_cpu:.3f} / {base_cpu:.3f} ms)"
    if bulk is not None and bulk.cpu_ms_per_row is not None:
        bulk_ratios = cpu_ratios(bulk, base)
        measured += f"; {CLIENT_ONLY}: {median(bulk_ratios):.2f}x" + _spread(bulk_ratios)
    return Check(target, measured, ratio <= factor)


def cpu_ratios(ours: Measurement, base: Measurement) -> list[float]:
    """Per-round ratios of CPU per row, as `round_ratios` does for rows/s."""
    if ours.round_cpu_ms and len(ours.round_cpu_ms) == len(base.round_cpu_ms):
        return [a / b for a, b in zip(ours.round_cpu_ms, base.round_cpu_ms, strict=True) if b > 0]
    return [(ours.cpu_ms_per_row or 0.0) / (base.cpu_ms_per_row or 1.0)]


def _ideal(
    scenario: Scenario, ours: Measurement | None, bulk: Measurement | None, factor: float
) -> Check:
    target = f"{scenario.id}: {AGENTBATCH} >= {factor:g}x ideal"
    if ours is None:
        return Check(target, "not measured", None)
    ideal = scenario.ideal_rows_per_s
    ratio = ours.rows_per_s / ideal
    measured = f"{ratio:.2f}x ({ours.rows_per_s:.0f} rows/s)" + _aside(bulk, ideal)
    return Check(target, measured, ratio >= factor)


def _aside(bulk: Measurement | None, base_rate: float) -> str:
    """run_bulk's ratio to the same base, for information."""
    if bulk is None or base_rate == 0:
        return ""
    return f"; {CLIENT_ONLY}: {bulk.rows_per_s / base_rate:.2f}x"


def _complete(scenario: Scenario, ours: Measurement | None) -> Check:
    target = f"{scenario.id}: every row answered"
    if ours is None:
        return Check(target, "not measured", None)
    return Check(
        target,
        f"{ours.ok}/{scenario.rows} ok, {ours.failed} failed",
        ours.ok == scenario.rows and ours.failed == 0,
    )


def _rate_limited_share(
    scenario: Scenario, ours: Measurement | None, share: float, client: str = ""
) -> Check:
    who = f" {client}" if client else ""
    target = f"{scenario.id}:{who} 429s < {share:.0%} of requests"
    if ours is None or not ours.requests:
        return Check(target, "not measured", None)
    got = (ours.http_429 or 0) / ours.requests
    return Check(target, f"{got:.1%} ({ours.http_429} of {ours.requests})", got < share)


def _scale(scale: list[Measurement]) -> list[Check]:
    """S4: the rate at the largest size, and memory growth above the import-only baseline (the
    run with 0 rows): the rows' cost, without the fixed footprint of the imports."""
    base = next((m for m in scale if m.rows == 0 and not m.error), None)
    done = sorted((m for m in scale if m.rows > 0 and not m.error), key=lambda m: m.rows)
    if len(done) < 2:
        return [Check("S4: scale", "not measured", None)] if scale else []
    # Growth between the two largest sizes: the local engine's DuckDB fills its buffer pool (capped
    # by its `memory_limit`, 256 MB by default) on the way to the first million rows; past that,
    # rows must cost nothing more.
    small, large = done[-2], done[-1]
    rate = Check(
        f"S4: {large.rows:,} rows >= 50,000 rows/s",
        f"{large.rows_per_s:,.0f} rows/s",
        large.rows_per_s >= 50_000,
    )
    target = f"S4: memory above imports at {large.rows:,} <= 1.5x at {small.rows:,}"
    if base is None:
        return [rate, Check(target, "not measured (no import-only baseline)", None)]
    ratio, measured = memory_growth(base, small, large)
    return [rate, Check(target, measured, ratio <= 1.5)]


def memory_growth(base: Measurement, small: Measurement, large: Measurement) -> tuple[float, str]:
    """Memory above the import-only baseline at the larger size over that at the smaller, and
    the figures behind it."""
    grown_small = max(small.peak_rss_mb - base.peak_rss_mb, 1.0)
    grown_large = max(large.peak_rss_mb - base.peak_rss_mb, 1.0)
    ratio = grown_large / grown_small
    return ratio, (
        f"{ratio:.2f}x ({grown_large:.0f} / {grown_small:.0f} MB above {base.peak_rss_mb:.0f} MB; "
        f"{1000 * grown_large / large.rows:.3f} / {1000 * grown_small / small.rows:.3f} "
        "MB per 1,000 rows)"
    )


def _second_runs(found: SecondRuns) -> list[Check]:
    """S4r, per output kind: every size's second run answered and replaced every row (a failure,
    such as DuckDB running out of memory in the MERGE, fails this), and its memory above the
    import-only baseline grows at most 1.5x between the two largest sizes, as S4's."""
    checks: list[Check] = []
    for output, base in found.baselines.items():
        title = OUTPUT_TITLES.get(output, output)
        runs = sorted((r for r in found.runs if r.output == output), key=lambda r: r.rows)
        if not runs:
            continue
        failed = [r for r in runs if r.second.error]
        checks.append(
            Check(
                f"S4r ({title}): the second run replaces every row",
                "; ".join(f"{r.rows:,}: failed: {r.second.error}" for r in failed)
                or ", ".join(f"{r.rows:,}/{r.rows:,}" for r in runs),
                not failed,
            )
        )
        if len(runs) < 2:
            continue
        small, large = runs[-2].second, runs[-1].second
        target = (
            f"S4r ({title}): second run's memory above imports at {runs[-1].rows:,} "
            f"<= 1.5x at {runs[-2].rows:,}"
        )
        if base.error or small.error or large.error:
            checks.append(Check(target, "not measured", None))
            continue
        ratio, measured = memory_growth(base, small, large)
        checks.append(Check(target, measured, ratio <= 1.5))
    return checks
