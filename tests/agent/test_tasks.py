"""run_all: structured concurrency without exception groups."""

from __future__ import annotations

import asyncio

import pytest

from agentbatch.agent.tasks import run_all


async def test_waits_for_every_task() -> None:
    finished: list[int] = []

    async def work(i: int) -> None:
        await asyncio.sleep(0.01 * i)
        finished.append(i)

    await run_all([work(i) for i in range(5)])
    assert sorted(finished) == [0, 1, 2, 3, 4]


async def test_first_failure_is_raised_as_itself_and_the_rest_are_cancelled() -> None:
    cancelled: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise

    async def fail() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await run_all([slow(), fail()])
    assert cancelled == ["slow"]


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


async def test_nothing_to_run() -> None:
    await run_all([])
