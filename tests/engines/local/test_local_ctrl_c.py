"""Ctrl-C while DuckDB runs a query is the user's interrupt, not an engine or file error.

DuckDB takes SIGINT while a query runs and raises its own InterruptException; the engine's
error handling reported it as `local engine: Query interrupted` (exit 5), or, while a mapped
source was read, `--table ...: cannot read it: Query interrupted` (exit 2)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbatch.engines.local import LocalEngine

# Minutes of work for DuckDB: the interrupt always lands while it runs.
SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE hash(i) % 7 = 3"


@pytest.fixture
def ctrl_c_soon() -> Iterator[Callable[[], None]]:
    # Python's own handler, as in a CLI process: DuckDB interrupts a query on SIGINT only then
    # (a Spark session in this test process installs another; under it the query runs on).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.get_ident()
    timers: list[threading.Timer] = []

    def arm() -> None:
        timer = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))
        timers.append(timer)
        timer.start()

    yield arm
    for timer in timers:
        timer.cancel()
        timer.join()
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("how", ["execute", "fetch_one"])
def test_ctrl_c_during_a_query_is_a_keyboard_interrupt(
    tmp_path: Path, ctrl_c_soon: Callable[[], None], how: str
) -> None:
    engine = LocalEngine(tables={}, warehouse_dir=tmp_path / "wh")
    queries: dict[str, Callable[[], object]] = {
        "execute": lambda: engine.execute(SLOW),  # (DuckDB checks for Ctrl-C as it fetches)
        "fetch_one": lambda: engine.fetch_one(SLOW),
    }
    started = time.monotonic()
    ctrl_c_soon()
    with pytest.raises(KeyboardInterrupt):
        queries[how]()
    assert time.monotonic() - started < 60  # interrupted, not run to its end
    # The engine is still usable after it.
    assert engine.fetch_one("SELECT 41 + 1 AS n") == {"n": 42}
