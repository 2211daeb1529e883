"""A newcomer's project: 50 product reviews in a CSV and one job over them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import agentbatch

JOB = """\
name: reviews
source:
  table: main.shop.reviews
  key: review_id
  columns: [stars]
request: "concat('Sentiment of: ', review_text)"
agent:
  endpoint: apps/review-agent
output:
  table: main.shop.review_sentiment
"""


@dataclass(frozen=True)
class Project:
    root: Path
    job: Path
    reviews: Path


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "reviews.yml"
    job.write_text(JOB)
    reviews = tmp_path / "reviews.csv"
    lines = ["review_id,review_text,stars"]
    lines += [f"{i},review number {i}: works well,{i % 5 + 1}" for i in range(50)]
    reviews.write_text("\n".join(lines) + "\n")
    return Project(tmp_path, job, reviews)


def cli(project: Project, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m agentbatch ARGS` in the project folder, to completion."""
    return agentbatch(project.root, *args, timeout=timeout, COLUMNS="200")


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one stderr line of a failed command (no traceback)."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]
