"""What goes wrong, and when: the fault configuration of the loopback agent server.

Every random decision is a pure function of `(seed, request key, attempt number)`, not of a
shared random stream, so a run is reproducible however requests interleave, and a retried
request (a new attempt number) draws again and can succeed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

from agentbatch.errors import UsageError

FaultKind = Literal[
    "rate_limit",
    "rate_limit_no_retry_after",
    "server_error",
    "unavailable",
    "connection_reset",
    "hang",
    "malformed_json",
    "truncated_stream",
    "slow_stream",
    "stream_error",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

# The field holding each kind's probability.
PROBABILITY_FIELDS: Mapping[FaultKind, str] = {kind: f"p_{kind}" for kind in FAULT_KINDS}


def _default_permanent() -> dict[str, int]:
    return {"PERMANENT_ERROR": 400}


@dataclass(frozen=True)
class FaultConfig:
    """Faults and load behaviour of one agent server. All probabilities are per attempt."""

    seed: int = 0
    # Time to answer (before the first byte), uniform in [latency - jitter, latency + jitter].
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    # At most this many admitted requests in flight; beyond -> 429 with Retry-After.
    capacity: int | None = None
    capacity_retry_after_s: float = 1.0
    p_rate_limit: float = 0.0
    p_rate_limit_no_retry_after: float = 0.0
    p_server_error: float = 0.0
    p_unavailable: float = 0.0
    p_connection_reset: float = 0.0
    p_hang: float = 0.0
    p_malformed_json: float = 0.0
    p_truncated_stream: float = 0.0
    p_slow_stream: float = 0.0
    p_stream_error: float = 0.0
    retry_after_s: float = 1.0
    # A hanging request answers nothing for this long, then drops the connection.
    hang_s: float = 30.0
    # Pause between stream chunks (and before a non-streamed body) under `slow_stream`.
    slow_chunk_ms: float = 200.0
    # Pause between stream chunks in normal streams.
    chunk_delay_ms: float = 0.0
    # The first `fail_first` attempts of every key fail with `fail_first_kind`.
    fail_first: int = 0
    fail_first_kind: FaultKind = "server_error"
    # Once a key has had this many injected faults, its later attempts always succeed.
    max_faults_per_key: int | None = None
    # A request whose text contains a marker always gets that HTTP status (no retry helps).
    permanent: Mapping[str, int] = field(default_factory=_default_permanent)

    def __post_init__(self) -> None:
        total = 0.0
        for kind in FAULT_KINDS:
            name = PROBABILITY_FIELDS[kind]
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"FaultConfig.{name} must be within [0, 1], got {value!r}")
            total += value
        if total > 1.0 + 1e-9:
            raise UsageError(f"FaultConfig probabilities add up to {total:.3f}, more than 1")
        for name in ("latency_ms", "jitter_ms", "retry_after_s", "capacity_retry_after_s"):
            if getattr(self, name) < 0:
                raise UsageError(f"FaultConfig.{name} must not be negative")
        for name in ("hang_s", "slow_chunk_ms", "chunk_delay_ms"):
            if getattr(self, name) < 0:
                raise UsageError(f"FaultConfig.{name} must not be negative")
        if self.capacity is not None and self.capacity < 1:
            raise UsageError(f"FaultConfig.capacity must be at least 1, got {self.capacity}")
        if self.fail_first < 0:
            raise UsageError("FaultConfig.fail_first must not be negative")
        if self.fail_first_kind not in FAULT_KINDS:
            raise UsageError(
                f"FaultConfig.fail_first_kind must be one of {', '.join(FAULT_KINDS)}, "
                f"got {self.fail_first_kind!r}"
            )
        if self.max_faults_per_key is not None and self.max_faults_per_key < 0:
            raise UsageError("FaultConfig.max_faults_per_key must not be negative")
        for marker, status in self.permanent.items():
            if not marker:
                raise UsageError("FaultConfig.permanent markers must not be empty")
            if not 400 <= status <= 599:
                raise UsageError(
                    f"FaultConfig.permanent[{marker!r}] must be an HTTP error status, got {status}"
                )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def unit_draw(seed: int, salt: str, key: str, attempt: int) -> float:
    """A reproducible number in [0, 1) for one (seed, purpose, key, attempt)."""
    digest = hashlib.blake2b(f"{seed}|{salt}|{key}|{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def decide_fault(
    config: FaultConfig, key: str, attempt: int, faults_so_far: int = 0
) -> FaultKind | None:
    """The fault to inject into attempt `attempt` (1-based) of `key`, or None to answer well."""
    if config.max_faults_per_key is not None and faults_so_far >= config.max_faults_per_key:
        return None
    if attempt <= config.fail_first:
        return config.fail_first_kind
    draw = unit_draw(config.seed, "fault", key, attempt)
    cumulative = 0.0
    for kind in FAULT_KINDS:
        cumulative += getattr(config, PROBABILITY_FIELDS[kind])
        if draw < cumulative:
            return kind
    return None


def latency_s(config: FaultConfig, key: str, attempt: int) -> float:
    """Seconds to wait before answering this attempt."""
    if config.latency_ms <= 0 and config.jitter_ms <= 0:
        return 0.0
    spread = (2.0 * unit_draw(config.seed, "latency", key, attempt) - 1.0) * config.jitter_ms
    return max(0.0, config.latency_ms + spread) / 1000.0


def permanent_status(config: FaultConfig, text: str) -> tuple[str, int] | None:
    """The (marker, status) of the first permanent-fault marker found in `text`."""
    for marker, status in config.permanent.items():
        if marker in text:
            return marker, status
    return None
