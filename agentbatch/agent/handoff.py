"""The two hand-offs of a bulk run: rows from the producer to the workers, answers from the
workers to the writer.

Both are what an `asyncio.Queue` would do, minus its cost per item: a queue's put and get are a
dozen Python calls each (waiter lists, the unfinished-task count, its event), paid twice a row,
and against a fast agent the client's CPU per row is what bounds a run. Here a worker takes the
next row with a `popleft` while there is one and an answer is a list `append`; a future is made
only when someone has to wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


def _settle(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class RowFeed(Generic[T]):
    """One producer, many takers. At most `depth` rows wait in the feed: the producer tops it up
    and, once it is full, waits until the takers have emptied half of it (one wake-up per half,
    not per row). `close` ends the feed once the rows left are taken."""

    def __init__(self, depth: int) -> None:
        self._rows: deque[T] = deque()
        self.depth = max(1, depth)
        self._takers: deque[asyncio.Future[None]] = deque()
        self._room: asyncio.Future[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._rows)

    async def put_all(self, rows: Sequence[T]) -> None:
        start = 0
        while start < len(rows):
            room = self.depth - len(self._rows)
            if room <= 0:
                self._room = asyncio.get_running_loop().create_future()
                try:
                    await self._room
                finally:
                    self._room = None
                continue
            self._rows.extend(rows[start : start + room])
            start += room
            self._wake_takers()

    def close(self) -> None:
        self._closed = True
        self._wake_takers()

    async def take(self) -> T | None:
        """The next row; None once the feed is closed and every row has been taken."""
        rows = self._rows
        while not rows:
            if self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._takers.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_takers()  # the row it was woken for goes to another taker
                raise
        return self.take_nowait()

    def take_nowait(self) -> T | None:
        """The next row when one is waiting, else None (then `await take()`): most takes of a
        run find a row, and skip a coroutine for it."""
        rows = self._rows
        if not rows:
            return None
        row = rows.popleft()
        if self._room is not None and len(rows) <= self.depth // 2:
            _settle(self._room)
        return row

    def _wake_takers(self) -> None:
        # One taker per row waiting (all of them once closed); a woken taker that finds the rows
        # gone to a taker that never slept simply waits again.
        wake = len(self._takers) if self._closed else min(len(self._rows), len(self._takers))
        for _ in range(wake):
            _settle(self._takers.popleft())


class CommitBuffer(Generic[T]):
    """Many putters, one writer. `put` appends without waiting unless `max_items` are already
    waiting for their commit; the writer waits for the first item, then for a commit window,
    and takes everything at once."""

    def __init__(self, max_items: int) -> None:
        self._items: list[T] = []
        self._max = max(1, max_items)
        self._writer: asyncio.Future[None] | None = None
        # How many items wake the writer: 1 while it waits for any, `max_items` in a window.
        self._wake_at = self._max
        self._room: asyncio.Future[None] | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> bool:
        """Add `item`, or return False when the buffer is full (then `await put(item)`)."""
        items = self._items
        if len(items) >= self._max:
            return False
        items.append(item)
        if len(items) >= self._wake_at:
            _settle(self._writer)
        return True

    async def put(self, item: T) -> None:
        while not self.put_nowait(item):
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room)  # shared by every waiting putter

    def close(self) -> None:
        """No more items: the writer is woken to take what is left."""
        self.closed = True
        _settle(self._writer)

    async def wait_for_any(self) -> None:
        """Until there is an item or the buffer is closed."""
        await self._wait(1, None)

    async def wait_for_window(self, seconds: float) -> None:
        """Until `seconds` pass, the buffer is full, or it is closed."""
        await self._wait(self._max, seconds)

    def take(self) -> list[T]:
        items, self._items = self._items, []
        _settle(self._room)
        return items

    async def _wait(self, wake_at: int, seconds: float | None) -> None:
        if self.closed or len(self._items) >= wake_at:
            return
        if seconds is not None and seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        self._writer = loop.create_future()
        self._wake_at = wake_at
        timer = loop.call_later(seconds, _settle, self._writer) if seconds is not None else None
        try:
            await self._writer
        finally:
            if timer is not None:
                timer.cancel()
            self._writer = None
            self._wake_at = self._max
