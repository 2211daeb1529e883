"""The benchmark runs end to end on tiny sizes. Timings are never asserted: only that every client
ran, answered every row, and that the report says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, tmp_path: Path) -> tuple[str, str]:
    out = tmp_path / "results.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out.read_text(encoding="utf-8"), done.stderr


def _rows_of(markdown: str, section: str) -> list[list[str]]:
    """The table rows (cells) of one `## section`."""
    part = markdown.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in part.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


@pytest.mark.slow
def test_every_client_answers_every_row_on_a_fast_agent(tmp_path: Path) -> None:
    from bench.scenarios import STANDARD_CLIENTS

    markdown, progress = _bench(
        "--only", "S1", "--rows", "40", "--clients", ",".join(STANDARD_CLIENTS), tmp_path=tmp_path
    )
    rows = {cells[0]: cells for cells in _rows_of(markdown, "S1")}
    assert set(rows) == {
        "raw aiohttp",
        "openai loop",
        "openai gather",
        "cookbook processor",
        "agentbatch.run",
        "agentbatch run_bulk",
    }
    for client, cells in rows.items():
        answered, failed = cells[2], cells[9]
        expected = "40" if client != "openai loop" else answered
        assert (answered, failed) == (expected, "0"), (client, cells)
        assert float(cells[3].split()[0].replace(",", "")) > 0, client
    assert "FAILED" not in progress
    assert "| S1: agentbatch.run >= 0.95x raw aiohttp |" in markdown
    assert "Machine: " in markdown and " cores" in markdown


@pytest.mark.slow
def test_rate_limited_agent_and_scale(tmp_path: Path) -> None:
    markdown, _ = _bench(
        "--only",
        "S3,S4",
        "--rows",
        "120",
        "--clients",
        "raw aiohttp,agentbatch.run",
        "--scale-sizes",
        "300,900",
        tmp_path=tmp_path,
    )
    s3 = {cells[0]: cells for cells in _rows_of(markdown, "S3")}
    assert s3["agentbatch.run"][2] == "120" and s3["agentbatch.run"][9] == "0"
    assert s3["raw aiohttp"][1] == "semaphore 32 (told the capacity)"
    assert s3["agentbatch.run"][1] == "defaults (adaptive)"
    scale = _rows_of(markdown, "S4")
    assert [cells[0] for cells in scale] == ["300", "900"]
    assert all(cells[6] == "0" for cells in scale)  # failed
    assert all(int(cells[4]) >= 0 for cells in scale)  # above imports
    assert "| S3: every row answered | 120/120 ok, 0 failed | yes |" in markdown
    assert "| S4: memory above imports at 900 <= 1.5x at 300 |" in markdown


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["--only", "S9"], ["--clients", "curl"], ["--repeat", "0"], ["--rows", "0"]):
        done = subprocess.run(
            [sys.executable, "-m", "bench", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, args
        assert "error:" in done.stderr


@pytest.mark.slow
@pytest.mark.spark
def test_spark_executors_at_an_agents_capacity(tmp_path: Path) -> None:
    markdown, _ = _bench(
        "--only",
        "S7",
        "--rows",
        "80",
        "--clients",
        "raw aiohttp,spark executors x2",
        tmp_path=tmp_path,
    )
    s7 = {cells[0]: cells for cells in _rows_of(markdown, "S7")}
    assert s7["spark executors x2"][2] == "80" and s7["spark executors x2"][9] == "0"
    assert "fallback on the executors, local[2]" in s7["spark executors x2"][1]
    assert float(s7["spark executors x2"][11]) > 0  # its fixed cost, outside the agent's calls
    assert "| S7: spark executors x2 >= 0.8x ideal |" in markdown
    assert "| S7: spark executors x2 429s < 5% of requests |" in markdown
