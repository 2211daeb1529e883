"""`make demo` runs `python -m agentbatch.demo`: the main job end to end, every row accounted for."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_and_a_second_run_sends_nothing(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    first = subprocess.run(
        [sys.executable, "-m", "agentbatch.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert first.returncode == 0, first.stderr
    assert "237 rows in the output; 237 answered" in first.stdout
    assert "agent served 237 request(s)" in first.stderr
    assert (tmp_path / ".agentbatch" / "out" / "ticket_triage.parquet").exists()
    second = subprocess.run(
        [sys.executable, "-m", "agentbatch.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert second.returncode == 0, second.stderr
    assert "agent served 0 request(s)" in second.stderr
    assert "237 rows in the output; 237 answered" in second.stdout
