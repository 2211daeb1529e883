"""`agentbatch estimate JOB`: the bill of the next run before paying it.

A reader of the plan plus a sampled run:

1. count the rows the next run would send: the selection the target does not hold (as `run`
   selects it), minus the rows the checkpoint can answer from calls already paid for (looked up
   without recording anything);
2. send a small random sample of those rows for real, through the same path a run takes (the REST
   fallback's bulk runner, or the engine's `ai_query` for push-down jobs restricted to the sampled
   keys). Its answers are kept: checkpointed and written to the target like any run's, so they
   count as answered and are never paid again;
3. project the rest from the sample: tokens per row with a 95% interval, the wall time of the
   calls at the concurrency the agent sustained, and the cost where a price is declared. The
   rest fails as often as the sample did: the rows expected to be answered are projected at the
   answered rows' mean, those expected to fail at what the sample's failed rows reported (none
   when they reported no usage: their cost is unknown), and the projection with every row at
   the answered rows' mean is given beside it (`projected_tokens_all_answered`).

The per-row figures are saved beside the checkpoint (`<state>/<target>__<table>.estimate.json`,
keyed by the call fingerprint): the budget guard of the next runs judges tokens and cost with them
before sending, and their summaries show the estimate beside what they used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import statistics
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from agentbatch.agent.content import concurrency_ceiling, input_batch_rows
from agentbatch.errors import EngineError, NotSupportedError, UsageError
from agentbatch.execution.budget import PerRow, cost_of, price_of, save_per_row
from agentbatch.execution.selection import replacing_if_reshaped
from agentbatch.planning.definition import Plan, PushDown, RestFallback
from agentbatch.planning.render import utc_timestamp
from agentbatch.results import REQUEST_COLUMN, TRANSIENT_ERROR
from agentbatch.sql import quoting

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.agent.endpoints import Endpoint
    from agentbatch.agent.ledger import Ledger
    from agentbatch.engines.base import Engine
    from agentbatch.spec.models import Job, Price

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = 20
# Two-sided 95% normal quantile: the interval of a mean per row.
_Z95 = 1.96
# Simulated runs averaged for the projected wall time.
_SIMULATIONS = 16


@dataclass(frozen=True)
class Interval:
    """A mean (or a projected total) with its 95% interval."""

    mean: float
    low: float
    high: float

    def scaled(self, factor: float) -> Interval:
        return Interval(self.mean * factor, self.low * factor, self.high * factor)

    def as_dict(self, digits: int = 1) -> dict[str, float]:
        return {
            "mean": round(self.mean, digits),
            "low": round(self.low, digits),
            "high": round(self.high, digits),
        }


def mean_interval(values: list[float], population: int | None = None) -> Interval | None:
    """The mean of a sample and its 95% interval (normal approximation, with the finite
    population correction when the sample is drawn from `population` rows)."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, mean, mean)
    spread = statistics.stdev(values) / math.sqrt(len(values))
    if population is not None and population > 1:
        spread *= math.sqrt(max(population - len(values), 0) / (population - 1))
    half = _Z95 * spread
    return Interval(mean, max(mean - half, 0.0), mean + half)


def calls_wall_s(
    rows: int,
    latencies_s: list[float],
    *,
    max_concurrency: int | None,
    ceiling: int,
    requests_per_second: float | None = None,
    seed: int = 0,
) -> float:
    """Wall time of `rows` calls under the run's own adaptive limiter, on a virtual clock: each
    call takes a latency drawn from the sample's, and the limiter grows (slow start, then
    additive increase, held back by its latency guard) exactly as in a run, up to `ceiling`,
    the concurrency the agent sustained. A requests-per-second cap bounds it too."""
    import heapq

    from agentbatch.agent.limiter import INITIAL_LIMIT, Limiter

    if rows <= 0 or not latencies_s:
        return 0.0
    now = 0.0
    limiter = Limiter(
        max_concurrency=max_concurrency,
        initial=max_concurrency or INITIAL_LIMIT,
        ceiling=max(ceiling, 1),
        clock=lambda: now,
    )
    draw = random.Random(seed)
    pending: list[tuple[float, int, Any, float]] = []
    left, order = rows, 0
    while left or pending:
        while left:
            permit = limiter.try_acquire()
            if permit is None:
                break
            latency = draw.choice(latencies_s)
            order += 1
            heapq.heappush(pending, (now + latency, order, permit, latency))
            left -= 1
        now, _, permit, latency = heapq.heappop(pending)
        limiter.release(permit, "ok", latency_s=latency)
    if requests_per_second:
        now = max(now, rows / requests_per_second)
    return now


