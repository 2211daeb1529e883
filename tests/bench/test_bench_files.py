"""S9's parts: sparse padded PNGs of an exact size that the demo agent reads, and one size run
end to end in its own process, every file answered."""

from __future__ import annotations

import os
from pathlib import Path

from agentbatch.testing.images import describe
from bench.files import FilesResult, agent_process, markdown, run_size, write_sparse_folder


def test_sparse_files_are_valid_pngs_of_the_exact_size(tmp_path: Path) -> None:
    write_sparse_folder(tmp_path / "f", 3, 300_000)
    files = sorted((tmp_path / "f").iterdir())
    assert [p.name for p in files] == ["image_00000.png", "image_00001.png", "image_00002.png"]
    for path in files:
        data = path.read_bytes()
        assert len(data) == 300_000
        assert describe(data) == "png 2x2 #1e88e5"
        if hasattr(os.stat_result, "st_blocks"):
            assert path.stat().st_blocks * 512 < 300_000  # a hole, not 300 KB of zeros


def test_one_size_runs_in_its_own_process_and_reports_peak_rss(tmp_path: Path) -> None:
    with agent_process() as url:
        result = run_size(tmp_path, url, 12, 50_000)
    assert (result.files, result.ok, result.errors, result.sent) == (12, 12, 0, 12)
    assert result.peak_rss_mb > 10
    text = markdown([result, FilesResult(24, 50_000, 1.0, result.peak_rss_mb, 24, 0, 24)], "x")
    assert "| 12 | 0.05 |" in text and "1.00x" in text
