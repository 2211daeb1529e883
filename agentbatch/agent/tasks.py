"""Structured concurrency that also runs on Python 3.10 (no asyncio.TaskGroup there).

`run_all` runs coroutines as tasks and returns only when every one of them has finished. If one
fails, the others are cancelled and awaited, and the first failure is raised as itself (not
wrapped in an exception group, so callers can map it to an exit code). If the caller is
cancelled, every task is cancelled and awaited before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, without a second report of an interrupt the caller already got.

    A SIGINT handler that raises (PySpark's, in any process with a Spark session) raises
    KeyboardInterrupt inside whichever task is running; the task keeps it, and when it is
    collected, at some later moment, asyncio logs it as an error nobody retrieved."""
    return asyncio.run(_with_interrupts_reported_once(coroutine))


async def _with_interrupts_reported_once(coroutine: Coroutine[Any, Any, T]) -> T:
    asyncio.get_running_loop().set_exception_handler(_report_unless_interrupt)
    return await coroutine


def _report_unless_interrupt(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), KeyboardInterrupt | SystemExit):
        return
    loop.default_exception_handler(context)


async def run_all(coroutines: Sequence[Coroutine[Any, Any, None]]) -> None:
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    if not tasks:
        return
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await _cancel_and_wait(tasks)
        raise
    failed = [t for t in done if not t.cancelled() and t.exception() is not None]
    if pending:
        await _cancel_and_wait(list(pending))
    if failed:
        # The task that failed first, in the order they were given.
        first = min(failed, key=tasks.index).exception()
        assert first is not None
        raise first


async def _cancel_and_wait(tasks: Sequence[asyncio.Future[None]]) -> None:
    for task in tasks:
        task.cancel()
    # Shielded from our own cancellation: the tasks must really be finished when we return.
    await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