@dataclass
class Estimate:
    """What `agentbatch estimate` found. `as_dict()` is its JSON."""

    job: str
    target: str
    strategy: str
    selected: int
    skipped: int
    reusable: int
    to_send: int
    sample_size: int
    sampled: int = 0
    sample_ok: int = 0
    sample_errors: int = 0
    # Sampled rows the next run sends again: those that failed transiently (a plain run retries
    # them), every failed one with --retry-errors. They are in `remaining`.
    sample_sent_again: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    commonest_error: str | None = None
    input_tokens_per_row: Interval | None = None
    output_tokens_per_row: Interval | None = None
    latency_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    p95_latency_ms: float | None = None
    sample_wall_s: float = 0.0
    concurrency: int | None = None
    concurrency_basis: str = ""
    sample_concurrency: int | None = None
    overhead_s: float = 0.0
    remaining: int = 0
    projected_input_tokens: Interval | None = None
    projected_output_tokens: Interval | None = None
    projected_tokens: Interval | None = None
    projected_wall_s: float | None = None
    # If the agent takes no more calls at once than the sample reached (a capacity it never saw).
    projected_wall_s_high: float | None = None
    price: dict[str, float] | None = None
    projected_cost: Interval | None = None
    # The remaining rows expected to fail, at the sample's share of failed rows (with its 95%
    # interval), and the tokens per row the sample's failed rows reported (None: none did).
    projected_errors: Interval | None = None
    error_input_tokens_per_row: float | None = None
    error_output_tokens_per_row: float | None = None
    # Every remaining row at the answered rows' mean: what the rest costs if the failed rows
    # cost what answered ones do (an agent may bill a call it answered with an error).
    projected_tokens_all_answered: Interval | None = None
    projected_cost_all_answered: Interval | None = None
    sample_input_tokens: int = 0
    sample_output_tokens: int = 0
    sample_cost: float | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if not item.repr:
                continue
            value = getattr(self, item.name)
            if isinstance(value, Interval):
                value = value.as_dict(6 if "cost" in item.name else 3)
            elif isinstance(value, float):
                value = round(value, 6 if "cost" in item.name else 3)
            out[item.name] = value
        return out


# --- sampling ----------------------------------------------------------------------------------


class Sampler:
    """Reads every row the run would send, counts them and those the checkpoint can answer, and
    keeps a uniform random sample of the rest (reservoir sampling: memory is the sample's)."""

    def __init__(self, size: int, rng: random.Random, *, retry_errors: bool) -> None:
        self.size = size
        self.rng = rng
        self.retry_errors = retry_errors
        self.to_send = 0
        self.reusable = 0
        self.kept: list[pa.RecordBatch] = []

    def __call__(
        self, batches: Iterable[pa.RecordBatch], ledger: Ledger
    ) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        for batch in batches:
            found = ledger.reusable(batch, retry_errors=self.retry_errors)
            self.reusable += sum(found)
            # A NULL request is never sent (a run answers it with its row error, without a
            # call): neither counted nor sampled, as `runner.rows_to_send` does not count it.
            unsent = batch.column(REQUEST_COLUMN).is_null().to_pylist()
            sent = [not (reused or null) for reused, null in zip(found, unsent, strict=True)]
            if not all(sent):
                batch = batch.filter(pa.array(sent, type=pa.bool_()))
            for index in range(batch.num_rows):
                self.to_send += 1
                if len(self.kept) < self.size:
                    self.kept.append(batch.slice(index, 1).take([0]))
                else:
                    slot = self.rng.randrange(self.to_send)
                    if slot < self.size:
                        self.kept[slot] = batch.slice(index, 1).take([0])
        yield from self.kept


# --- the command -------------------------------------------------------------------------------


