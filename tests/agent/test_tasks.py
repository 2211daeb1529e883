"""run_all: structured concurrency without exception groups."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from agentbatch.agent.tasks import run_all, run_sync


async def test_waits_for_every_task() -> None:
    finished: list[int] = []

    async def work(i: int) -> None:
        await asyncio.sleep(0.01 * i)
        finished.append(i)

    await run_all([work(i) for i in range(5)])
    # All five finished before run_all returned, the slowest last.
    assert finished == [0, 1, 2, 3, 4]


async def test_first_failure_is_raised_as_itself_and_the_rest_are_cancelled() -> None:
    cancelled: list[str] = []
    boom = KeyError("boom")

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # cleanup that itself awaits
            cancelled.append("slow")
            raise

    async def fail() -> None:
        await asyncio.sleep(0)
        raise boom

    with pytest.raises(KeyError) as raised:
        await run_all([slow(), fail()])
    # The very exception object, not a wrapper or an exception group.
    assert raised.value is boom
    # The other task was cancelled and its cleanup finished before run_all raised.
    assert cancelled == ["slow"]


async def test_of_several_failures_the_first_given_is_raised() -> None:
    """Failures that land in the same wait: the one earliest in the list wins, not whichever the
    done set yields first (ten of them, so a lucky pick is unlikely)."""

    async def fail(error: Exception) -> None:
        await asyncio.sleep(0)
        raise error

    errors = [ValueError(f"error {i}") for i in range(10)]
    for order in (errors, errors[::-1]):
        with pytest.raises(ValueError) as raised:
            await run_all([fail(e) for e in order])
        assert raised.value is order[0]


async def test_cancelling_the_caller_cancels_and_awaits_every_task() -> None:
    cleaned: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits
            cleaned.append("done")

    outer = asyncio.ensure_future(run_all([stubborn(), stubborn()]))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert cleaned == ["done", "done"]


async def test_nothing_to_run_returns_at_once() -> None:
    """No tasks: run_all completes on its first step, never suspending the caller."""
    step = run_all([])
    with pytest.raises(StopIteration) as finished:
        step.send(None)
    assert finished.value.value is None


def _interrupted_in_a_task() -> None:
    """Run a loop whose task is interrupted inside its own step, as a raising SIGINT handler does."""

    async def main() -> None:
        async def step() -> None:
            raise KeyboardInterrupt

        asyncio.ensure_future(step())  # noqa: RUF006 - never retrieved, on purpose
        await asyncio.sleep(1)

    with pytest.raises(KeyboardInterrupt):
        run_sync(main())


def test_an_interrupt_raised_in_a_task_reaches_the_caller_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _interrupted_in_a_task()
    gc.collect()  # the interrupted task is collected: asyncio would report it again here
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_other_unretrieved_failures_are_still_reported(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def fail() -> None:
            raise ValueError("nobody looked")

        asyncio.ensure_future(fail())  # noqa: RUF006 - never retrieved, on purpose
        await asyncio.sleep(0.01)

    run_sync(main())
    gc.collect()
    assert "nobody looked" in caplog.text


async def test_runs_where_an_event_loop_is_already_running() -> None:
    """As in a notebook cell: this test runs inside a loop, and blocks it while run_sync waits."""

    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    async def fail() -> None:
        await asyncio.sleep(0)
        raise error

    error = KeyError("boom")
    assert run_sync(answer()) == 42
    with pytest.raises(KeyError) as raised:
        run_sync(fail())
    assert raised.value is error
