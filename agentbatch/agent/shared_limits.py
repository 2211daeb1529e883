"""One agent's budget shared by many clients (Spark tasks): a coordinator on the driver, reports
from every task over a socket.

Tasks that each adapt alone overshoot together: each grows while it sees no rejection, so N tasks
ramp N times as fast and each backs off only from its own 429s. Here one controller holds the
total limit, with the control law of limiter.py applied to everyone's signals:

* slow start: the total grows by the answers reported while it is used (half or more in flight),
  until the first congestion signal; then additive increase, one per round trip;
* any task's rejection (a decrease of its limiter) shrinks the total to 0.9x what the tasks had
  in flight (or of the total, if less), at most once per round trip (the slowest task's smoothed latency), so one burst seen by several tasks is one
  signal; latency 1.5x above its baseline ends slow start, as in limiter.py;
* after a decrease, growth holds just below the concurrency that was refused and probes above it
  ever more rarely, as in limiter.py (`Ceiling`);
* each active task's share is the total split evenly (the remainder to the first tasks); a task
  that finishes gives its share to the others.

Each task's limiter follows its share (`Limiter.follow`): it never grows by itself, and still
backs off at once on its own rejections (the shared total follows at its next report). Tasks
report every REPORT_INTERVAL_S, and at once after a rejection. A task that cannot reach the
coordinator keeps its static share of the cap and adapts alone (the behaviour without one).

The protocol is one JSON object per line each way, on one connection per task; a token chosen by
the driver must match. Nothing secret travels: counts and limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentbatch.agent.limiter import DECREASE_FACTOR, INITIAL_LIMIT, Ceiling, Limiter

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.02
# A rejection is one congestion event for at least this long (also when no latency is known).
MIN_HOLD_S = 0.01
_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BudgetAddress:
    """Where tasks report (picklable: it travels to the executors)."""

    host: str
    port: int
    token: str


@dataclass
class _Task:
    inflight: int = 0
    latency_s: float = 0.0
    last_seen: float = 0.0


@dataclass
class BudgetController:
    """The shared total and the shares (pure; thread-safe)."""

    cap: int
    initial: int = INITIAL_LIMIT
    # Tasks of the run, and how many run at once: a share is split among the tasks expected to
    # be running, so the first task to report does not take the whole total.
    tasks: int = 1
    slots: int = 1
    clock: Callable[[], float] = time.monotonic
    limit: float = field(init=False)
    finished: int = field(init=False, default=0)
    slow_start: bool = field(init=False, default=True)
    decreases: int = field(init=False, default=0)
    peak: int = field(init=False, default=0)
    _tasks: dict[str, _Task] = field(init=False, default_factory=dict)
    _last_decrease: float = field(init=False, default=float("-inf"))
    _ceiling: Ceiling = field(init=False, default_factory=Ceiling)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.limit = float(max(1, min(self.initial, self.cap)))
        self.peak = int(self.limit)

    def report(
        self,
        task: str,
        *,
        ok: int,
        decreases: int,
        inflight: int,
        latency_ratio: float = 1.0,
        latency_s: float | None = None,
        local_limit: int | None = None,
        done: bool = False,
    ) -> int:
        """Learn from one task's signals since its last report; its share from now on."""
        with self._lock:
            now = self.clock()
            if done:
                if self._tasks.pop(task, None) is not None:
                    self.finished += 1
                return 0
            state = self._tasks.setdefault(task, _Task())
            state.inflight = inflight
            state.last_seen = now
            if latency_s:
                state.latency_s = latency_s
            if decreases > 0 or latency_ratio > 3.0:
                self._decrease(now)
                share = self._share(task)
                # The task backed off at once; a share from before this event must not undo it.
                return min(share, local_limit) if local_limit else share
            elif ok > 0:
                if latency_ratio > 1.5:
                    self.slow_start = False
                used = sum(t.inflight for t in self._tasks.values())
                if used >= self.limit / 2 and latency_ratio <= 2.0:
                    grow = ok if self.slow_start else ok / self.limit
                    wanted = self._ceiling.bound(self.limit + grow, self.limit, now)
                    self.limit = min(float(self.cap), wanted)
                    self.peak = max(self.peak, int(self.limit))
            return self._share(task)

    def _decrease(self, now: float) -> None:
        hold = max([MIN_HOLD_S, *(t.latency_s for t in self._tasks.values())])
        if now - self._last_decrease < hold:
            return  # the same congestion event, seen by another task or a later report
        self._last_decrease = now
        self.slow_start = False
        self.decreases += 1
        # As limiter.py: to 0.9x the concurrency at which the rejection happened (what the tasks
        # had in flight), not of a limit that may have run ahead of it.
        in_flight = sum(t.inflight for t in self._tasks.values())
        base = min(self.limit, float(in_flight)) if in_flight else self.limit
        self._ceiling.refused(base, now)
        self.limit = max(float(len(self._tasks) or 1), DECREASE_FACTOR * base)

    def _share(self, task: str) -> int:
        names = sorted(self._tasks)
        expected = min(self.slots, max(0, self.tasks - self.finished))
        total = int(self.limit)
        base, extra = divmod(total, max(len(names), expected))
        return max(1, base + (1 if names.index(task) < extra else 0))