def estimate(the_plan: Plan, *, sample: int = DEFAULT_SAMPLE, seed: int | None = None) -> Estimate:
    """Count, sample for real (answers kept), project. See the module docstring."""
    from agentbatch.execution import runner

    if sample < 0:
        raise UsageError("--sample must be 0 or more rows")
    rng = random.Random(seed)
    root = runner.root_of(the_plan)
    price = price_of(the_plan.job, root)
    # Refused for its endpoint (no workspace credentials) before the engine locks the output.
    endpoint = runner.endpoint_before_opening(the_plan)
    engine = runner.open_engine(the_plan, the_plan.options.tables, [the_plan.job.output.table])
    try:
        if isinstance(the_plan.steps, PushDown):
            the_plan = runner.where_ai_query_runs(the_plan, engine)
        # A full refresh continues an unfinished one, on either path: its count and sample are
        # of the rows whose target row does not answer the request since that refresh began.
        the_plan = runner.continued(the_plan)
        if replacing_if_reshaped(the_plan, engine) is not the_plan:
            raise UsageError(
                f"estimate writes its sample into {the_plan.job.output.table}, which the next "
                "run replaces (mode overwrite over a table of another shape or key), so nothing "
                "was sent: run the job, or estimate it with its output mapped to a new table"
            )
        # An overwrite job's sample is added as a merge adds it (push-down and REST fallback
        # alike): keys that left the selection leave the table at the next run, not here.
        merged = _as_merge_plan(the_plan)
        if merged is not the_plan:
            _refuse_merging_into_repeated_keys(merged, engine)
        if isinstance(the_plan.steps, RestFallback):
            found = _sample_fallback(
                the_plan, the_plan.steps, merged, engine, sample, rng, endpoint=endpoint
            )
        else:
            found = _sample_push_down(the_plan, the_plan.steps, engine, sample, rng)
    except EngineError as err:
        raise runner.located_error(the_plan, engine, err) from None
    finally:
        engine.close()
    _project(found, the_plan, price)
    if found.input_tokens_per_row is not None and found.output_tokens_per_row is not None:
        save_per_row(
            runner.estimate_path(the_plan),
            the_plan.call_fingerprint,
            PerRow(found.input_tokens_per_row.mean, found.output_tokens_per_row.mean),
            estimated_at=datetime.now(timezone.utc).isoformat(),
            sampled=found.sampled,
            latency_ms=found.latency_ms,
            concurrency=found.concurrency,
        )
    return found


def _run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}_estimate_{uuid.uuid4().hex[:8]}"


def _sample_fallback(
    the_plan: Plan,
    steps: RestFallback,
    merged: Plan,
    engine: Engine,
    size: int,
    rng: random.Random,
    *,
    endpoint: Endpoint | None = None,
) -> Estimate:
    """Sample through the REST fallback, writing with `merged`'s statements (`_as_merge_plan`)."""
    from agentbatch.execution import runner

    sampler = Sampler(size, rng, retry_errors=the_plan.options.retry_errors)
    if merged is not the_plan:
        assert isinstance(merged.steps, RestFallback)
        steps = dataclasses.replace(
            steps,
            write=merged.steps.write,
            write_statements=merged.steps.write_statements,
            keep_only=None,
        )
    summary = runner._run_fallback(the_plan, steps, engine, sampler, endpoint=endpoint)
    found = Estimate(
        job=the_plan.job.name,
        target=the_plan.target.name,
        strategy=the_plan.strategy,
        selected=int(summary.get("selected", 0)),
        skipped=int(summary.get("skipped", 0)),
        reusable=sampler.reusable,
        to_send=sampler.to_send,
        sample_size=size,
        errors_by_kind=dict(summary.get("errors_by_kind") or {}),
        p95_latency_ms=summary.get("p95_latency_ms"),
        sample_wall_s=float(summary.get("wall_s") or 0.0),
    )
    key = the_plan.job.source.key
    _read_sample(found, the_plan, engine, [b.column(key)[0].as_py() for b in sampler.kept])
    found.sample_concurrency = int(summary.get("peak_concurrency") or 0) or None
    overloaded = bool(summary.get("http_429")) or any(
        kind in ("timeout", "http_429", "http_503") for kind in found.errors_by_kind
    )
    call = steps.call
    if overloaded:
        # The agent pushed back within the sample: it sustains about what the limiter settled at.
        found.concurrency = max(1, int(int(summary.get("peak_concurrency") or 1) * 0.9))
        found.concurrency_basis = "the agent pushed back during the sample"
    else:
        from agentbatch.agent.limiter import DEFAULT_CEILING

        found.concurrency = call.max_concurrency or concurrency_ceiling(call.files, DEFAULT_CEILING)
        found.concurrency_basis = (
            "agent.max_concurrency"
            if call.max_concurrency
            else "no push-back in the sample: the limiter's own growth, up to its ceiling"
        )
    return found


