"""Progress lines on stderr while the benchmark runs (stdout gets the final table)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench.measure import Measurement

Log = Callable[[str], None]


def to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def describe(m: Measurement) -> str:
    if m.error:
        return f"  {m.scenario} {m.client:<20} FAILED: {m.error}"
    http_429 = "" if m.http_429 is None else f"  {m.http_429} x 429"
    return (
        f"  {m.scenario} {m.client:<20} {m.rows_per_s:9.1f} rows/s  "
        f"{m.ok}/{m.rows} ok{http_429}  ({m.note})"
    )
