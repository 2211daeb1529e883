"""Adaptive concurrency: a deterministic simulation of the control law (virtual clock), and the
waiting behaviour on a real event loop."""

from __future__ import annotations

import asyncio
import heapq
import random
from dataclasses import dataclass

import pytest

from agentbatch.agent.limiter import DEFAULT_CEILING, INITIAL_LIMIT, Limiter, Permit
from agentbatch.agent.retry import backoff_delay


@dataclass
class SimResult:
    rows_per_s: float
    rejected_share: float
    final_limit: int
    peak_limit: int
    rejected: int = 0


def simulate(
    *,
    capacity: int | None,
    latency_s: float,
    rows: int,
    queueing: bool = False,
    reject_latency_s: float = 0.001,
    retry_after_s: float = 1.0,
    tells_remaining: bool = True,
) -> SimResult:
    """Rows through a simulated server: `capacity` admitted at once, 429 (instantly) with
    `Retry-After: retry_after_s` beyond it, or, with `queueing`, an unbounded queue in front of
    `capacity` workers (latency grows). A rejected row waits as the runner does (retry.py's
    `backoff_delay`: the Retry-After plus jitter) before it is sent again. With
    `tells_remaining`, the limiter knows the rows left, as the bulk runner tells it."""
    now = [0.0]
    limiter = Limiter(clock=lambda: now[0])
    if tells_remaining:
        limiter.remaining = lambda: rows - done
    rng = random.Random(7)
    events: list[tuple[float, int, str, Permit | None]] = []
    seq = done = sent = rejected = 0
    pending = rows
    busy_until: list[float] = [0.0] * (capacity or 0)
    active = 0
    while done < rows:
        while pending:
            permit = limiter.try_acquire()
            if permit is None:
                break
            pending -= 1
            sent += 1
            seq += 1
            if queueing and capacity:
                start = max(now[0], heapq.heappop(busy_until))
                heapq.heappush(busy_until, start + latency_s)
                heapq.heappush(events, (start + latency_s, seq, "ok", permit))
            elif capacity is None or active < capacity:
                active += 1
                heapq.heappush(events, (now[0] + latency_s, seq, "ok", permit))
            else:
                heapq.heappush(events, (now[0] + reject_latency_s, seq, "429", permit))
        at, _, kind, permit = heapq.heappop(events)
        now[0] = at
        if permit is None:  # a rejected row's wait is over: it is sent again
            pending += 1
            continue
        latency = at - permit.acquired_at
        if kind == "ok":
            if not queueing:
                active -= 1
            done += 1
            limiter.release(permit, "ok", latency_s=latency)
        else:
            rejected += 1
            limiter.release(permit, "overload", latency_s=latency, retry_after_s=retry_after_s)
            seq += 1
            wait = backoff_delay(1, f"{retry_after_s:g}", rng)
            heapq.heappush(events, (at + wait, seq, "retry", None))
    return SimResult(done / now[0], rejected / sent, limiter.limit, limiter.peak_limit, rejected)


def test_finds_a_capacity_limit_with_few_rejections() -> None:
    # 32 admitted at 50 ms: ideal 640 rows/s. Every refused row waits its Retry-After (1 s).
    for rows in (5_000, 10_000):
        result = simulate(capacity=32, latency_s=0.05, rows=rows)
        assert result.rows_per_s >= 0.97 * 640, rows
        assert result.rejected_share < 0.01, rows
        assert 31 <= result.final_limit <= 32, rows


def test_a_larger_capacity_is_found_and_kept() -> None:
    result = simulate(capacity=128, latency_s=0.05, rows=10_000)
    assert result.rows_per_s >= 0.9 * 2_560
    assert result.rejected_share < 0.01
    assert 126 <= result.final_limit <= 128


def test_probes_above_a_capacity_are_spaced_out() -> None:
    # After the first refusals, growth holds just below the refused concurrency and probes above
    # it ever more rarely: a few refused rows a minute, not one every few round trips.
    result = simulate(capacity=32, latency_s=0.05, rows=40_000)  # about a minute
    first_burst = 32  # slow start overshoots once: up to one window of refusals
    assert result.rejected - first_burst <= 15


def test_no_probe_near_the_end_of_a_run() -> None:
    # A probe refused in the last second would wait its Retry-After after every other row is
    # done: the run's tail. Told the rows left, the limiter makes none then.
    told = simulate(capacity=32, latency_s=0.05, rows=5_000)
    blind = simulate(capacity=32, latency_s=0.05, rows=5_000, tells_remaining=False)
    assert told.rows_per_s >= 0.97 * 640
    assert blind.rows_per_s < told.rows_per_s  # this run's last probe falls in its last second


def test_small_capacity_below_the_initial_limit() -> None:
    result = simulate(capacity=4, latency_s=0.05, rows=2_000)
    assert result.rows_per_s >= 0.95 * 80
    assert result.rejected_share < 0.02
    assert result.final_limit <= 5


def test_grows_quickly_against_an_unlimited_server() -> None:
    fast = simulate(capacity=None, latency_s=0.05, rows=2_000)
    assert fast.peak_limit >= 64
    slow = simulate(capacity=None, latency_s=0.5, rows=3_000)
    assert slow.peak_limit >= 256