def _sample_push_down(
    the_plan: Plan,
    steps: PushDown,
    engine: Engine,
    size: int,
    rng: random.Random,
) -> Estimate:
    """Push-down: the same statement, restricted to a random sample of the keys to send (mode
    overwrite samples with a merge: the sample must not replace the table)."""
    from agentbatch.execution import runner

    counts = runner.prepare_selection(the_plan, engine)
    # With --full-refresh the sample begins the refresh (or adds to the unfinished one), as on
    # the REST fallback: the next push-down --full-refresh continues it, not paying it again.
    with runner.recorded(the_plan, finishing=False):
        return _sample_keys(the_plan, engine, counts, size, rng)


def _sample_keys(
    the_plan: Plan, engine: Engine, counts: dict[str, int], size: int, rng: random.Random
) -> Estimate:
    from agentbatch.execution import runner

    # The rows the push-down statement would call ai_query for: the fallback's selection.
    fallback = runner.plan(
        the_plan.job, the_plan.target, dataclasses.replace(the_plan.options, force_fallback=True)
    )
    assert isinstance(fallback.steps, RestFallback)
    key = the_plan.job.source.key
    keys: list[Any] = []
    to_send = 0
    rows_per_batch = input_batch_rows(fallback.steps.call.files)
    for batch in engine.fetch_batches(fallback.steps.inputs.sql, batch_rows=rows_per_batch):
        # A NULL request gets its row error without an ai_query call: as on the REST fallback,
        # neither counted nor sampled.
        unsent = batch.column(REQUEST_COLUMN).is_null().to_pylist()
        for value, null in zip(batch.column(key).to_pylist(), unsent, strict=True):
            if null:
                continue
            to_send += 1
            if len(keys) < size:
                keys.append(value)
            elif (slot := rng.randrange(to_send)) < size:
                keys[slot] = value
    found = Estimate(
        job=the_plan.job.name,
        target=the_plan.target.name,
        strategy=the_plan.strategy,
        selected=counts["selected"],
        skipped=counts["skipped"],
        reusable=0,
        to_send=to_send,
        sample_size=size,
    )
    found.notes.append("ai_query reports no token usage per row: tokens and cost are unknown")
    if not keys:
        return found
    try:
        restriction = (
            f"{quoting.identifier(key)} IN ({', '.join(quoting.literal(k) for k in keys)})"
        )
    except quoting.SqlValueError as err:
        raise NotSupportedError(
            f"estimate: cannot sample push-down keys of this type ({err})"
        ) from None
    job = the_plan.job
    where = f"({job.source.where}) AND {restriction}" if job.source.where else restriction
    sampled_job = _as_merge(job).model_copy(
        update={"source": job.source.model_copy(update={"where": where})}
    )
    options = dataclasses.replace(the_plan.options, run_id=_run_id(), limit=None)
    sampled_plan = runner.plan(sampled_job, the_plan.target, options)
    assert isinstance(sampled_plan.steps, PushDown)
    started = time.monotonic()
    runner._run_push_down(sampled_plan, sampled_plan.steps, engine, record=False)
    found.sample_wall_s = time.monotonic() - started
    found.concurrency_basis = "push-down: the engine runs ai_query; time scales from the sample"
    _read_sample(found, sampled_plan, engine, keys)
    return found


def _as_merge_plan(the_plan: Plan) -> Plan:
    """The plan an estimate's sample is written with: an overwrite job's as a merge."""
    from agentbatch.execution import runner

    if the_plan.job.output.mode != "overwrite":
        return the_plan
    return runner.plan(_as_merge(the_plan.job), the_plan.target, the_plan.options)


