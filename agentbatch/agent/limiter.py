"""Adaptive concurrency: find the agent's sustainable rate without being told.

AIMD with slow start and a latency guard, in the spirit of TCP congestion control:

* slow start: the limit grows by one per success (doubling per round trip) until the first sign of
  congestion: a 429/503, a timeout, or the smoothed latency rising 1.5x above its baseline;
* then additive increase: one per round trip while latency stays within 2x of the baseline;
* multiplicative decrease on 429/503 and timeouts: to 0.9x the concurrency at which the rejected
  request was sent, at most once per round trip (a request only counts if it was sent after the
  previous decrease), so one burst of rejections is one signal;
* after a decrease, growth stops just below the concurrency that was refused (the agent's capacity,
  most likely) and holds there for HOLD_S before probing above it again; each probe refused at
  the same place doubles the hold (up to MAX_HOLD_S). An agent with a fixed capacity is then kept
  full with a few 429s a run, instead of one every few round trips (each refused row waits its
  Retry-After: late in a run, that wait is the run's tail). Near the end of a run no probe is
  made: when the rows left (`remaining`, told by the runner) would be done within twice the wait a
  refused row was last told, a refused probe could only make the run longer;
* sustained latency above 3x the baseline also decreases (a server that queues instead of
  rejecting). The baseline is the best smoothed latency seen; it is re-learned (and slow start
  re-entered) only when latency rises at no more concurrency than when it was measured, so an
  agent that gets slower by itself is not mistaken for our own queueing, and vice versa.

A 429's `Retry-After` is honoured by the rejected row, which waits that long (see retry.py). When
requests are rejected even at a concurrency of one (the server refuses everything rather than
being full), all new requests pause for `Retry-After`.

Optional caps: `max_concurrency`, and `requests_per_second` as a token bucket. Only 2xx answers
are latency samples: a fast refusal (4xx) says nothing about how loaded the agent is.

Several clients of one agent (Spark tasks) share one budget: `follow(share)` hands the growth to a
coordinator (shared_limits.py) that sees every client's successes and rejections; the limiter
then never grows by itself, still backs off at once on its own rejections, and reports what it
saw (`successes`, `decreases`, `latency_ratio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["ok", "overload", "timeout", "neutral"]

INITIAL_LIMIT = 16
DEFAULT_CEILING = 512
DECREASE_FACTOR = 0.9
MAX_PAUSE_S = 30.0
# How long growth holds below the concurrency last refused before probing above it; doubled by
# each probe refused at the same place, up to MAX_HOLD_S.
HOLD_S = 1.0
MAX_HOLD_S = 8.0
# A refused row's wait when the agent gave no Retry-After (about retry.py's first backoff).
DEFAULT_REFUSAL_WAIT_S = 0.5


@dataclass(slots=True)  # one per call: a frozen dataclass's __init__ costs 3x
class Permit:
    generation: int
    inflight_at_acquire: int
    acquired_at: float


@dataclass
class Ceiling:
    """Where the agent last refused (the concurrency of the refused request), and until when
    growth holds just below it."""

    refused_at: float | None = None
    hold_s: float = HOLD_S
    until: float = 0.0

    def refused(self, level: float, now: float) -> None:
        """A decrease: refused at concurrency `level`. Refused again where the last probe was:
        the next probe waits twice as long."""
        again = self.refused_at is not None and level >= self.refused_at - 1.0
        self.hold_s = min(2.0 * self.hold_s, MAX_HOLD_S) if again else HOLD_S
        self.refused_at = level
        self.until = now + self.hold_s

    def bound(self, value: float, current: float, now: float, ending: bool = False) -> float:
        """`value`, the limit growth wants, held just below the last refusal while the hold
        lasts (or the run is `ending`); past it, a probe."""
        refused = self.refused_at
        if refused is None or value <= refused - 1.0:
            return value
        if now < self.until or ending:
            return max(current, refused - 1.0)
        if value > refused + 1.0:
            # Probed past the last refusal without one: the agent has room; forget it.
            self.refused_at = None
            self.hold_s = HOLD_S
        return value


class Limiter:
    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        requests_per_second: float | None = None,
        initial: int = INITIAL_LIMIT,
        ceiling: int = DEFAULT_CEILING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cap = max(1, min(max_concurrency or ceiling, ceiling))
        self._limit = float(min(initial, self._cap))
        self._clock = clock
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._next_send = 0.0
        self._inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._generation = 0
        self._slow_start = True
        self._ewma: float | None = None
        self._baseline: float | None = None
        # The limit when the baseline latency was measured.
        self._baseline_limit = self._limit
        self._paused_until = 0.0
        self._ceiling = Ceiling()
        self._refusal_wait_s = DEFAULT_REFUSAL_WAIT_S
        # Rows the run has still to answer (set by the runner; None: unknown).
        self.remaining: Callable[[], int | None] | None = None
        self._pause_handle: asyncio.TimerHandle | None = None
        self.peak_limit = int(self._limit)
        # The most calls in flight at once (the limit is what was allowed).
        self.peak_inflight = 0
        self.decreases = 0
        self.relearned = 0
        # Answers (2xx) so far; a coordinator reads the difference between its reports.
        self.successes = 0
        # Set by follow(): the limit is a coordinator's share, never grown here.
        self._following = False

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def cap(self) -> int:
        return self._cap

    @property
    def latency_ratio(self) -> float:
        """The smoothed latency over its baseline (1.0 before any sample)."""
        if self._ewma is None or not self._baseline:
            return 1.0
        return self._ewma / self._baseline

    @property
    def latency_s(self) -> float | None:
        """The smoothed latency of answers, None before any."""
        return self._ewma

    def follow(self, share: int) -> None:
        """Take `share` (at most the cap) as the limit: a coordinator decides growth from now on;
        rejections and queueing still shrink the limit here at once, until the next share."""
        self._following = True
        self._limit = float(max(1, min(share, self._cap)))
        self.peak_limit = max(self.peak_limit, int(self._limit))
        self._wake()

    async def acquire(self) -> Permit:
        """Wait for a slot (and a token when a request rate is set); FIFO among waiters."""
        if self._waiters or not self._has_room():
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            self._schedule_resume()
            try:
                await fut  # `_wake` hands the slot over by counting it in `_inflight`
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._inflight -= 1
                    self._wake()
                else:
                    self._remove_waiter(fut)
                raise
        else:
            self._inflight += 1
        permit = Permit(self._generation, self._inflight, self._clock())
        if self._interval:
            try:
                await self._take_token()
            except asyncio.CancelledError:
                self._inflight -= 1
                self._wake()
                raise
        return permit

    def acquire_now(self) -> Permit | None:
        """A slot without waiting when one is free and no request rate is set, else None (then
        `await acquire()`): most calls of a run find a slot, and skip a coroutine for it."""
        return None if self._interval else self.try_acquire()

    def try_acquire(self) -> Permit | None:
        """A slot now, or None (ignores the request-rate cap; for simulations and tests)."""
        if self._waiters or not self._has_room():
            return None
        self._inflight += 1
        return Permit(self._generation, self._inflight, self._clock())

    def release(
        self,
        permit: Permit,
        outcome: Outcome,
        *,
        latency_s: float | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """Give the slot back and learn from how the call ended."""
        self._inflight -= 1
        if permit.inflight_at_acquire > self.peak_inflight:
            self.peak_inflight = permit.inflight_at_acquire
        if outcome in ("overload", "timeout"):
            # Rejected at a concurrency of one, sent after the last decrease: the server refuses
            # everything rather than being full, so all new requests wait as long as it asked.
            fresh = permit.generation == self._generation
            if outcome == "overload":
                # Capped: an endless wait (`Retry-After: 1e999`, a date in year 9999) would keep
                # every later probe "too near the end of the run" (`_ending`) for good.
                self._refusal_wait_s = min(retry_after_s or DEFAULT_REFUSAL_WAIT_S, MAX_PAUSE_S)
            if outcome == "overload" and retry_after_s and fresh and self._limit <= 1.0:
                self._pause(min(retry_after_s, MAX_PAUSE_S))
            self._decrease(permit)
        elif outcome == "ok":
            self.successes += 1
            if latency_s is not None:
                self._observe_latency(latency_s, permit)
        if self._waiters:
            self._wake()

    # --- the control law ---------------------------------------------------------------------

    def _observe_latency(self, latency_s: float, permit: Permit) -> None:
        ewma = latency_s if self._ewma is None else self._ewma + 0.05 * (latency_s - self._ewma)
        self._ewma = ewma
        if self._baseline is None or ewma < self._baseline:
            self._baseline, self._baseline_limit = ewma, self._limit
        elif self._limit <= self._baseline_limit and ewma > 2.0 * self._baseline:
            # Slower at no more concurrency than when the baseline was measured: the agent itself
            # changed (longer answers, a slower model), not our load. Re-learn from here.
            self._baseline, self._baseline_limit = ewma, self._limit
            self._slow_start = True
            self.relearned += 1
        ratio = ewma / self._baseline if self._baseline > 0 else 1.0
        if ratio > 3.0:
            self._decrease(permit)
            return
        if self._following:
            return  # the coordinator grows the shared budget
        # Grow only while the window is used; otherwise the limit would drift up unproven.
        if permit.inflight_at_acquire < self._limit / 2:
            return
        if self._slow_start:
            if ratio > 1.5:
                self._slow_start = False
            else:
                self._grow(self._limit + 1.0)
                return
        if ratio <= 2.0:
            self._grow(self._limit + 1.0 / self._limit)

    def _grow(self, value: float) -> None:
        if self._limit >= self._cap and self._ceiling.refused_at is None:
            return  # at the cap, no refusal remembered: the limit stays where it is
        self._set_limit(self._ceiling.bound(value, self._limit, self._clock(), self._ending()))

    def _ending(self) -> bool:
        """Whether the rows left would be done before a refused probe's wait is over."""
        left = self.remaining() if self.remaining is not None else None
        if left is None or self._ewma is None:
            return False
        seconds_left = left * self._ewma / max(self._limit, 1.0)
        return seconds_left < 2.0 * self._refusal_wait_s

    def _decrease(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return  # sent before the last decrease: part of the same congestion event
        self._generation += 1
        self._slow_start = False
        self.decreases += 1
        level = min(self._limit, float(permit.inflight_at_acquire))
        self._ceiling.refused(level, self._clock())
        self._set_limit(max(1.0, DECREASE_FACTOR * level))

    def _set_limit(self, value: float) -> None:
        self._limit = min(float(self._cap), max(1.0, value))
        self.peak_limit = max(self.peak_limit, int(self._limit))

    # --- waiting ------------------------------------------------------------------------------

    def _has_room(self) -> bool:
        # Asked for every call: the clock only once a pause was ever set (monotonic time is
        # never below the 0.0 of no pause), and `inflight < limit` without the property (for a
        # whole number n, n + 1 <= x is n < int(x)).
        inflight = self._inflight
        if inflight + 1 > self._limit and inflight >= 1:
            return False
        paused = self._paused_until
        return not paused or self._clock() >= paused

    def _wake(self) -> None:
        while self._waiters and self._has_room():
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._inflight += 1
            fut.set_result(None)
        if self._waiters:
            self._schedule_resume()

    def _remove_waiter(self, fut: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)

    def _pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _schedule_resume(self) -> None:
        # One timer wakes the waiters when a pause ends; no polling.
        delay = self._paused_until - self._clock()
        if delay <= 0 or not self._waiters:
            return
        if self._pause_handle is not None and not self._pause_handle.cancelled():
            self._pause_handle.cancel()
        self._pause_handle = asyncio.get_running_loop().call_later(delay, self._wake)

    async def _take_token(self) -> None:
        now = self._clock()
        send_at = max(now, self._next_send)
        self._next_send = send_at + self._interval
        if send_at > now:
            await asyncio.sleep(send_at - now)
