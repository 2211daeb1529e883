"""Structured concurrency that also runs on Python 3.10 (no asyncio.TaskGroup there), and
`run_sync`, the synchronous entry to the async calls (from a notebook cell too).

`run_all` runs coroutines as tasks and returns only when every one of them has finished. If one
fails, the others are cancelled and awaited, and the first failure is raised as itself (not
wrapped in an exception group, so callers can map it to an exit code). If the caller is
cancelled, every task is cancelled and awaited before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, also where an event loop is already running, and without a second report
    of an interrupt the caller already got.

    A SIGINT handler that raises (PySpark's, in any process with a Spark session) raises
    KeyboardInterrupt inside whichever task is running; the task keeps it, and when it is
    collected, at some later moment, asyncio logs it as an error nobody retrieved."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_with_interrupts_reported_once(coroutine))
    # A notebook cell: IPython's kernel (every Databricks Python notebook's) runs cells inside its
    # event loop, and `asyncio.run` refuses to start a second one in the same thread.
    return _run_in_a_thread(coroutine)


def _run_in_a_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on a loop of its own in a new thread, this thread waiting for it.

    An interrupt of the wait (a notebook's stop button: KeyboardInterrupt in this thread) cancels
    the coroutine, as `asyncio.run` does on Ctrl-C, and is raised once it has unwound: the
    answers it holds reach the checkpoint, and its locks are released, before the cell ends."""
    started: Future[tuple[asyncio.AbstractEventLoop, asyncio.Future[T]]] = Future()
    finished: Future[T] = Future()

    async def main() -> T:
        task = asyncio.ensure_future(_with_interrupts_reported_once(coroutine))
        started.set_result((asyncio.get_running_loop(), task))
        return await task

    def thread() -> None:
        try:
            finished.set_result(asyncio.run(main()))
        except BaseException as error:  # handed to the waiting thread, raised there
            if not started.done():
                started.set_exception(error)
            finished.set_exception(error)

    threading.Thread(target=thread, name="agentbatch-calls", daemon=True).start()
    try:
        return finished.result()
    except KeyboardInterrupt:
        # Failures here (the loop already closed) mean the coroutine has ended: nothing to cancel.
        with contextlib.suppress(BaseException):
            loop, task = started.result()
            loop.call_soon_threadsafe(task.cancel)
        with contextlib.suppress(BaseException):
            finished.result()
        raise


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
