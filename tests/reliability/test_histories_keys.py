"""Keys of another type than the target's, after runs that left the target EMPTY.

A target keyed by numbers refuses a source keyed by text before any call ('01' = 1 in SQL: two
source keys would be one, or a row would match another key's answer). The check read the key's
type from the target's first row, so a target without rows passed it: one a run created for an
empty selection (a `where` matching nothing yet), or one the user truncated. Then a merge wrote
'01' and '1' as the key 1 twice, and a key such as 'a1' failed the write after every call was
paid, run after run; an overwrite failed the same way instead of replacing the table.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentbatch.cli.main import main as cli_main
from agentbatch.testing.agent_server import AgentServer

from .history import ENDPOINT, OUTPUT, SOURCE


class Project:
    def __init__(self, root: Path, agent: AgentServer, output: str) -> None:
        self.root = root
        self.agent = agent
        self.output = root / ("answers.parquet" if output == "parquet" else "answers")
        self.mode = "merge"
        self.where: str | None = None

    def source(self, text: str) -> None:
        (self.root / "reviews.csv").write_text("review_id,text\n" + text)

    def run(self, *extra: str) -> tuple[int, dict[str, Any]]:
        job = self.root / "jobs" / "reviews.yml"
        job.parent.mkdir(exist_ok=True)
        where = f', where: "{self.where}"' if self.where else ""
        job.write_text(
            f"name: reviews\nsource: {{table: {SOURCE}, key: review_id, columns: [text]{where}}}\n"
            "request: \"concat('Review: ', text)\"\n"
            f"agent: {{endpoint: {ENDPOINT}, max_retries: 0}}\n"
            f"output: {{table: {OUTPUT}, mode: {self.mode}}}\n"
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            args = [
                "run", str(job), "--json", "--no-progress", "--show", "0",
                "--table", f"{SOURCE}={self.root / 'reviews.csv'}",
                "--table", f"{OUTPUT}={self.output}",
                "--endpoint", f"{ENDPOINT}={self.agent.url}",
                "--state-dir", str(self.root / "state"), "--project-dir", str(self.root),
            ]  # fmt: skip
            code = cli_main([*args, *extra])
        text = out.getvalue()
        return code, (json.loads(text)["summary"] if text.strip() else {})

    def table(self) -> pa.Table:
        if self.output.is_dir():
            from deltalake import DeltaTable

            return DeltaTable(str(self.output)).to_pyarrow_table()
        return pq.read_table(self.output)

    def truncate(self) -> None:
        empty = self.table().slice(0, 0)
        if self.output.is_dir():
            from deltalake import write_deltalake

            write_deltalake(str(self.output), empty, mode="overwrite")
        else:
            pq.write_table(empty, self.output)

    def keys(self) -> Counter[Any]:
        return Counter(self.table().column("review_id").to_pylist())


def empty_target(p: Project, how: str) -> None:
    """A target keyed by numbers, holding no row."""
    p.source("1,one\n2,two\n")
    if how == "empty selection":
        p.where = "text = 'three'"  # nothing matches yet
        assert p.run()[0] == 0
        p.where = None
    else:
        assert p.run()[0] == 0
        p.truncate()
    assert p.table().num_rows == 0
    assert pa.types.is_integer(p.table().schema.field("review_id").type)


HOW = ["empty selection", "truncated"]


@pytest.mark.parametrize("output", ["parquet", "delta"])
@pytest.mark.parametrize("mode", ["merge", "append"])
@pytest.mark.parametrize("how", HOW)
def test_text_keys_into_an_empty_target_keyed_by_numbers_are_refused_before_any_call(
    tmp_path: Path, agent: AgentServer, output: str, mode: str, how: str
) -> None:
    p = Project(tmp_path, agent, output)
    p.mode = mode
    empty_target(p, how)
    before = p.table()
    paid = agent.stats().requests_total
    # '01' and '1' are two keys as text, one key as numbers; 'a1' is no number at all.
    for text in ("01,zero-one\n1,one\n", "a1,ay-one\n2,two\n"):
        p.source(text)
        for flags in ((), ("--full-refresh",), ("--dry-run",)):
            code, _ = p.run(*flags)
            assert code == 2, (text, flags)
    assert agent.stats().requests_total == paid  # nothing paid for a table it cannot write
    assert p.table().equals(before)  # nothing changed
    # The way out the message names: mode overwrite replaces the table.
    p.source("01,zero-one\n1,one\n")
    p.mode = "overwrite"
    code, summary = p.run()
    assert code == 0 and summary["sent"] == 2
    assert p.keys() == Counter({"01": 1, "1": 1})
    p.mode = mode
    code, summary = p.run()
    assert (code, summary["sent"], summary["skipped"]) == (0, 0, 2)
    assert p.keys() == Counter({"01": 1, "1": 1})


@pytest.mark.parametrize("output", ["parquet", "delta"])
@pytest.mark.parametrize("how", HOW)
def test_an_overwrite_replaces_an_empty_target_keyed_by_another_type(
    tmp_path: Path, agent: AgentServer, output: str, how: str
) -> None:
    p = Project(tmp_path, agent, output)
    p.mode = "overwrite"
    empty_target(p, how)
    p.source("a1,ay-one\n01,zero-one\n1,one\n")
    paid = agent.stats().requests_total
    code, summary = p.run()
    assert code == 0, summary
    assert agent.stats().requests_total == paid + 3
    assert p.keys() == Counter({"a1": 1, "01": 1, "1": 1})
    assert sorted(p.table().column("response").to_pylist()) == [
        "answer: Review: ay-one",
        "answer: Review: one",
        "answer: Review: zero-one",
    ]
    # Run again: the table is keyed by text now, every row is done.
    code, summary = p.run()
    assert (code, summary["sent"], summary["skipped"]) == (0, 0, 3)


@pytest.mark.parametrize("mode", ["merge", "append"])
def test_an_empty_target_keyed_by_dates_takes_the_same_dates(
    tmp_path: Path, agent: AgentServer, mode: str
) -> None:
    """Keys of a type that is neither a number nor text, into an empty target keyed alike: the
    run goes on (the check must not refuse a type it only names differently)."""
    p = Project(tmp_path, agent, "parquet")
    p.mode = mode
    p.source("2024-01-01,one\n2024-01-02,two\n")
    p.where = "text = 'three'"
    assert p.run()[0] == 0
    assert pa.types.is_date(p.table().schema.field("review_id").type)
    p.where = None
    code, summary = p.run()
    assert (code, summary["sent"]) == (0, 2)
    assert len(p.keys()) == 2
