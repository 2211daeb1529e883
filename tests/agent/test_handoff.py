"""The bulk run's hand-offs: every row reaches exactly one taker, the producer waits for room,
the writer wakes for the first answer, for a full buffer and for the end."""

from __future__ import annotations

import asyncio

import pytest

from agentbatch.agent.handoff import CommitBuffer, RowFeed


async def test_every_row_reaches_exactly_one_taker_in_order() -> None:
    feed: RowFeed[int] = RowFeed(depth=4)
    taken: list[list[int]] = [[] for _ in range(3)]

    async def taker(mine: list[int]) -> None:
        while (row := await feed.take()) is not None:
            mine.append(row)
            await asyncio.sleep(0)

    async def producer() -> None:
        for start in range(0, 100, 7):
            await feed.put_all(list(range(start, min(start + 7, 100))))
        feed.close()

    await asyncio.wait_for(asyncio.gather(producer(), *(taker(mine) for mine in taken)), 10)
    assert sorted(row for mine in taken for row in mine) == list(range(100))
    assert all(mine == sorted(mine) for mine in taken)  # each taker sees rows in feed order
    assert all(mine for mine in taken)  # the work was shared


async def test_the_producer_waits_while_depth_rows_are_untaken() -> None:
    feed: RowFeed[int] = RowFeed(depth=3)
    put = asyncio.ensure_future(feed.put_all(list(range(10))))
    await asyncio.sleep(0.01)
    assert not put.done()
    assert len(feed) == 3  # at most `depth` rows wait
    assert await feed.take() == 0
    await asyncio.sleep(0.01)
    assert len(feed) == 2 and not put.done()  # the producer waits for half the feed to go
    assert await feed.take() == 1
    await asyncio.sleep(0.01)
    assert len(feed) == 3  # topped up to `depth`, never over
    for expected in range(2, 10):
        assert await feed.take() == expected
    await put
    feed.close()
    assert await feed.take() is None


async def test_take_nowait_takes_a_waiting_row_as_take_does() -> None:
    feed: RowFeed[int] = RowFeed(depth=4)
    assert feed.take_nowait() is None  # nothing waits: the taker awaits take() instead
    put = asyncio.ensure_future(feed.put_all(list(range(6))))
    await asyncio.sleep(0.01)
    assert not put.done() and len(feed) == 4
    assert [feed.take_nowait(), feed.take_nowait()] == [0, 1]
    await asyncio.sleep(0.01)
    assert len(feed) == 4 and put.done()  # half the feed gone: the producer topped it up
    assert [feed.take_nowait() for _ in range(5)] == [2, 3, 4, 5, None]
    feed.close()
    assert feed.take_nowait() is None and await feed.take() is None


async def test_close_wakes_every_waiting_taker() -> None:
    feed: RowFeed[int] = RowFeed(depth=2)
    takers = [asyncio.ensure_future(feed.take()) for _ in range(5)]
    await asyncio.sleep(0)
    await feed.put_all([7])
    feed.close()
    assert (
        sorted(await asyncio.wait_for(asyncio.gather(*takers), 5), key=lambda r: r is None)
        == [7] + [None] * 4
    )


async def test_a_cancelled_taker_passes_its_row_on() -> None:
    feed: RowFeed[int] = RowFeed(depth=2)
    first = asyncio.ensure_future(feed.take())
    second = asyncio.ensure_future(feed.take())
    await asyncio.sleep(0)
    await feed.put_all([1])  # wakes `first`, which is cancelled before it runs
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == 1


async def test_the_writer_wakes_for_the_first_answer_and_takes_all() -> None:
    buffer: CommitBuffer[int] = CommitBuffer(max_items=100)
    waiting = asyncio.ensure_future(buffer.wait_for_any())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert buffer.put_nowait(1)
    await asyncio.wait_for(waiting, 1)
    assert buffer.put_nowait(2)
    assert buffer.take() == [1, 2]
    assert buffer.take() == []


async def test_a_window_ends_at_its_time_when_full_or_when_closed() -> None:
    loop = asyncio.get_running_loop()
    buffer: CommitBuffer[int] = CommitBuffer(max_items=3)
    started = loop.time()
    await buffer.wait_for_window(0.05)
    assert loop.time() - started >= 0.04  # nothing came: the window ran its time

    window = asyncio.ensure_future(buffer.wait_for_window(60))
    await asyncio.sleep(0)
    buffer.put_nowait(1)
    buffer.put_nowait(2)
    await asyncio.sleep(0.01)
    assert not window.done()  # answers within the window keep it open
    buffer.put_nowait(3)
    await asyncio.wait_for(window, 1)  # full: the writer commits now

    buffer.take()
    window = asyncio.ensure_future(buffer.wait_for_window(60))
    await asyncio.sleep(0)
    buffer.close()
    await asyncio.wait_for(window, 1)


async def test_a_full_buffer_holds_putters_until_the_writer_takes() -> None:
    buffer: CommitBuffer[int] = CommitBuffer(max_items=2)
    assert buffer.put_nowait(1) and buffer.put_nowait(2)
    assert not buffer.put_nowait(3)
    putters = [asyncio.ensure_future(buffer.put(n)) for n in (3, 4, 5)]
    await asyncio.sleep(0.01)
    assert not any(p.done() for p in putters)
    assert buffer.take() == [1, 2]
    await asyncio.sleep(0.01)
    assert len(buffer) == 2  # two got room, the third waits for the next take
    taken = buffer.take()
    await asyncio.wait_for(asyncio.gather(*putters), 1)
    assert sorted(taken + buffer.take()) == [3, 4, 5]
