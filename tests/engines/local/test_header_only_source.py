"""A scheduled job whose source CSV has its header only at first: DuckDB reads every column of a
file without rows as text, so the first run created the output keyed by text, and every run once
rows arrived (keys read as numbers) was refused before any call, exit 2, run after run. The empty
output is not kept; the first run with rows creates it with their types."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agentbatch
from agentbatch.cli.main import main
from agentbatch.testing.agent_server import AgentServer, serve_agent

SOURCE, OUTPUT = "main.shop.reviews", "main.shop.review_summaries"
JOB = f"""\
name: reviews
source: {{table: {SOURCE}, key: review_id, columns: [review_text]}}
request: "concat('Summarise: ', review_text)"
agent: {{endpoint: apps/review-agent}}
output: {{table: {OUTPUT}}}
"""


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    with serve_agent() as server:
        yield server


class Project:
    def __init__(self, root: Path, agent: AgentServer, output: str) -> None:
        self.root, self.agent, self.kind = root, agent, output
        self.csv = root / "reviews.csv"
        self.output = {
            "warehouse": None,
            "parquet": root / "out" / "summaries.parquet",
            "delta": root / "out" / "summaries",
        }[output]
        (root / "jobs").mkdir()
        (root / "jobs" / "reviews.yml").write_text(JOB)

    def run(self) -> tuple[int, dict[str, Any]]:
        mapped = [] if self.output is None else ["--table", f"{OUTPUT}={self.output}"]
        args = [
            "run", str(self.root / "jobs" / "reviews.yml"), "--json", "--no-progress",
            "--show", "0", "--table", f"{SOURCE}={self.csv}", *mapped,
            "--endpoint", f"apps/review-agent={self.agent.url}",
            "--state-dir", str(self.root / "state"), "--project-dir", str(self.root),
        ]  # fmt: skip
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(args)
        text = out.getvalue()
        return code, (json.loads(text)["summary"] if text.strip() else {})

    def table(self) -> pa.Table | None:
        """The output as stored, or None when there is none."""
        if self.output is None:
            path = self.root / ".agentbatch" / "warehouse" / "main.duckdb"
            if not path.exists():
                return None
            con = duckdb.connect(str(path), read_only=True)
            try:
                found = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'review_summaries'"
                ).fetchall()
                if not found[0][0]:
                    return None
                return con.sql("SELECT * FROM shop.review_summaries").to_arrow_table()
            finally:
                con.close()
        if self.output.is_dir():
            from deltalake import DeltaTable

            return DeltaTable(str(self.output)).to_pyarrow_table()
        return pq.read_table(self.output) if self.output.exists() else None


@pytest.mark.parametrize("output", ["warehouse", "parquet", "delta"])
def test_rows_arriving_in_a_csv_that_had_its_header_only(
    tmp_path: Path, agent: AgentServer, output: str
) -> None:
    p = Project(tmp_path, agent, output)
    p.csv.write_text("review_id,review_text\n")
    code, summary = p.run()
    assert (code, summary["selected"], summary["sent"]) == (0, 0, 0)
    first = p.table()
    p.csv.write_text("review_id,review_text\n1,great\n2,broken\n3,fine\n")
    code, summary = p.run()
    assert (code, summary.get("sent"), summary.get("table_rows")) == (0, 3, 3)
    assert first is None  # no table was kept whose key type was a guess
    table = p.table()
    assert table is not None and pa.types.is_integer(table.schema.field("review_id").type)
    code, summary = p.run()
    assert (code, summary["sent"], summary["skipped"]) == (0, 0, 3)
    with p.csv.open("a") as handle:
        handle.write("4,late\n")
    code, summary = p.run()
    assert (code, summary["sent"], summary["skipped"], summary["table_rows"]) == (0, 1, 3, 4)
    table = p.table()
    assert table is not None
    assert sorted(table.column("review_id").to_pylist()) == [1, 2, 3, 4]
    assert agent.stats().requests_total == 4  # each review paid once


def test_an_empty_output_file_given_stays_a_file_to_be_written(
    tmp_path: Path, agent: AgentServer
) -> None:
    p = Project(tmp_path, agent, "parquet")
    assert p.output is not None
    p.output.parent.mkdir()
    p.output.touch()
    p.csv.write_text("review_id,review_text\n")
    assert p.run()[0] == 0
    assert p.output.exists() and p.output.stat().st_size == 0
    p.csv.write_text("review_id,review_text\n1,great\n")
    code, summary = p.run()
    assert (code, summary["sent"]) == (0, 1)
    assert pq.read_table(p.output).schema.field("review_id").type == pa.int64()


def test_an_output_with_rows_is_kept_when_the_csv_is_emptied(
    tmp_path: Path, agent: AgentServer
) -> None:
    """Only a table the run created is not kept: one holding answers stays as it is."""
    p = Project(tmp_path, agent, "warehouse")
    p.csv.write_text("review_id,review_text\n1,great\n")
    assert p.run()[0] == 0
    p.csv.write_text("review_id,review_text\n")
    code, summary = p.run()
    assert (code, summary["table_rows"]) == (0, 1)
    table = p.table()
    assert table is not None and table.column("review_id").to_pylist() == [1]


@pytest.mark.parametrize("output", ["warehouse", "parquet"])
def test_the_summary_points_at_no_table_it_did_not_keep(
    tmp_path: Path, agent: AgentServer, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's last line told the user to read a table dropped a moment later."""
    p = Project(tmp_path, agent, output)
    p.csv.write_text("review_id,review_text\n")
    mapped = [] if p.output is None else ["--table", f"{OUTPUT}={p.output}"]
    args = [
        "run", str(tmp_path / "jobs" / "reviews.yml"), "--no-progress",
        "--table", f"{SOURCE}={p.csv}", *mapped,
        "--endpoint", f"apps/review-agent={agent.url}",
        "--state-dir", str(tmp_path / "state"), "--project-dir", str(tmp_path),
    ]  # fmt: skip
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0 and p.table() is None
    assert f"{OUTPUT} was not kept" in err
    assert f"output {OUTPUT}" not in out and "agentbatch show" not in out
    assert main([*args, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["selected"] == 0 and "outputs" not in payload


def test_the_python_result_of_a_run_that_kept_no_table(tmp_path: Path, agent: AgentServer) -> None:
    p = Project(tmp_path, agent, "warehouse")
    p.csv.write_text("review_id,review_text\n")
    with agentbatch.run(
        tmp_path / "jobs" / "reviews.yml",
        tables={SOURCE: str(p.csv)},
        endpoints={"apps/review-agent": agent.url},
        state_dir=str(tmp_path / "state"),
        project_dir=str(tmp_path),
        progress=False,
    ) as result:
        assert result.summary["selected"] == 0
        assert result.to_pandas().empty
    assert p.table() is None
