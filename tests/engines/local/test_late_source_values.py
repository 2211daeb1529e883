"""A source file whose column holds another kind of value after its first 20,480 rows (`n/a`
in a column of star ratings, a key `B-7` after numeric ones). DuckDB guessed a CSV or JSON
file's column types from that many rows, so such a run failed partway with `Conversion Error:
CSV Error on Line: N` (no hint of what to do), after rows were sent, and again on every run.
Types are now guessed from every row, as Spark's CSV `inferSchema` does: the column is text;
in a JSON file it is text too, as Spark's JSON reader infers a column of mixed kinds (DuckDB's
JSON type kept a string's quotes: a key `"B-7"`)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentbatch.cli.main import main

ROWS = 20_480 + 500  # past DuckDB's default sample
JOB = """\
name: late
source: {table: main.s.src, key: id, columns: [stars]}
request: "concat('Rate: ', text, ' ', stars)"
agent: {endpoint: "builtin:instant"}
output: {table: main.s.out}
"""


def write_source(path: Path, late_key: object, late_stars: object) -> None:
    rows = [{"id": i, "text": f"t{i}", "stars": i % 5} for i in range(ROWS)]
    rows.append({"id": late_key, "text": "late", "stars": late_stars})
    if path.suffix == ".csv":
        lines = ["id,text,stars", *(f"{r['id']},{r['text']},{r['stars']}" for r in rows)]
    else:
        lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize(("late_key", "late_stars"), [(ROWS, "n/a"), ("B-7", 3)])
def test_a_late_value_of_another_kind_is_read_not_a_failure(
    tmp_path: Path, suffix: str, late_key: object, late_stars: object
) -> None:
    (tmp_path / "job.yml").write_text(JOB)
    source, output = tmp_path / f"src{suffix}", tmp_path / "out.parquet"
    write_source(source, late_key, late_stars)
    args = [
        "run", str(tmp_path / "job.yml"), "--no-progress", "--show", "0", "--json",
        "--table", f"main.s.src={source}", "--table", f"main.s.out={output}",
        "--state-dir", str(tmp_path / "state"), "--project-dir", str(tmp_path),
    ]  # fmt: skip
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(args)
    assert code == 0, err.getvalue()[-2000:]
    table = pq.read_table(output).to_pylist()
    assert len(table) == ROWS + 1
    assert all(row["error"] is None for row in table)
    late = [row for row in table if row["response"].startswith("echo: Rate: late")]
    # Written as the file holds them: a string without JSON quotes, numbers as their digits.
    assert len(late) == 1 and str(late[0]["id"]) == str(late_key)
    assert str(late[0]["stars"]) == str(late_stars)
    seventh = [row for row in table if str(row["id"]) == "7"]
    assert len(seventh) == 1 and str(seventh[0]["stars"]) == "2"
