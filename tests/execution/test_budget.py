"""The budget guard and the estimate's arithmetic, table-driven: limits from the job and the
target, checks before sending, the guard while sending, intervals and the time model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentbatch.errors import BudgetError, ErrorRateError, SpecError, UsageError
from agentbatch.execution.budget import (
    Budget,
    Limits,
    PerRow,
    cost_of,
    limits_of,
    load_per_row,
    price_of,
    save_per_row,
)
from agentbatch.execution.estimation import calls_wall_s, mean_interval
from agentbatch.spec.models import Job, Price
from tests.support.profiled import functions_called

JOB = {
    "name": "j",
    "source": {"table": "c.s.t", "key": "id"},
    "request": "text",
    "agent": {"endpoint": "apps/agent"},
    "output": {"table": "c.s.out"},
}


def job(**update: object) -> Job:
    return Job.model_validate({**JOB, **update})


def test_a_setting_replaces_the_jobs_value_and_defaults_apply() -> None:
    spec = job(budget={"max_rows": 100, "max_cost": 2, "max_error_rate": 0.2})
    assert limits_of(spec, {}) == Limits(max_rows=100, max_cost=2.0, max_error_rate=0.2)
    limits = limits_of(spec, {"max_rows": "50", "max_tokens": 1000})
    assert (limits.max_rows, limits.max_tokens, limits.max_cost) == (50, 1000, 2.0)
    assert limits_of(job(), {}) == Limits(max_error_rate=0.5, error_rate_min_rows=20)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_rows", "ten", "--max-rows (setting max_rows): 'ten' is not a whole number"),
        ("max_rows", 2.5, "--max-rows (setting max_rows): 2.5 is not a whole number"),
        ("max_tokens", 0, "--max-tokens (setting max_tokens): must be more than 0, not 0"),
        ("max_cost", -1, "--max-cost (setting max_cost): must be more than 0, not -1"),
        ("max_cost", True, "--max-cost (setting max_cost): True is not a number"),
        ("max_error_rate", 2, "--max-error-rate (setting max_error_rate): is a share of rows"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        limits_of(job(), {key: value})
    assert str(raised.value).startswith(message)


def test_the_job_budget_and_price_are_strict() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        job(budget={"max_rows": 0})
    with pytest.raises(ValueError, match="max_spend"):
        job(budget={"max_spend": 1})
    with pytest.raises(ValueError, match="output_per_million"):
        job(agent={"endpoint": "apps/agent", "price": {"input_per_million": 1}})


def test_prices_come_from_the_job_else_the_project_file(tmp_path: Path) -> None:
    (tmp_path / "agentbatch.yml").write_text(
        "prices:\n  apps/agent: {input_per_million: 1, output_per_million: 4}\n", encoding="utf-8"
    )
    assert price_of(job(), tmp_path) == Price(input_per_million=1.0, output_per_million=4.0)
    own = job(
        agent={"endpoint": "apps/agent", "price": {"input_per_million": 3, "output_per_million": 5}}
    )
    assert price_of(own, tmp_path) == Price(input_per_million=3.0, output_per_million=5.0)
    assert price_of(job(agent={"endpoint": "apps/other"}), tmp_path) is None
    (tmp_path / "agentbatch.yml").write_text(
        "prices:\n  apps/agent: {input_per_million: -1, output_per_million: 4}\n",
        encoding="utf-8",
    )
    with pytest.raises(SpecError, match=r"agentbatch.yml:\d+: prices.apps/agent.input_per_million"):
        price_of(job(), tmp_path)


def test_cost_is_per_million_tokens() -> None:
    price = Price(input_per_million=2.0, output_per_million=10.0)
    assert cost_of(price, 1_000_000, 100_000) == pytest.approx(3.0)
    assert cost_of(None, 1, 1) is None


def test_check_before_refuses_rows_tokens_and_cost_over_the_budget() -> None:
    price = Price(input_per_million=1_000.0, output_per_million=1_000.0)
    per_row = PerRow(input_tokens=90.0, output_tokens=10.0)
    budget = Budget(Limits(max_rows=10, max_tokens=1_000, max_cost=1.0), price, per_row)
    budget.check_before(10)  # 10 rows, 1,000 tokens, cost 1.0: at the limits, not over
    with pytest.raises(BudgetError, match="over max_rows 10"):
        budget.check_before(11)
    with pytest.raises(BudgetError, match="over max_tokens 1,000"):
        Budget(Limits(max_tokens=1_000), price, per_row).check_before(11)
    with pytest.raises(BudgetError, match=r"over max_cost 0\.5"):
        Budget(Limits(max_cost=0.5), price, per_row).check_before(6)
    # Without per-row figures (no estimate yet) only rows are judged before sending.
    Budget(Limits(max_tokens=1)).check_before(1_000)


def test_check_before_at_the_cost_limit() -> None:
    price = Price(input_per_million=1_000.0, output_per_million=1_000.0)
    per_row = PerRow(input_tokens=90.0, output_tokens=10.0)  # 0.1 per row
    with pytest.raises(BudgetError):
        Budget(Limits(max_cost=0.5), price, per_row).check_before(10)
    Budget(Limits(max_cost=0.5), price, per_row).check_before(5)


def answer(budget: Budget, tokens: int = 10) -> None:
    assert budget.admit()
    budget.record(error=None, permanent=False, input_tokens=tokens, output_tokens=0)


def test_the_guard_admits_at_most_max_rows_and_says_how_far_it_got() -> None:
    budget = Budget(Limits(max_rows=3))
    for _ in range(3):
        answer(budget)
    assert budget.stopped is None  # the last row reached the limit: the run is complete
    assert not budget.admit()
    assert budget.cut_short
    assert "max_rows 3" in str(budget.stopped) and "3 row(s) answered" in str(budget.stopped)


def test_the_guard_counts_the_calls_in_flight_before_each_call() -> None:
    budget = Budget(Limits(max_tokens=100))
    assert budget.may_send(in_flight=50)  # nothing known yet: the first calls go
    answer(budget, tokens=10)
    # 10 spent + (8 in flight + this call) x 10 = 100: within; one more call would pass it.
    assert budget.may_send(in_flight=8)
    assert not budget.may_send(in_flight=9)
    assert "budget reached (max_tokens 100" in str(budget.stopped)
    assert not budget.admit()


def test_the_estimate_per_row_guides_the_first_calls() -> None:
    budget = Budget(Limits(max_tokens=100), per_row=PerRow(20.0, 5.0))
    assert budget.may_send(in_flight=3)
    assert not budget.may_send(in_flight=4)


def test_spent_tokens_reaching_the_limit_stop_the_next_row() -> None:
    budget = Budget(Limits(max_tokens=30))
    answer(budget, 15)
    answer(budget, 15)
    assert budget.stopped is not None and not budget.admit()


async def settle() -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_without_figures_a_token_limit_lets_one_call_go_at_a_time() -> None:
    async def scenario() -> None:
        budget = Budget(Limits(max_tokens=100))
        for _ in range(3):
            assert budget.admit()
        await budget.turn()  # nothing tells what a row costs: the first call goes alone
        second = asyncio.ensure_future(budget.turn())
        third = asyncio.ensure_future(budget.turn())
        await settle()
        assert not second.done() and not third.done()
        # A transient failure says nothing of the cost: the next call goes, still alone.
        budget.record(
            error="[transient] timeout", permanent=False, input_tokens=None, output_tokens=None
        )
        await settle()
        assert [second.done(), third.done()].count(True) == 1
        # An answer with its usage: the calls are projected from it, none waits any more.
        budget.record(error=None, permanent=False, input_tokens=3, output_tokens=4)
        await settle()
        assert second.done() and third.done()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("limits", "per_row"),
    [(Limits(max_rows=5), None), (Limits(max_tokens=100), PerRow(3.0, 4.0))],
    ids=["no token or cost limit", "an estimate"],
)
def test_nothing_waits_without_a_token_limit_or_with_an_estimate(
    limits: Limits, per_row: PerRow | None
) -> None:
    async def scenario() -> None:
        budget = Budget(limits, per_row=per_row)
        turns = [asyncio.ensure_future(budget.turn()) for _ in range(4) if budget.admit()]
        await settle()
        assert len(turns) == 4 and all(turn.done() for turn in turns)

    asyncio.run(scenario())


def test_turn_now_takes_the_turn_that_turn_would_give_at_once() -> None:
    # The runner asks `turn_now()` first (no coroutine for a row that need not wait) and awaits
    # `turn()` only when it says no: the two hold back the same rows.
    budget = Budget(Limits(max_tokens=100))
    for _ in range(3):
        assert budget.admit()
    assert budget.turn_now()  # nothing out: the first call goes
    assert not budget.turn_now() and not budget.turn_now()  # blind, one out: the rest wait
    budget.record(error=None, permanent=False, input_tokens=3, output_tokens=4)
    assert budget.turn_now() and budget.turn_now()  # a row's cost is known: none waits
    unlimited = Budget(Limits(max_rows=5))
    assert all(unlimited.turn_now() for _ in range(5))


def test_an_answer_without_usage_stops_a_token_or_cost_limit_it_cannot_guard() -> None:
    price = Price(input_per_million=1.0, output_per_million=1.0)
    for budget in (Budget(Limits(max_tokens=100)), Budget(Limits(max_cost=1.0), price)):
        assert budget.admit()
        budget.record(error=None, permanent=False, input_tokens=None, output_tokens=None)
        assert "answered without reporting its token usage" in str(budget.stopped)
        assert "cannot be guarded" in str(budget.stopped) and not budget.admit()
    # Without such a limit there is nothing to guard: the run goes on.
    budget = Budget(Limits(max_rows=5))
    assert budget.admit()
    budget.record(error=None, permanent=False, input_tokens=None, output_tokens=None)
    assert budget.stopped is None


def test_the_stop_says_so_far_while_calls_are_in_flight_and_the_final_count_after() -> None:
    async def scenario() -> None:
        budget = Budget(Limits(max_tokens=20))
        assert budget.admit()
        await budget.turn()
        budget.record(error=None, permanent=False, input_tokens=5, output_tokens=5)
        for _ in range(2):
            assert budget.admit()
            await budget.turn()
        assert budget.may_send(in_flight=0)  # 10 + 10 <= 20
        assert not budget.may_send(in_flight=1)  # 10 + 2 x 10 > 20: the third call stays
        assert "1 row(s) answered so far (10 tokens)" in str(budget.stopped)
        budget.record(error=None, permanent=False, input_tokens=5, output_tokens=5)
        budget.release()  # the refused call's row
        assert "2 row(s) answered (20 tokens); answered rows were written" in str(budget.stopped)

    asyncio.run(scenario())


def test_the_error_rate_stops_after_the_minimum_and_names_the_commonest_error() -> None:
    budget = Budget(Limits(max_error_rate=0.5, error_rate_min_rows=4))
    for error in ("[permanent] HTTP 400: bad prompt", "[permanent] HTTP 400: bad prompt"):
        assert budget.admit()
        budget.record(error=error, permanent=True, input_tokens=None, output_tokens=None)
    assert budget.stopped is None  # 2 of 2 failed, but fewer than the minimum answered
    answer(budget)
    assert budget.admit()
    budget.record(
        error="[permanent] HTTP 422: other", permanent=True, input_tokens=None, output_tokens=None
    )
    stopped = budget.stopped
    assert isinstance(stopped, ErrorRateError) and stopped.exit_code == 7
    assert "3 of 4 answered rows failed for good (75%" in str(stopped)
    assert "commonest error (2 row(s)): [permanent] HTTP 400: bad prompt" in str(stopped)


def test_transient_failures_do_not_count_towards_the_error_rate() -> None:
    budget = Budget(Limits(error_rate_min_rows=2))
    for _ in range(5):
        assert budget.admit()
        budget.record(
            error="[transient] timeout", permanent=False, input_tokens=None, output_tokens=None
        )
    assert budget.stopped is None


def test_a_rate_of_one_never_stops() -> None:
    budget = Budget(Limits(max_error_rate=1.0, error_rate_min_rows=1))
    for _ in range(5):
        assert budget.admit()
        budget.record(error="[permanent] no", permanent=True, input_tokens=None, output_tokens=None)
    assert budget.stopped is None


def test_per_row_figures_are_kept_for_the_same_call_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.estimate.json"
    assert load_per_row(path, "abc") is None
    save_per_row(path, "abc", PerRow(30.5, 4.0), sampled=20)
    assert load_per_row(path, "abc") == PerRow(30.5, 4.0)
    assert load_per_row(path, "other") is None  # an edited prompt: a new estimate is needed
    path.write_text("{not json", encoding="utf-8")
    assert load_per_row(path, "abc") is None


def test_mean_interval_narrows_with_the_sample_and_vanishes_for_the_whole_population() -> None:
    values = [10.0, 12.0, 14.0, 16.0, 18.0]
    wide = mean_interval(values)
    assert wide is not None and wide.mean == 14.0 and wide.low < 14.0 < wide.high
    whole = mean_interval(values, population=5)  # the sample is every row: no uncertainty
    assert whole is not None and whole.low == whole.high == 14.0
    assert mean_interval([]) is None


@pytest.mark.parametrize(
    ("rows", "max_concurrency", "expected_s"),
    [
        (100, 10, 10.0),  # 10 rounds of 1 s at a fixed concurrency of 10
        (25, 10, 3.0),
        (1, None, 1.0),
        (0, None, 0.0),
    ],
)
def test_calls_wall_time_at_a_fixed_concurrency(
    rows: int, max_concurrency: int | None, expected_s: float
) -> None:
    wall = calls_wall_s(rows, [1.0], max_concurrency=max_concurrency, ceiling=512)
    assert wall == pytest.approx(expected_s)


def test_calls_wall_time_grows_with_the_limiter_and_honours_a_rate_cap() -> None:
    # The run's own limiter: from 16 it grows while the window is at least half used, so 112
    # rows take 4 rounds of 1 s (at a fixed 16 they would take 7).
    assert calls_wall_s(112, [1.0], max_concurrency=None, ceiling=512) == pytest.approx(4.0)
    assert calls_wall_s(112, [1.0], max_concurrency=16, ceiling=512) == pytest.approx(7.0)
    # A sustained concurrency of 8 (the agent pushed back): 80 rows take 10 rounds.
    assert calls_wall_s(80, [1.0], max_concurrency=None, ceiling=8) == pytest.approx(10.0)
    assert (
        calls_wall_s(10, [0.001], max_concurrency=None, ceiling=512, requests_per_second=2) == 5.0
    )


def test_the_estimate_brackets_the_time_when_the_agent_may_cap_concurrency() -> None:
    from types import SimpleNamespace

    from agentbatch.execution.estimation import Estimate, _project

    call = SimpleNamespace(max_concurrency=None, requests_per_second=None)
    plan = SimpleNamespace(steps=SimpleNamespace(call=call))  # a REST-fallback plan's reads
    found = Estimate(
        job="j", target="local", strategy="rest-fallback", selected=116, skipped=0, reusable=0,
        to_send=116, sample_size=16, sampled=16, latency_ms=1000.0, latencies_ms=[1000.0],
        sample_wall_s=1.0, concurrency=512, sample_concurrency=16,
    )  # fmt: skip
    _project(found, plan, None)  # type: ignore[arg-type]
    # 100 rows left: the limiter's own growth from 16 takes 4 rounds; at the sample's 16 calls
    # at once, 7 rounds.
    assert found.projected_wall_s == pytest.approx(4.0)
    assert found.projected_wall_s_high == pytest.approx(7.0)


def test_a_row_under_no_token_or_cost_limit_costs_few_calls() -> None:
    # admit, turn_now and record run for every row of a run: without a token or cost limit
    # there is nothing to project, the cheapest test comes first, and nothing else is called
    # (no error-rate check without a failure, no wake-up without a row waiting in `turn`):
    # one call each, also while other rows' calls are out.
    budget = Budget(Limits(max_rows=1_000))
    for _ in range(3):
        assert budget.admit() and budget.turn_now()
        budget.record(None, False, 3, 4)
    assert budget.admit() and budget.turn_now()  # a call out while the others go
    with functions_called() as calls:
        for _ in range(10):
            budget.admit()
            budget.turn_now()
            assert budget.record(None, False, 3, 4)
    assert len(calls) == 30, sorted(set(calls))
    assert budget.stopped is None and budget.sent == 14


async def test_a_row_waiting_for_its_turn_wakes_when_another_settles() -> None:
    # A token limit without an estimate lets one call go at a time until a row's cost is known:
    # the next row waits in `turn`, and the first one's record lets it go.
    budget = Budget(Limits(max_tokens=1_000))
    assert budget.admit() and budget.turn_now()
    assert budget.admit() and not budget.turn_now()
    waiting = asyncio.ensure_future(budget.turn())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert budget.record(None, False, 3, 4)
    await asyncio.wait_for(waiting, 1)
