"""Histories found wrong by a user running the same job again and again through the CLI.

A CSV column of times (`10:00:00`) is read as TIME. The check that refuses, before any call, a
passthrough column whose values are now of another kind than the table's did not know the kind
TIME: a row whose value is no time (`n/a`) was paid for, then the write failed (exit 5), run
after run, the answer sitting in the checkpoint; a value that is a timestamp now was stored
as its time of day (the date lost). Such a run is now refused before any call, as the README
says of a column read as numbers one day and with an `n/a` the next.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentbatch.cli.main import main as cli_main
from agentbatch.testing.agent_server import AgentServer

from .history import ENDPOINT, OUTPUT, SOURCE


def run(root: Path, agent: AgentServer, output: Path, mode: str) -> tuple[int, dict[str, Any]]:
    job = root / "jobs" / "reviews.yml"
    job.parent.mkdir(exist_ok=True)
    job.write_text(
        f"name: reviews\nsource: {{table: {SOURCE}, key: review_id, columns: [text, at]}}\n"
        "request: \"concat('Review: ', text)\"\n"
        f"agent: {{endpoint: {ENDPOINT}, max_retries: 0}}\n"
        f"output: {{table: {OUTPUT}, mode: {mode}}}\n"
    )
    args = [
        "run", str(job), "--json", "--no-progress", "--show", "0",
        "--table", f"{SOURCE}={root / 'reviews.csv'}", "--table", f"{OUTPUT}={output}",
        "--endpoint", f"{ENDPOINT}={agent.url}",
        "--state-dir", str(root / "state"), "--project-dir", str(root),
    ]  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(args)
    text = out.getvalue()
    return code, (json.loads(text) if text.strip() else {}).get("summary", {})


def table(output: Path) -> pa.Table:
    return pq.read_table(output)


@pytest.mark.parametrize("mode", ["merge", "append"])
def test_a_time_column_read_as_another_type_is_refused_before_any_call(
    tmp_path: Path, agent: AgentServer, mode: str
) -> None:
    # (A Parquet output: Delta has no TIME type.)
    out = tmp_path / "answers.parquet"
    source = tmp_path / "reviews.csv"
    source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n")
    assert run(tmp_path, agent, out, mode)[0] == 0
    assert pa.types.is_time(table(out).schema.field("at").type)
    before, paid = table(out), agent.stats().requests_total
    # A value that is no time (the column is text now), or a timestamp (the date would be lost).
    for new_row in ("3,fine,n/a\n", "3,fine,2024-05-01 09:15:00\n"):
        source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n" + new_row)
        code, _ = run(tmp_path, agent, out, mode)
        assert code == 2, new_row
        assert agent.stats().requests_total == paid, new_row  # nothing paid for it
        assert table(out).equals(before)
    # Times stay times: written as they are.
    source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n3,fine,09:15:00\n")
    code, summary = run(tmp_path, agent, out, mode)
    assert (code, summary["sent"]) == (0, 1)
    # The way out: one overwrite run takes the source's types and keeps every answer.
    source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n3,fine,n/a\n")
    code, summary = run(tmp_path, agent, out, "overwrite")
    assert (code, summary["sent"], summary["table_rows"]) == (0, 0, 3)
    assert {r["review_id"]: r["at"] for r in table(out).to_pylist()}[3] == "n/a"