def _refuse_merging_into_repeated_keys(merged: Plan, engine: Engine) -> None:
    """A merged sample over a target holding a key in several rows (an append history) would
    give the sampled key two rows with the same answer. (A merge job's run refuses such a target
    in its preflight; an overwrite job's estimate merges without one.)"""
    table = merged.job.output.table
    if not engine.table_exists(table):
        return
    several = int(engine.fetch_one(merged.preflight.counts.sql).get("target_repeated_keys") or 0)
    if several:
        raise UsageError(
            f"estimate adds its sample to {table} one row per key, but it holds {several} "
            f"key(s) in more than one row (by {merged.job.source.key!r}, the job's source.key: "
            "written by mode append, or with another source.key), so nothing was sent: run the "
            "job (mode overwrite leaves one row per key), or estimate it with its output mapped "
            "to a new table"
        )


def _as_merge(job: Job) -> Job:
    """An overwrite job as the merge its estimate writes with (other modes as they are)."""
    if job.output.mode != "overwrite":
        return job
    return job.model_copy(update={"output": job.output.model_copy(update={"mode": "merge"})})


def _read_sample(found: Estimate, the_plan: Plan, engine: Engine, keys: list[Any]) -> None:
    """The sample's rows (its keys), as this run wrote them to the target."""
    started = utc_timestamp(the_plan.options.started_at)
    key = the_plan.job.source.key
    sql = (
        f"SELECT {quoting.identifier(key)} AS `_key`, `error`, `latency_ms`, `input_tokens`, "
        f"`output_tokens` FROM {quoting.table(the_plan.job.output.table)} "
        f"WHERE `answered_at` >= CAST({quoting.literal(started)} AS TIMESTAMP)"
    )
    sampled = set(keys)
    rows = [
        row
        for batch in engine.fetch_batches(sql)
        for row in batch.to_pylist()
        if row["_key"] in sampled
    ]
    found.sampled = len(rows)
    errors = [row["error"] for row in rows if row["error"] is not None]
    found.sample_errors = len(errors)
    found.sample_sent_again = sum(
        1 for error in errors if the_plan.options.retry_errors or error.startswith(TRANSIENT_ERROR)
    )
    found.sample_ok = len(rows) - len(errors)
    if errors:
        found.commonest_error = max(set(errors), key=errors.count)
    answered = [row for row in rows if row["error"] is None]
    reported = [row for row in rows if row["error"] is not None and row["input_tokens"] is not None]
    if reported:
        found.error_input_tokens_per_row = statistics.fmean(
            float(row["input_tokens"]) for row in reported
        )
        found.error_output_tokens_per_row = statistics.fmean(
            float(row["output_tokens"] or 0) for row in reported
        )
    found.sample_input_tokens = sum(int(row["input_tokens"] or 0) for row in rows)
    found.sample_output_tokens = sum(int(row["output_tokens"] or 0) for row in rows)
    population = max(found.to_send, 1)
    if answered and all(row["input_tokens"] is not None for row in answered):
        found.input_tokens_per_row = mean_interval(
            [float(row["input_tokens"]) for row in answered], population
        )
        found.output_tokens_per_row = mean_interval(
            [float(row["output_tokens"] or 0) for row in answered], population
        )
    latencies = [float(row["latency_ms"]) for row in rows if row["latency_ms"] is not None]
    found.latencies_ms = latencies
    if latencies:
        found.latency_ms = statistics.fmean(latencies)
    elif found.sampled and found.sample_wall_s:
        found.latency_ms = found.sample_wall_s * 1000.0 / found.sampled


def share_interval(hits: int, n: int) -> Interval:
    """The share `hits / n` with its 95% Wilson score interval (sound at 0 or n hits)."""
    share = hits / n
    z2 = _Z95 * _Z95
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Interval(share, max(centre - half, 0.0), min(centre + half, 1.0))