class BudgetService:
    """The controller behind a socket on the driver: `with BudgetService(cap) as service:` and
    hand `service.address` to the tasks."""

    def __init__(
        self,
        cap: int,
        *,
        host: str = "127.0.0.1",
        initial: int = INITIAL_LIMIT,
        tasks: int = 1,
        slots: int = 1,
    ) -> None:
        self.controller = BudgetController(cap=cap, initial=initial, tasks=tasks, slots=slots)
        self.token = secrets.token_hex(16)
        controller, token = self.controller, self.token

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(ConnectionError):
                    self._serve()

            def _serve(self) -> None:
                # A task that ends without saying so (a killed executor) resets its connection.
                for line in self.rfile:
                    try:
                        message = json.loads(line)
                        if message.get("token") != token:
                            return
                        share = controller.report(
                            str(message["task"]),
                            ok=int(message.get("ok", 0)),
                            decreases=int(message.get("decreases", 0)),
                            inflight=int(message.get("inflight", 0)),
                            latency_ratio=float(message.get("latency_ratio", 1.0)),
                            latency_s=message.get("latency_s"),
                            local_limit=message.get("limit"),
                            done=bool(message.get("done", False)),
                        )
                    except (ValueError, KeyError, TypeError):
                        return
                    self.wfile.write(b'{"share": %d}\n' % share)
                    self.wfile.flush()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, 0), Handler)
        self.address = BudgetAddress(host, self._server.server_address[1], token)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="agentbatch-budget", daemon=True
        )

    def __enter__(self) -> BudgetService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def driver_host(spark_conf_host: str | None) -> str:
    """The address executors reach the driver at (loopback for local sessions)."""
    if spark_conf_host:
        return spark_conf_host
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


class SharedBudget:
    """A task's side: reports its limiter's signals and makes it follow its share. Runs as a
    background coroutine on the task's event loop (`async with SharedBudget(...)`)."""

    def __init__(self, address: BudgetAddress, limiter: Limiter, task: str) -> None:
        self.address = address
        self.limiter = limiter
        self.task = task
        self._reported_ok = 0
        self._reported_decreases = 0
        self._runner: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self.connected = False

    async def __aenter__(self) -> SharedBudget:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.address.host, self.address.port),
                _CONNECT_TIMEOUT_S,
            )
            self.connected = True
            await self._report()
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            log.warning(
                "task %s cannot reach the shared agent budget at %s:%d (%s); it adapts alone",
                self.task,
                self.address.host,
                self.address.port,
                e,
            )
            await self._close()
            return self
        self._runner = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        if self.connected:
            with contextlib.suppress(OSError, ValueError, asyncio.TimeoutError):
                await asyncio.wait_for(self._report(done=True), _CONNECT_TIMEOUT_S)
        await self._close()

    async def _loop(self) -> None:
        try:
            while True:
                await self._until_due()
                await self._report()
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            log.warning("task %s lost the shared agent budget (%s); it adapts alone", self.task, e)
            self.connected = False

    async def _until_due(self) -> None:
        """REPORT_INTERVAL_S, or sooner when the limiter backed off (others must know)."""
        deadline = time.monotonic() + REPORT_INTERVAL_S
        while time.monotonic() < deadline:
            if self.limiter.decreases != self._reported_decreases:
                return
            await asyncio.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    async def _report(self, *, done: bool = False) -> None:
        assert self._reader is not None and self._writer is not None
        limiter = self.limiter
        ok = limiter.successes - self._reported_ok
        decreases = limiter.decreases - self._reported_decreases
        self._reported_ok += ok
        self._reported_decreases += decreases
        message: dict[str, Any] = {
            "token": self.address.token,
            "task": self.task,
            "ok": ok,
            "decreases": decreases,
            "inflight": limiter.inflight,
            "latency_ratio": round(limiter.latency_ratio, 3),
            "latency_s": limiter.latency_s,
            "limit": limiter.limit,
            "done": done,
        }
        self._writer.write(json.dumps(message).encode() + b"\n")
        await self._writer.drain()
        line = await self._reader.readline()
        if not line:
            raise ConnectionResetError("the coordinator closed the connection")
        share = int(json.loads(line)["share"])
        # A rejection while the reply was on its way: the share predates it, and following it
        # would undo the back-off. The loop reports that rejection at once and gets a fresh one.
        if not done and limiter.decreases == self._reported_decreases:
            limiter.follow(share)

    async def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = self._reader = None


__all__ = [
    "BudgetAddress",
    "BudgetController",
    "BudgetService",
    "SharedBudget",
    "driver_host",
]