def test_stops_growing_when_the_server_queues_instead_of_rejecting() -> None:
    # 16 workers behind an unbounded queue: more concurrency only adds latency.
    result = simulate(capacity=16, latency_s=0.05, rows=20_000, queueing=True)
    assert result.rows_per_s >= 0.95 * 320
    assert result.final_limit < 48  # latency never grew past ~3x the unloaded latency


def test_caps_are_respected() -> None:
    limiter = Limiter(max_concurrency=5)
    permits = [limiter.try_acquire() for _ in range(10)]
    assert sum(p is not None for p in permits) == 5
    for p in permits:
        if p is not None:
            limiter.release(p, "ok", latency_s=0.01)
    assert limiter.limit <= 5
    assert Limiter().cap == DEFAULT_CEILING
    assert Limiter().limit == INITIAL_LIMIT


def test_one_congestion_event_decreases_once() -> None:
    limiter = Limiter()
    permits = [limiter.try_acquire() for _ in range(16)]
    assert all(p is not None for p in permits)
    for p in permits[8:]:  # the server admitted 8; the 9th to 16th were rejected
        assert p is not None
        limiter.release(p, "overload")
    # All were sent before the first decrease: one decrease, to 0.9 x the 9 in flight then.
    assert limiter.limit == 8
    assert limiter.decreases == 1


def test_rejected_first_request_means_concurrency_one() -> None:
    limiter = Limiter()
    permit = limiter.try_acquire()
    assert permit is not None
    limiter.release(permit, "overload")
    assert limiter.limit == 1


def test_an_agent_that_slows_down_by_itself_is_relearned() -> None:
    now = [0.0]
    limiter = Limiter(clock=lambda: now[0])
    for latency in [0.05] * 200 + [0.5] * 400:
        permit = limiter.try_acquire()
        assert permit is not None
        limiter.release(permit, "ok", latency_s=latency)
    # One request at a time, ten times slower: not our queueing, so no collapse to 1.
    assert limiter.limit >= 16


async def test_waiters_are_served_in_order_and_cancellation_frees_slots() -> None:
    limiter = Limiter(max_concurrency=1)
    first = await limiter.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        permit = await limiter.acquire()
        order.append(i)
        limiter.release(permit, "ok", latency_s=0.001)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    cancelled = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    limiter.release(first, "ok", latency_s=0.001)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert limiter.inflight == 0


async def test_refused_at_concurrency_one_pauses_everyone() -> None:
    limiter = Limiter(initial=1)
    loop = asyncio.get_running_loop()
    permit = await limiter.acquire()
    limiter.release(permit, "overload", retry_after_s=0.2)  # a fresh rejection at limit 1
    started = loop.time()
    permit = await limiter.acquire()
    assert loop.time() - started >= 0.15
    limiter.release(permit, "ok", latency_s=0.01)


async def test_requests_per_second_spaces_requests() -> None:
    limiter = Limiter(requests_per_second=50.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(6):
        permit = await limiter.acquire()
        limiter.release(permit, "ok", latency_s=0.001)
    # Six requests at 50/s: the last starts 5 intervals (0.1 s) after the first.
    assert loop.time() - started >= 0.09


@pytest.mark.parametrize("outcome", ["neutral", "ok"])
def test_neutral_and_ok_outcomes_never_shrink(outcome: str) -> None:
    limiter = Limiter()
    permit = limiter.try_acquire()
    assert permit is not None
    limiter.release(permit, outcome, latency_s=0.01)  # type: ignore[arg-type]
    assert limiter.limit >= INITIAL_LIMIT


def test_an_endless_retry_after_does_not_stop_the_probes_for_good() -> None:
    # A refusal asking for an endless wait (`Retry-After: 1e999`) is one refusal: once the agent
    # admits more, a long run still finds it.
    now = [0.0]
    limiter = Limiter(clock=lambda: now[0])
    limiter.remaining = lambda: 1_000_000
    refused_at = 0
    for step in range(3_000):  # 0.05 s a round trip: two and a half minutes
        permits = []
        while (permit := limiter.try_acquire()) is not None:
            permits.append(permit)
        now[0] += 0.05
        for i, permit in enumerate(permits):
            if step == 2 and i == len(permits) - 1:
                refused_at = len(permits)
                limiter.release(permit, "overload", retry_after_s=float("inf"))
            else:
                limiter.release(permit, "ok", latency_s=0.05)
    assert refused_at > 0
    assert limiter.limit > refused_at


def test_a_free_slot_reads_the_clock_once_and_a_fractional_limit_admits_its_whole_part() -> None:
    # Asked for every call: the clock only for the permit's time, until a pause was ever set.
    reads = 0

    def clock() -> float:
        nonlocal reads
        reads += 1
        return 100.0

    limiter = Limiter(max_concurrency=4, initial=4, clock=clock)
    permits = [limiter.try_acquire() for _ in range(5)]
    assert all(p is not None for p in permits[:4]) and permits[4] is None
    assert reads == 4
    for limit, admitted in [(2.5, 2), (3.0, 3), (0.5, 1), (1.0, 1)]:
        limiter = Limiter(max_concurrency=8, initial=8, clock=clock)
        limiter._limit = limit
        taken = [limiter.try_acquire() for _ in range(8)]
        assert sum(p is not None for p in taken) == admitted == limiter.limit