def _project_tokens(found: Estimate, price: Price | None) -> None:
    """Tokens and cost of the remaining rows: the answered share at the answered rows' mean,
    the failed share at what the sample's failed rows reported (nothing when none did)."""
    assert found.input_tokens_per_row is not None and found.output_tokens_per_row is not None
    rows = found.remaining
    failed = share_interval(found.sample_errors, max(found.sampled, 1))
    found.projected_errors = failed.scaled(rows)
    # The fewest rows answered go with the lowest per-row figures, the most with the highest.
    answered = Interval(1 - failed.mean, 1 - failed.high, 1 - failed.low).scaled(rows)
    error_in = found.error_input_tokens_per_row or 0.0
    error_out = found.error_output_tokens_per_row or 0.0

    def projected(per_row: Interval, per_error: float) -> Interval:
        errors = found.projected_errors
        assert errors is not None
        return Interval(
            per_row.mean * answered.mean + per_error * errors.mean,
            per_row.low * answered.low + per_error * errors.low,
            per_row.high * answered.high + per_error * errors.high,
        )

    found.projected_input_tokens = projected(found.input_tokens_per_row, error_in)
    found.projected_output_tokens = projected(found.output_tokens_per_row, error_out)
    found.projected_tokens = _sum(found.projected_input_tokens, found.projected_output_tokens)
    found.projected_cost = _cost(price, found.projected_input_tokens, found.projected_output_tokens)
    every_in = found.input_tokens_per_row.scaled(rows)
    every_out = found.output_tokens_per_row.scaled(rows)
    found.projected_tokens_all_answered = _sum(every_in, every_out)
    found.projected_cost_all_answered = _cost(price, every_in, every_out)
    if found.sample_errors:
        usage = (
            f"projected at the {error_in + error_out:,.0f} tokens per row that failed rows reported"
            if found.error_input_tokens_per_row is not None
            else "projected at 0 tokens: the agent reported no usage for them, so their cost "
            "is unknown"
        )
        found.notes.append(
            f"{found.sample_errors} of {found.sampled} sampled row(s) failed: about "
            f"{found.projected_errors.mean:,.0f} of the {rows:,} remaining rows are expected to "
            f"fail, {usage}; projected tokens are the rest at the answered rows' mean. Every "
            f"remaining row at that mean: {found.projected_tokens_all_answered.mean:,.0f} tokens"
            + (
                f", cost {found.projected_cost_all_answered.mean:,.4g}"
                if found.projected_cost_all_answered is not None
                else ""
            )
        )


def _sum(one: Interval, other: Interval) -> Interval:
    return Interval(one.mean + other.mean, one.low + other.low, one.high + other.high)


def _cost(price: Price | None, input_tokens: Interval, output_tokens: Interval) -> Interval | None:
    if price is None:
        return None
    return Interval(
        cost_of(price, input_tokens.mean, output_tokens.mean) or 0.0,
        cost_of(price, input_tokens.low, output_tokens.low) or 0.0,
        cost_of(price, input_tokens.high, output_tokens.high) or 0.0,
    )


def _project(found: Estimate, the_plan: Plan, price: Price | None) -> None:
    """The rest of the run, from the sample: tokens, time, cost."""
    # The rows not sampled, and the sampled ones the next run sends again (a transient failure).
    found.remaining = max(found.to_send - found.sampled, 0) + found.sample_sent_again
    rows = found.remaining
    if found.input_tokens_per_row is not None and found.output_tokens_per_row is not None:
        _project_tokens(found, price)
    elif found.sample_errors and not found.sample_ok:
        found.notes.append(
            f"every sampled row failed ({found.sample_errors}): tokens and cost are unknown"
        )
    if price is not None:
        found.sample_cost = cost_of(price, found.sample_input_tokens, found.sample_output_tokens)
        found.price = {
            "input_per_million": price.input_per_million,
            "output_per_million": price.output_per_million,
        }
    else:
        found.notes.append("no price declared (agent.price or agentbatch.yml prices:): no cost")
    if found.latency_ms is None:
        return
    if isinstance(the_plan.steps, PushDown):
        found.projected_wall_s = rows * found.sample_wall_s / max(found.sampled, 1)
        return
    call = the_plan.steps.call

    def simulated(n: int, ceiling: int | None = None) -> float:
        # The limiter's path depends on the latencies it happens to see: the mean of a few.
        return statistics.fmean(
            calls_wall_s(
                n,
                [ms / 1000.0 for ms in found.latencies_ms],
                max_concurrency=ceiling or call.max_concurrency,
                ceiling=ceiling or found.concurrency or 1,
                requests_per_second=call.requests_per_second,
                seed=seed,
            )
            for seed in range(_SIMULATIONS)
        )

    # What the model leaves out (resolving the endpoint, opening connections, the first reads
    # and commits) is measured on the sample: its wall time beyond the model's time for it.
    found.overhead_s = max(found.sample_wall_s - simulated(found.sampled), 0.0)
    found.projected_wall_s = simulated(rows) + found.overhead_s
    reached = found.sample_concurrency
    if reached and found.concurrency and reached < found.concurrency:
        found.projected_wall_s_high = simulated(rows, reached) + found.overhead_s
