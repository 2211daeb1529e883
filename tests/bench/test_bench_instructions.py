"""The instruction counter: callgrind counts only the bracketed part, and the per-row line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.instructions import Count, build_toggle, fit, report, timed_instructions

# Set-up work outside the bracket, then `n` loop turns inside it.
_PROGRAM = """
import ctypes, sys
toggle = ctypes.CDLL(sys.argv[1])
sum(range(3_000_000))  # set-up: not counted
toggle.start()
sum(range(int(sys.argv[2])))
toggle.stop()
sum(range(3_000_000))  # teardown: not counted
"""


def _count(tmp_path: Path, toggle: Path, turns: int) -> int:
    out = tmp_path / f"cg-{turns}"
    out.mkdir()
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.out.%p",
            sys.executable,
            "-c",
            _PROGRAM,
            str(toggle),
            str(turns),
        ],
        check=True,
        capture_output=True,
    )
    [dump] = out.glob("callgrind.out.*.1")
    return timed_instructions(dump.read_text(encoding="utf-8"))


def test_only_the_bracketed_part_is_counted(tmp_path: Path) -> None:
    toggle = build_toggle(tmp_path)
    small, large = _count(tmp_path, toggle, 100_000), _count(tmp_path, toggle, 300_000)
    # Three times the turns, about three times the instructions: the set-up and teardown
    # (thirty times the small part's turns) are outside the count.
    assert 2.7 < large / small < 3.3
    assert small < 100_000 * 1_000


def test_the_line_over_sizes_splits_fixed_and_per_row_costs() -> None:
    counts = [
        Count("raw aiohttp", 1000, 1000, 50_000_000 + 1000 * 500_000),
        Count("raw aiohttp", 4000, 4000, 50_000_000 + 4000 * 500_000),
        Count("agentbatch.run", 1000, 1000, 700_000_000 + 1000 * 650_000),
        Count("agentbatch.run", 4000, 4000, 700_000_000 + 4000 * 650_000),
    ]
    line = fit([c for c in counts if c.client == "agentbatch.run"])
    assert line.marginal is not None and line.fixed is not None
    assert round(line.marginal) == 650_000 and round(line.fixed) == 700_000_000
    text = report("S6", counts)
    row = next(r for r in text.splitlines() if r.startswith("| agentbatch.run"))
    # Per row at 4,000 rows: 825,000, 1.61x the baseline's 512,500; per added row 1.30x.
    assert "| 825,000 | 1.61x | 650,000 | 1.30x | 700 |" in row


def test_one_size_gives_no_line() -> None:
    line = fit([Count("raw aiohttp", 10, 10, 1_000)])
    assert line.marginal is None and line.per_row == 100
