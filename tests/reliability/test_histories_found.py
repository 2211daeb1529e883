"""Histories found wrong by a user running the same job again and again through the CLI.

The README promises that a merge or append run whose passthrough column (or key) now holds
values the table's column cannot take as they are stops before any call: otherwise the write
fails after the calls are paid, run after run (the answers sit in the checkpoint, never in the
table), or stores another value. The check compared kinds, and missed two cases:

- a CSV column of times (`10:00:00`) is read as TIME, a kind it did not know: a row whose value
  is no time (`n/a`) was paid for, then the write failed (exit 5) on every run; a timestamp
  there was stored as its time of day;
- numbers of the same kind but wider than the column: a Parquet source whose key or column is
  BIGINT since (the table's is INT or TINYINT) with a value past the column's range, a CSV key
  past BIGINT, or decimals with more digits than the table's DECIMAL keeps (4.55 was stored as
  4.6). Values that fit are still written as they are.
"""

from __future__ import annotations

import contextlib
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentbatch.cli.main import main as cli_main
from agentbatch.testing.agent_server import AgentServer

from .history import ENDPOINT, OUTPUT, SOURCE

DEC = pa.decimal128(5, 1)


def run(root: Path, url: str, output: Path, mode: str) -> tuple[int, dict[str, Any]]:
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
        "--endpoint", f"{ENDPOINT}={url}",
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
    assert run(tmp_path, agent.url, out, mode)[0] == 0
    assert pa.types.is_time(table(out).schema.field("at").type)
    before, paid = table(out), agent.stats().requests_total
    # A value that is no time (the column is text now), or a timestamp (the date would be lost).
    for new_row in ("3,fine,n/a\n", "3,fine,2024-05-01 09:15:00\n"):
        source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n" + new_row)
        code, _ = run(tmp_path, agent.url, out, mode)
        assert code == 2, new_row
        assert agent.stats().requests_total == paid, new_row  # nothing paid for it
        assert table(out).equals(before)
    # Times stay times: written as they are.
    source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n3,fine,09:15:00\n")
    code, summary = run(tmp_path, agent.url, out, mode)
    assert (code, summary["sent"]) == (0, 1)
    # The way out: one overwrite run takes the source's types and keeps every answer.
    source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n3,fine,n/a\n")
    code, summary = run(tmp_path, agent.url, out, "overwrite")
    assert (code, summary["sent"], summary["table_rows"]) == (0, 0, 3)
    assert {r["review_id"]: r["at"] for r in table(out).to_pylist()}[3] == "n/a"


# -- numbers that no longer fit the table's column ---------------------------------------------


