"""Ctrl-C while DuckDB runs a query is the user's interrupt, not an engine or file error.

DuckDB takes SIGINT while a query runs and raises its own error (DuckDB 2.0: a RuntimeError
'Query interrupted'; an interrupted connection: InterruptException); the engine's error handling
reported it as `local engine: Query interrupted` (exit 5), or, while a mapped source was read,
`--table ...: cannot read it: Query interrupted` (exit 2). A real SIGINT is not used here: DuckDB
2.0 acts on it unreliably (once per process for `execute`, and not at all under another SIGINT
handler, such as a Spark session's), so the query is interrupted the way DuckDB's SIGINT handling
does it, through the connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agentbatch.engines.base import ctrl_c_kept
from agentbatch.engines.local import LocalEngine

# Minutes of work for DuckDB: the interrupt always lands while it runs.
SLOW = "SELECT count(*) AS n FROM range(100000000000) t(i) WHERE hash(i) % 7 = 3"


@pytest.mark.parametrize("how", ["execute", "fetch_one"])
def test_a_query_interrupted_is_a_keyboard_interrupt(tmp_path: Path, how: str) -> None:
    engine = LocalEngine(tables={}, warehouse_dir=tmp_path / "wh")
    queries: dict[str, Callable[[], object]] = {
        "execute": lambda: engine.execute(SLOW),
        "fetch_one": lambda: engine.fetch_one(SLOW),
    }
    timer = threading.Timer(0.5, engine._con.interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            queries[how]()
    finally:
        timer.join()
    # The engine is still usable after it.
    assert engine.fetch_one("SELECT 41 + 1 AS n") == {"n": 42}


def test_ctrl_c_during_a_query_is_a_keyboard_interrupt_and_other_errors_stay() -> None:
    with pytest.raises(KeyboardInterrupt), ctrl_c_kept():
        raise RuntimeError("Query interrupted")  # what DuckDB 2.0 raises on SIGINT
    with pytest.raises(RuntimeError, match="out of memory"), ctrl_c_kept():
        raise RuntimeError("out of memory")
