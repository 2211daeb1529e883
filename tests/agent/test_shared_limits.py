"""One agent's budget shared by several clients: the controller's law, and tasks that report to it
over a socket against a capacity-limited agent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentbatch.agent.limiter import HOLD_S, Limiter
from agentbatch.agent.shared_limits import (
    BudgetAddress,
    BudgetController,
    BudgetService,
    SharedBudget,
)


def test_shares_split_the_total_and_a_finished_task_gives_its_share_back() -> None:
    now = [0.0]
    controller = BudgetController(cap=512, initial=16, tasks=3, slots=3, clock=lambda: now[0])
    # The first task to report already gets a third: the others are expected.
    shares = [controller.report(f"t{i}", ok=0, decreases=0, inflight=0) for i in range(3)]
    assert shares == [6, 5, 5]  # 16 over three tasks, the remainder to the first
    controller.report("t2", ok=0, decreases=0, inflight=0, done=True)
    assert controller.report("t0", ok=0, decreases=0, inflight=0) == 8


def test_one_rejection_slows_every_task_once_per_round_trip() -> None:
    now = [0.0]
    controller = BudgetController(cap=512, initial=40, clock=lambda: now[0])
    for task in ("a", "b"):
        controller.report(task, ok=0, decreases=0, inflight=20, latency_s=0.05)
    # Both tasks saw the same burst of 429s: one decrease, to 0.9x.
    assert controller.report("a", ok=0, decreases=1, inflight=20) == 18
    assert controller.report("b", ok=0, decreases=3, inflight=20) == 18
    assert controller.decreases == 1 and controller.limit == 36
    now[0] += 0.06  # a round trip later: a new congestion event
    controller.report("a", ok=0, decreases=1, inflight=18)
    assert controller.decreases == 2


def test_grows_only_while_used_slow_start_then_additive() -> None:
    now = [0.0]
    controller = BudgetController(cap=64, initial=16, clock=lambda: now[0])
    controller.report("a", ok=10, decreases=0, inflight=2)  # mostly idle: no growth
    assert controller.limit == 16
    controller.report("a", ok=10, decreases=0, inflight=16)
    assert controller.limit == 26  # slow start: one per answer
    controller.report("a", ok=0, decreases=1, inflight=26)
    assert controller.limit == 26 * 0.9
    controller.report("a", ok=10, decreases=0, inflight=24)
    assert 23.4 < controller.limit < 24  # additive: about one per round trip
    for _ in range(200):
        controller.report("a", ok=100, decreases=0, inflight=64)
    assert controller.limit == 25  # holds just below the 26 refused, for HOLD_S
    now[0] += HOLD_S
    for _ in range(200):
        controller.report("a", ok=100, decreases=0, inflight=64)
    assert controller.limit == 64  # then probes past it; never past the cap


_admitted = [0]
# A call takes this long. Longer than the tasks' report interval, as an agent's calls are: with
# 10 ms calls the reports could lag a whole round trip whenever this process's threads were slow
# to be scheduled (a loaded machine), and the shared figure measured the scheduler.
CALL_S = 0.04
ROWS = 600


async def _task_against(
    agent_capacity: int, address: BudgetAddress | None, rows: int
) -> tuple[int, int]:
    """A task whose calls take CALL_S and are refused beyond the agent's capacity (shared by
    every task through `_admitted`); a refused row waits 10 ms and goes again. Returns
    (answers, rejections)."""
    limiter = Limiter(initial=16)
    ok = rejected = 0

    async def one() -> None:
        nonlocal ok, rejected
        while True:
            permit = await limiter.acquire()
            if _admitted[0] >= agent_capacity:
                rejected += 1
                limiter.release(permit, "overload", retry_after_s=0.01)
                await asyncio.sleep(0.01)
                continue
            _admitted[0] += 1
            await asyncio.sleep(CALL_S)
            _admitted[0] -= 1
            limiter.release(permit, "ok", latency_s=CALL_S)
            ok += 1
            return

    if address is None:
        await asyncio.gather(*(one() for _ in range(rows)))
        return ok, rejected
    async with SharedBudget(address, limiter, task=str(id(limiter))) as budget:
        assert budget.connected
        await asyncio.gather(*(one() for _ in range(rows)))
    return ok, rejected


async def _rejections(tasks: int, *, shared: bool) -> int:
    _admitted[0] = 0
    with BudgetService(cap=512, initial=16, tasks=tasks, slots=tasks) as service:
        address = service.address if shared else None
        results = await asyncio.gather(
            *(_task_against(8, address, ROWS // tasks) for _ in range(tasks))
        )
    assert sum(ok for ok, _ in results) == ROWS
    return sum(rejected for _, rejected in results)


async def test_tasks_sharing_a_budget_are_refused_about_as_often_as_one_client() -> None:
    # An agent that admits 8 calls at once. One client alone, four tasks each adapting alone,
    # and four tasks sharing one budget. (One client: its slow start's overshoot, then a probe
    # now and then; four tasks alone: each overshoots and probes on its own.)
    one = await _rejections(1, shared=False)
    alone = await _rejections(4, shared=False)
    shared = await _rejections(4, shared=True)
    assert shared < alone, (one, alone, shared)
    # Under 3% of the rows refused, most in the first round trip: the four tasks start at a total
    # of 16, twice what the agent admits.
    assert shared <= one + 16, (one, alone, shared)


async def test_a_share_that_predates_a_rejection_does_not_undo_the_back_off() -> None:
    # A coordinator that holds its reply to the second report until the task was refused; it
    # answers 8, or, as BudgetController does, no more than a task reporting a rejection holds.
    refused = asyncio.Event()
    reports: list[dict[str, Any]] = []

    async def coordinator(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Closes its end when the task hangs up: from Python 3.12.1 on, leaving the server's
        # `async with` waits for every connection to close.
        try:
            while line := await reader.readline():
                report = json.loads(line)
                reports.append(report)
                if len(reports) == 2:
                    await refused.wait()
                share = min(8, report["limit"]) if report["decreases"] else 8
                writer.write(json.dumps({"share": share}).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(coordinator, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = Limiter(initial=16)
    async with server, SharedBudget(BudgetAddress("127.0.0.1", port, "t"), limiter, "a"):
        assert limiter.limit == 8
        while len(reports) < 2:
            await asyncio.sleep(0.005)
        permit = await limiter.acquire()
        limiter.release(permit, "overload")
        backed_off = limiter.limit
        assert backed_off < 8
        refused.set()  # the stale share (8) arrives now
        while len(reports) < 3:
            await asyncio.sleep(0.005)
        assert limiter.limit == backed_off
        assert reports[2]["decreases"] == 1  # and the rejection went out at once


async def test_a_task_that_cannot_reach_the_driver_adapts_alone() -> None:
    limiter = Limiter(initial=16)
    async with SharedBudget(BudgetAddress("127.0.0.1", 1, "x"), limiter, "t") as budget:
        assert not budget.connected
    assert limiter.limit == 16
