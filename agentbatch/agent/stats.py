"""What a bulk run did: counts, error kinds, latency percentiles, throughput."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_BUCKET_RATIO = 1.05
_MIN_MS = 0.01


class LatencyHistogram:
    """Log-scale buckets (5% wide): percentiles in constant memory, however many rows."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self.count = 0

    def add(self, ms: float) -> None:
        self._counts[self._bucket(ms)] += 1
        self.count += 1

    @staticmethod
    def _bucket(ms: float) -> int:
        return int(math.log(max(ms, _MIN_MS) / _MIN_MS, _BUCKET_RATIO))

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        # Nearest rank: the smallest value with at least q of the samples at or below it, so a
        # few rows' p95 is their slowest, not the one below it.
        rank = max(math.ceil(q * self.count), 1)
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                # The bucket's geometric middle.
                return float(_MIN_MS * _BUCKET_RATIO ** (bucket + 0.5))
        return None  # pragma: no cover - unreachable when count > 0


@dataclass
class BulkStats:
    rows_seen: int = 0
    sent: int = 0
    reused: int = 0
    ok: int = 0
    errors: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    http_429: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    peak_concurrency: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram, repr=False)

    @property
    def done(self) -> int:
        return self.ok + self.errors

    @property
    def rows_per_s(self) -> float:
        return self.done / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def p50_latency_ms(self) -> float | None:
        return self.latency.percentile(0.5)

    @property
    def p95_latency_ms(self) -> float | None:
        return self.latency.percentile(0.95)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_seen": self.rows_seen,
            "sent": self.sent,
            "reused": self.reused,
            "ok": self.ok,
            "errors": self.errors,
            "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            "requests": self.requests,
            "retries": self.retries,
            "http_429": self.http_429,
            "p50_latency_ms": _round(self.p50_latency_ms),
            "p95_latency_ms": _round(self.p95_latency_ms),
            "rows_per_s": round(self.rows_per_s, 1),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "wall_s": round(self.wall_s, 3),
            "peak_concurrency": self.peak_concurrency,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