def parquet_run(root: Path, agent: AgentServer) -> int:
    job = root / "jobs" / "reviews.yml"
    job.parent.mkdir(exist_ok=True)
    job.write_text(
        f"name: reviews\nsource: {{table: {SOURCE}, key: review_id, columns: [n]}}\n"
        "request: \"concat('Review: ', CAST(review_id AS STRING))\"\n"
        f"agent: {{endpoint: {ENDPOINT}, max_retries: 0}}\n"
        f"output: {{table: {OUTPUT}, mode: merge}}\n"
    )
    args = [
        "run", str(job), "--json", "--no-progress", "--show", "0",
        "--table", f"{SOURCE}={root / 'reviews.parquet'}",
        "--table", f"{OUTPUT}={root / 'answers.parquet'}",
        "--endpoint", f"{ENDPOINT}={agent.url}",
        "--state-dir", str(root / "state"), "--project-dir", str(root),
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        return cli_main(args)


@pytest.mark.parametrize(
    ("first", "fitting", "not_fitting"),
    [
        # The key: INT, then BIGINT.
        (
            {"review_id": pa.array([1, 2], pa.int32()), "n": [1, 2]},
            {"review_id": pa.array([1, 2, 3], pa.int64()), "n": [1, 2, 3]},
            {"review_id": pa.array([1, 2, 3, 3_000_000_000], pa.int64()), "n": [1, 2, 3, 4]},
        ),
        # A column: TINYINT, then BIGINT.
        (
            {"review_id": [1, 2], "n": pa.array([1, 2], pa.int8())},
            {"review_id": [1, 2, 3], "n": pa.array([1, 2, 3], pa.int64())},
            {"review_id": [1, 2, 3, 4], "n": pa.array([1, 2, 3, 300], pa.int64())},
        ),
        # A column: DECIMAL(5,1), then DOUBLE (4.55 would be stored as 4.6).
        (
            {"review_id": [1, 2], "n": pa.array([Decimal("1.5"), Decimal("2.5")], DEC)},
            {"review_id": [1, 2, 3], "n": [1.5, 2.5, 4.5]},
            {"review_id": [1, 2, 3, 4], "n": [1.5, 2.5, 4.5, 4.55]},
        ),
    ],
)
def test_a_number_that_does_not_fit_the_tables_column_is_refused_before_any_call(
    tmp_path: Path,
    agent: AgentServer,
    first: dict[str, Any],
    fitting: dict[str, Any],
    not_fitting: dict[str, Any],
) -> None:
    source = tmp_path / "reviews.parquet"
    pq.write_table(pa.table(first), source)
    assert parquet_run(tmp_path, agent) == 0
    pq.write_table(pa.table(fitting), source)
    paid = agent.stats().requests_total
    assert parquet_run(tmp_path, agent) == 0  # values that fit are written as they are
    assert agent.stats().requests_total == paid + 1
    before, paid = table(tmp_path / "answers.parquet"), agent.stats().requests_total
    pq.write_table(pa.table(not_fitting), source)
    assert parquet_run(tmp_path, agent) == 2
    assert agent.stats().requests_total == paid  # nothing paid for a row it cannot write
    assert table(tmp_path / "answers.parquet").equals(before)


def test_a_csv_key_past_bigint_is_refused_before_any_call(
    tmp_path: Path, agent: AgentServer
) -> None:
    source = tmp_path / "reviews.csv"
    out = tmp_path / "answers.parquet"
    source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n")
    assert run(tmp_path, agent.url, out, "merge")[0] == 0
    before, paid = table(out), agent.stats().requests_total
    source.write_text(
        "review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n99999999999999999999,x,09:00:00\n"
    )
    assert run(tmp_path, agent.url, out, "merge")[0] == 2
    assert agent.stats().requests_total == paid
    assert table(out).equals(before)
    # The way out: one overwrite run, which keeps the answers the table holds.
    code, summary = run(tmp_path, agent.url, out, "overwrite")
    assert (code, summary["sent"], summary["table_rows"]) == (0, 1, 3)


# -- the same local agent by another name ------------------------------------------------------
#
# The fingerprint leaves out the port of an agent on this machine (a local agent server started
# again on another port is the same agent), but kept the name the URL gave it: a job run against
# `http://127.0.0.1:8000` (as the agent server prints its URL) and then against
# `http://localhost:8000`, the same server, paid for every row again.


def test_the_local_agent_by_another_name_is_the_same_agent(
    tmp_path: Path, agent: AgentServer
) -> None:
    source = tmp_path / "reviews.csv"
    source.write_text("review_id,text,at\n1,good,10:00:00\n2,bad,11:30:00\n")
    out = tmp_path / "answers.parquet"
    assert agent.url.startswith("http://127.0.0.1:")
    assert run(tmp_path, agent.url, out, "merge")[0] == 0
    paid = agent.stats().requests_total
    by_name = agent.url.replace("127.0.0.1", "localhost")
    code, summary = run(tmp_path, by_name, out, "merge")
    assert (code, summary["skipped"], summary["sent"]) == (0, 2, 0)
    # A new output from the checkpoint: the answers are reused, not paid again.
    code, summary = run(tmp_path, by_name, tmp_path / "again.parquet", "merge")
    assert (code, summary["sent"], summary["reused"]) == (0, 0, 2)
    assert agent.stats().requests_total == paid


def test_a_repeated_key_at_the_source_limit_is_refused_as_without_the_limit(
    tmp_path: Path, agent: AgentServer
) -> None:
    # `source.limit` orders by key and cuts: with the limit between a key's two rows, one of them
    # (either) was answered as the key's, and the repeat went unseen; with the limit past them
    # the same source is refused. One key, one answer: refused either way, before any call.
    source = tmp_path / "reviews.csv"
    source.write_text("review_id,text,at\n1,good,x\n2,bad,x\n3,fine,x\n3,awful,x\n4,ok,x\n")
    job = tmp_path / "jobs" / "limited.yml"
    job.parent.mkdir()
    out = tmp_path / "answers.parquet"
    paid = agent.stats().requests_total
    for limit in (3, 4, 5):
        job.write_text(
            f"name: limited\nsource: {{table: {SOURCE}, key: review_id, limit: {limit}}}\n"
            "request: \"concat('Review: ', text)\"\n"
            f"agent: {{endpoint: {ENDPOINT}}}\noutput: {{table: {OUTPUT}}}\n"
        )
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli_main(
                [
                    "run", str(job), "--no-progress",
                    "--table", f"{SOURCE}={source}", "--table", f"{OUTPUT}={out}",
                    "--endpoint", f"{ENDPOINT}={agent.url}",
                    "--state-dir", str(tmp_path / "state"), "--project-dir", str(tmp_path),
                ]
            )  # fmt: skip
        assert code == 2, (limit, err.getvalue())
        assert "'3' x2" in err.getvalue(), limit
    assert agent.stats().requests_total == paid
    assert not out.exists()
    # Limited before the repeated key, the selection has none: it runs.
    job.write_text(job.read_text().replace("limit: 5", "limit: 2"))
    assert cli_main(
        [
            "run", str(job), "--no-progress", "--show", "0",
            "--table", f"{SOURCE}={source}", "--table", f"{OUTPUT}={out}",
            "--endpoint", f"{ENDPOINT}={agent.url}",
            "--state-dir", str(tmp_path / "state"), "--project-dir", str(tmp_path),
        ]
    ) == 0  # fmt: skip
    assert sorted(table(out).column("review_id").to_pylist()) == [1, 2]
