"""Server-side counters, updated by the server's event loop and read from any thread."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StatsSnapshot:
    requests_total: int
    # Requests per key (`custom_inputs.key`, else `sha256:<hash of the user text>`).
    requests_by_key: dict[str, int]
    status_counts: dict[int, int]
    # Faults injected by kind, plus `capacity`, `permanent` and `auth` rejections.
    faults: dict[str, int]
    rate_limited: int
    in_flight: int
    max_in_flight: int
    streams_started: int
    streams_completed: int
    # From the first request's arrival to the last reply (since the last reset): how long the
    # agent was busy, without a client's set-up and teardown.
    busy_s: float = 0.0

    def requests_for(self, key: str) -> int:
        return self.requests_by_key.get(key, 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "requests_by_key": self.requests_by_key,
            "status_counts": {str(k): v for k, v in self.status_counts.items()},
            "faults": self.faults,
            "rate_limited": self.rate_limited,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "busy_s": self.busy_s,
        }


@dataclass
class ServerStats:
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    requests_total: int = 0
    requests_by_key: Counter[str] = field(default_factory=Counter)
    # Admitted attempts per key and faults per key: what fault decisions are drawn from.
    admitted_by_key: Counter[str] = field(default_factory=Counter)
    faults_by_key: Counter[str] = field(default_factory=Counter)
    status_counts: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    admitted_in_flight: int = 0
    max_in_flight: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    # When each request left (time.monotonic()), the latest ones: what a kill test bounds by.
    left_at: deque[float] = field(default_factory=lambda: deque(maxlen=1_000_000))
    first_arrival: float | None = None

    def arrived(self) -> None:
        with self._lock:
            self.requests_total += 1
            if self.first_arrival is None:
                self.first_arrival = time.monotonic()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def left(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.left_at.append(time.monotonic())

    def left_since(self, moment: float) -> int:
        """Requests that left (answered or refused) at or after `moment` (time.monotonic())."""
        with self._lock:
            times = list(self.left_at)
        return sum(1 for t in reversed(times) if t >= moment) if times else 0

    def keyed(self, key: str) -> None:
        with self._lock:
            self.requests_by_key[key] += 1

    def try_admit(self, capacity: int | None) -> bool:
        """Take a capacity slot; False when all `capacity` slots are taken."""
        with self._lock:
            if capacity is not None and self.admitted_in_flight >= capacity:
                return False
            self.admitted_in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.admitted_in_flight -= 1

    def next_attempt(self, key: str) -> tuple[int, int]:
        """The 1-based attempt number of this admitted request and the key's faults so far."""
        with self._lock:
            self.admitted_by_key[key] += 1
            return self.admitted_by_key[key], self.faults_by_key[key]

    def fault(self, kind: str, key: str | None = None) -> None:
        with self._lock:
            self.faults[kind] += 1
            if key is not None:
                self.faults_by_key[key] += 1

    def status(self, code: int) -> None:
        with self._lock:
            self.status_counts[code] += 1

    def stream_started(self) -> None:
        with self._lock:
            self.streams_started += 1

    def stream_completed(self) -> None:
        with self._lock:
            self.streams_completed += 1

    def reset(self) -> None:
        """Zero every counter (in-flight gauges stay: those requests are still running)."""
        with self._lock:
            self.requests_total = 0
            self.first_arrival = None
            self.left_at.clear()
            self.max_in_flight = self.in_flight
            self.streams_started = self.streams_completed = 0
            for counter in (
                self.requests_by_key,
                self.admitted_by_key,
                self.faults_by_key,
                self.status_counts,
                self.faults,
            ):
                counter.clear()

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                requests_total=self.requests_total,
                requests_by_key=dict(self.requests_by_key),
                status_counts=dict(self.status_counts),
                faults=dict(self.faults),
                rate_limited=self.status_counts.get(429, 0),
                in_flight=self.in_flight,
                max_in_flight=self.max_in_flight,
                streams_started=self.streams_started,
                streams_completed=self.streams_completed,
                busy_s=(
                    max(0.0, self.left_at[-1] - self.first_arrival)
                    if self.first_arrival is not None and self.left_at
                    else 0.0
                ),
            )
