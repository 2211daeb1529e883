"""The command line as a user runs it: `python -m agentbatch ARGS` in a project folder, without
the machine's Databricks credentials; and the small project of one job many CLI tests start from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.databricks_env import without_credentials


def agentbatch(
    cwd: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m agentbatch ARGS` in `cwd`, to completion (`env` added to its environment)."""
    return subprocess.run(
        [sys.executable, "-m", "agentbatch", *args],
        cwd=cwd,
        env={**without_credentials(os.environ), "NO_COLOR": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def reviews_project(root: Path, job: str, reviews: str) -> Path:
    """`root` made a project of one job, jobs/reviews.yml (`job`), beside reviews.csv
    (`reviews`); returns `root`."""
    (root / "jobs").mkdir()
    (root / "jobs" / "reviews.yml").write_text(job)
    (root / "reviews.csv").write_text(reviews)
    return root
