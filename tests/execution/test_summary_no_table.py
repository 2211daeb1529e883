"""The summary of a run that left no output table says so. A local run over a CSV with its header
only keeps no table (tests/engines/local/test_header_only_source.py), yet its summary said
`table_rows: 0, table_ok: 0, table_errors: 0`, as of an empty table: a scheduled job reading the
JSON could not tell "no table yet" from "an empty table"."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agentbatch
from agentbatch.cli.main import main
from agentbatch.testing.agent_server import AgentServer, serve_agent

SOURCE, OUTPUT = "main.shop.reviews", "main.shop.review_summaries"
JOB = f"""\
name: reviews
source: {{table: {SOURCE}, key: review_id, columns: [review_text], where: "review_text <> 'great'"}}
request: "concat('Summarise: ', review_text)"
agent: {{endpoint: apps/review-agent}}
output: {{table: {OUTPUT}}}
"""
NO_TABLE = {"table_rows": None, "table_ok": None, "table_errors": None, "no_table": True}


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


def run_cli(root: Path, agent: AgentServer, output: str, *flags: str) -> tuple[int, str]:
    mapped = [] if output == "warehouse" else ["--table", f"{OUTPUT}={root / 'out' / output}"]
    args = [
        "run", str(root / "jobs" / "reviews.yml"), "--no-progress", "--show", "0",
        "--table", f"{SOURCE}={root / 'reviews.csv'}", *mapped,
        "--endpoint", f"apps/review-agent={agent.url}",
        "--state-dir", str(root / "state"), "--project-dir", str(root), *flags,
    ]  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


def project(root: Path, csv: str) -> Path:
    (root / "jobs").mkdir()
    (root / "jobs" / "reviews.yml").write_text(JOB)
    (root / "reviews.csv").write_text(csv)
    return root


def table_figures(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary.get(k) for k in NO_TABLE}


@pytest.mark.parametrize("output", ["warehouse", "summaries.parquet"])
def test_a_run_that_kept_no_table_says_so(tmp_path: Path, agent: AgentServer, output: str) -> None:
    root = project(tmp_path, "review_id,review_text\n")
    code, text = run_cli(root, agent, output, "--json")
    payload = json.loads(text)
    assert code == 0 and "outputs" not in payload
    assert table_figures(payload["summary"]) == NO_TABLE
    assert payload["summary"]["output_table"] == OUTPUT  # the table the job writes, once it can
    # The printed summary says the same: the three figures blank, no_table shown.
    code, text = run_cli(root, agent, output)
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in text.splitlines()
             if line.count("│") == 3}  # fmt: skip
    assert code == 0
    assert (lines["no_table"], lines["table_rows"], lines["table_errors"]) == ("True", "", "")
    # Once rows arrive, the table exists and the summary counts it.
    (root / "reviews.csv").write_text("review_id,review_text\n1,great\n2,broken\n3,fine\n")
    code, text = run_cli(root, agent, output, "--json")
    summary = json.loads(text)["summary"]
    assert code == 0 and "no_table" not in summary
    assert table_figures(summary) == {
        **dict.fromkeys(NO_TABLE, 2),
        "table_errors": 0,
        "no_table": None,
    }


def test_an_empty_table_that_exists_is_counted_as_empty(tmp_path: Path, agent: AgentServer) -> None:
    """Rows that `where` leaves none of (their types known): the run keeps its empty table."""
    root = project(tmp_path, "review_id,review_text\n1,great\n")
    code, text = run_cli(root, agent, "warehouse", "--json")
    payload = json.loads(text)
    assert code == 0 and payload["summary"]["selected"] == 0 and payload["outputs"]
    assert table_figures(payload["summary"]) == {
        "table_rows": 0, "table_ok": 0, "table_errors": 0, "no_table": None,
    }  # fmt: skip


def test_the_python_result_says_so_too(tmp_path: Path, agent: AgentServer) -> None:
    root = project(tmp_path, "review_id,review_text\n")
    with agentbatch.run(
        root / "jobs" / "reviews.yml",
        tables={SOURCE: str(root / "reviews.csv")},
        endpoints={"apps/review-agent": agent.url},
        state_dir=str(root / "state"),
        project_dir=str(root),
        progress=False,
    ) as result:
        assert table_figures(result.summary) == NO_TABLE
        assert result.to_pandas().empty
