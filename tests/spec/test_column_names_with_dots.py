"""A source column whose name has a dot or a backtick (`a.b`, common in exported CSVs) cannot be
`source.key` or one of `source.columns` as it is: the job names it with letters, digits, _ and -.
The error names file, line and key and the way round it, which then runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job
from tests.support.cli import agentbatch

JOB = """\
name: odd
source:
  table: main.shop.odd
  key: id
  columns: [stars]
request: "concat('Say: ', `review.text`)"
agent:
  endpoint: "builtin:instant"
output:
  table: main.shop.odd_out
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs" / "odd.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_job(path)
    return str(caught.value)


def test_a_passthrough_column_with_a_dot_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, JOB.replace("columns: [stars]", "columns: [review.text]"))
    assert error_of(path) == (
        f"{path}:5: source.columns[0]: 'review.text' cannot be named here: a key or passthrough "
        "column is named with letters, digits, _ and - after a first letter, digit or _ (a dot "
        "would be read as a path, a backtick as a quote); select it under another name with "
        "source.query, e.g. SELECT ..., `review.text` AS review_text FROM main.shop.odd, and "
        "name review_text here"
    )


def test_a_key_with_a_backtick_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, JOB.replace("key: id", 'key: "o`id"'))
    error = error_of(path)
    assert error.startswith(f"{path}:4: source.key: 'o`id' cannot be named here:")
    assert "SELECT ..., `o``id` AS o_id FROM main.shop.odd, and name o_id here" in error


def test_a_blank_key_keeps_the_plain_message(tmp_path: Path) -> None:
    path = write(tmp_path, JOB.replace("key: id", 'key: " "'))
    assert error_of(path) == f"{path}:4: source.key: ' ' is not a valid identifier"


def test_the_fix_the_error_gives_runs(tmp_path: Path) -> None:
    (tmp_path / "odd.csv").write_text("o`id,review.text,stars\n1,fine,5\n2,broken,1\n")
    fixed = """\
name: odd
source:
  query: "SELECT `o``id` AS o_id, `review.text` AS review_text, stars FROM main.shop.odd"
  key: o_id
  columns: [review_text, stars]
request: "concat('Say: ', review_text)"
agent:
  endpoint: "builtin:instant"
output:
  table: main.shop.odd_out
"""
    path = write(tmp_path, fixed)
    done = agentbatch(
        tmp_path,
        *("run", str(path), "--json"),
        *("--table", f"main.shop.odd={tmp_path / 'odd.csv'}"),
        *("--table", f"main.shop.odd_out={tmp_path / 'out.parquet'}"),
    )
    assert done.returncode == 0, done.stderr
    assert '"ok": 2' in done.stdout
