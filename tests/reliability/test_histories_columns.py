"""A passthrough column that changes type between runs (a CSV column read as numbers one day, as
text or with decimals the next), under modes merge and append.

The write casts each value to the type the target's column has. Before the fix, a value that
does not cast ('n/a' into a BIGINT column) failed the write after every call was paid, and every
later run failed the same way (the answers sat in the checkpoint, never in the table); a value
that casts with a loss (4.5 into a BIGINT column) was stored as another value. Now such a run is
refused before any call, changes nothing, and names the way out: one run with mode overwrite,
which keeps every answer the table holds.
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


class Project:
    def __init__(self, root: Path, agent: AgentServer, output: str, mode: str) -> None:
        self.root = root
        self.agent = agent
        self.output = root / ("answers.parquet" if output == "parquet" else "answers")
        self.mode = mode

    def source(self, rows: str) -> None:
        (self.root / "reviews.csv").write_text("review_id,text,stars\n" + rows)

    def cli(self, command: str, *extra: str) -> tuple[int, dict[str, Any]]:
        job = self.root / "jobs" / "reviews.yml"
        job.parent.mkdir(exist_ok=True)
        job.write_text(
            f"name: reviews\nsource: {{table: {SOURCE}, key: review_id, columns: [text, stars]}}\n"
            "request: \"concat('Review: ', text)\"\n"
            f"agent: {{endpoint: {ENDPOINT}, max_retries: 0}}\n"
            f"output: {{table: {OUTPUT}, mode: {self.mode}}}\n"
        )
        args = [
            command, str(job), "--json",
            "--table", f"{SOURCE}={self.root / 'reviews.csv'}",
            "--table", f"{OUTPUT}={self.output}",
            "--endpoint", f"{ENDPOINT}={self.agent.url}",
            "--state-dir", str(self.root / "state"), "--project-dir", str(self.root),
        ]  # fmt: skip
        if command == "run":
            args += ["--no-progress", "--show", "0"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main([*args, *extra])
        text = out.getvalue()
        printed = json.loads(text) if text.strip() else {}
        return code, printed.get("summary", printed)

    def table(self) -> pa.Table:
        if self.output.is_dir():
            from deltalake import DeltaTable

            return DeltaTable(str(self.output)).to_pyarrow_table()
        return pq.read_table(self.output)

    def rows(self) -> dict[Any, tuple[Any, str | None]]:
        return {r["review_id"]: (r["stars"], r["response"]) for r in self.table().to_pylist()}


@pytest.mark.parametrize("output", ["parquet", "delta"])
@pytest.mark.parametrize("mode", ["merge", "append"])
def test_a_column_read_as_another_type_is_refused_before_any_call(
    tmp_path: Path, agent: AgentServer, output: str, mode: str
) -> None:
    p = Project(tmp_path, agent, output, mode)
    p.source("1,good,4\n2,bad,1\n")
    assert p.cli("run")[0] == 0
    assert pa.types.is_integer(p.table().schema.field("stars").type)
    before, paid = p.table(), agent.stats().requests_total
    # A new row whose value is no number, or a number with decimals: the column changes type.
    for new_row in ("3,fine,n/a\n", "3,fine,4.5\n"):
        p.source("1,good,4\n2,bad,1\n" + new_row)
        for command, flags in (("run", ()), ("run", ("--dry-run",)), ("estimate", ())):
            code, _ = p.cli(command, *flags)
            assert code == 2, (new_row, command, flags)
        assert agent.stats().requests_total == paid  # nothing paid for rows it cannot write
        assert p.table().equals(before)
    # Values that keep their type are written as they are; a column without a value this run
    # (read as text, every value NULL) writes NULLs.
    p.source("1,good,4\n2,bad,1\n3,fine,5\n4,meh,\n")
    code, summary = p.cli("run")
    assert (code, summary["sent"]) == (0, 2)
    assert p.rows()[3] == (5, "answer: Review: fine")
    assert p.rows()[4] == (None, "answer: Review: meh")
    # The way out: one overwrite run takes the source's types and keeps every answer.
    p.source("1,good,4\n2,bad,1\n3,fine,4.5\n4,meh,n/a\n")
    p.mode = "overwrite"
    code, summary = p.cli("run")
    assert (code, summary["sent"], summary["table_rows"]) == (0, 0, 4)
    assert p.rows()[3] == ("4.5", "answer: Review: fine")
    assert p.rows()[4] == ("n/a", "answer: Review: meh")
    # From then on the job's own mode writes text into the text column, numbers too.
    p.mode = mode
    p.source("1,good,4\n2,bad,1\n3,fine,4.5\n4,meh,n/a\n5,new,3\n")
    code, summary = p.cli("run")
    assert (code, summary["sent"]) == (0, 1)
    assert p.rows()[5] == ("3", "answer: Review: new")
    assert agent.stats().requests_total == paid + 3


@pytest.mark.parametrize("mode", ["merge", "append"])
def test_widening_a_column_is_written_as_it_is(
    tmp_path: Path, agent: AgentServer, mode: str
) -> None:
    """Whole numbers into a column of decimals, anything into a text column: nothing changes
    value, so nothing is refused."""
    p = Project(tmp_path, agent, "parquet", mode)
    p.source("1,good,4.5\n2,bad,x\n")  # stars: text
    assert p.cli("run")[0] == 0
    p.source("1,good,4.5\n2,bad,x\n3,fine,4\n")
    code, summary = p.cli("run")
    assert (code, summary["sent"]) == (0, 1)
    assert p.rows()[3] == ("4", "answer: Review: fine")
    p.output.unlink()
    p.source("1,good,4.5\n2,bad,1.5\n")  # stars: decimals
    assert p.cli("run")[0] == 0
    p.source("3,great,4\n4,meh,5\n")  # read as whole numbers now
    code, summary = p.cli("run")
    assert (code, summary["sent"]) == (0, 2)
    assert p.rows()[3] == (4.0, "answer: Review: great")
