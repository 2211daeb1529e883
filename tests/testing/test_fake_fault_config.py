from __future__ import annotations

import pytest

from agentbatch.errors import UsageError
from agentbatch.testing.faults import (
    FAULT_KINDS,
    FaultConfig,
    decide_fault,
    latency_s,
    permanent_status,
    unit_draw,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_server_error": 1.5}, "p_server_error must be within"),
        ({"p_hang": -0.1}, "p_hang must be within"),
        ({"p_server_error": 0.6, "p_unavailable": 0.6}, "add up to 1.200"),
        ({"capacity": 0}, "capacity must be at least 1"),
        ({"latency_ms": -1}, "latency_ms must not be negative"),
        ({"fail_first": -1}, "fail_first must not be negative"),
        ({"fail_first_kind": "explode"}, "fail_first_kind must be one of"),
        ({"permanent": {"X": 200}}, "must be an HTTP error status"),
        ({"permanent": {"": 400}}, "markers must not be empty"),
    ],
)
def test_bad_config_is_a_clear_usage_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        FaultConfig(**kwargs)  # type: ignore[arg-type]


def test_draws_are_reproducible_and_spread() -> None:
    assert unit_draw(1, "fault", "k", 1) == unit_draw(1, "fault", "k", 1)
    draws = [unit_draw(1, "fault", f"k{i}", 1) for i in range(2000)]
    assert all(0.0 <= d < 1.0 for d in draws)
    assert 0.45 < sum(draws) / len(draws) < 0.55
    assert unit_draw(1, "fault", "k", 1) != unit_draw(2, "fault", "k", 1)


def test_no_faults_by_default() -> None:
    config = FaultConfig()
    assert all(decide_fault(config, f"k{i}", 1) is None for i in range(500))


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_probability_one_always_injects_that_kind(kind: str) -> None:
    config = FaultConfig(**{f"p_{kind}": 1.0})  # type: ignore[arg-type]
    assert {decide_fault(config, f"k{i}", a) for i in range(50) for a in (1, 2, 3)} == {kind}


def test_fault_rate_matches_probability_and_retries_draw_again() -> None:
    config = FaultConfig(seed=3, p_server_error=0.3)
    first = [decide_fault(config, f"row-{i}", 1) for i in range(4000)]
    rate = first.count("server_error") / len(first)
    assert 0.27 < rate < 0.33
    # Every key eventually gets an attempt without a fault.
    for i in range(200):
        assert any(decide_fault(config, f"row-{i}", a) is None for a in range(1, 30))


def test_fail_first_fails_exactly_the_first_attempts() -> None:
    config = FaultConfig(fail_first=2, fail_first_kind="unavailable")
    assert [decide_fault(config, "k", a) for a in (1, 2, 3, 4)] == [
        "unavailable",
        "unavailable",
        None,
        None,
    ]


def test_max_faults_per_key_guarantees_success() -> None:
    config = FaultConfig(p_rate_limit=1.0, max_faults_per_key=3)
    assert decide_fault(config, "k", 1, faults_so_far=2) == "rate_limit"
    assert decide_fault(config, "k", 4, faults_so_far=3) is None


def test_latency_stays_within_jitter() -> None:
    config = FaultConfig(latency_ms=50, jitter_ms=20)
    values = [latency_s(config, f"k{i}", 1) for i in range(500)]
    assert min(values) >= 0.030
    assert max(values) <= 0.070
    assert len(set(values)) > 100
    assert latency_s(FaultConfig(), "k", 1) == 0.0
    assert latency_s(FaultConfig(latency_ms=5, jitter_ms=50), "k", 1) >= 0.0


def test_permanent_markers() -> None:
    config = FaultConfig(permanent={"PERMANENT_ERROR": 400, "GONE": 410})
    assert permanent_status(config, "a PERMANENT_ERROR here") == ("PERMANENT_ERROR", 400)
    assert permanent_status(config, "it is GONE") == ("GONE", 410)
    assert permanent_status(config, "fine") is None
    assert permanent_status(FaultConfig(permanent={}), "PERMANENT_ERROR") is None
