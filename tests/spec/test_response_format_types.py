"""A misspelt type in a `response_format` STRUCT (`n: INTEGR`) is refused at its line. sqlglot's
type reader stops at it and returns the fields before it, so the job ran with `STRUCT<label:
STRING>`: the field, and every field after it, silently left out of every answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job

JOB = """\
name: triage
source:
  table: main.support.tickets
  key: ticket_id
request: "concat('Classify: ', subject)"
agent:
  endpoint: apps/triage-agent
  response_format: "{fmt}"
output:
  table: main.support.triage
"""


def load(tmp_path: Path, fmt: str) -> object:
    path = tmp_path / "job.yml"
    path.write_text(JOB.format(fmt=fmt))
    return load_job(path)


@pytest.mark.parametrize(
    ("fmt", "unread"),
    [
        ("STRUCT<label: STRING, n: INTEGR, urgency: INT>", "n: INTEGR, urgency: INT>"),
        ("STRUCT<label: STRNG>", "label: STRNG>"),
        ("STRUCT<a: STRUCT<x: INT, y: FOO>>", "y: FOO>>"),
    ],
)
def test_a_misspelt_type_is_refused_at_its_line(tmp_path: Path, fmt: str, unread: str) -> None:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, fmt)
    assert str(caught.value) == (
        f"{tmp_path / 'job.yml'}:8: agent.response_format: {fmt!r} is not a Databricks SQL "
        f"type from `{unread}` on (a misspelt type name?)"
    )


def test_a_struct_without_its_closing_bracket_says_so(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="'STRUCT<label: STRING' is not closed: a `>` is missing"):
        load(tmp_path, "STRUCT<label: STRING")


@pytest.mark.parametrize(
    "fmt",
    [
        "STRUCT<label: STRING, urgency: INT>",
        "STRUCT<label STRING, n INTEGER, at TIMESTAMP_NTZ>",
        "STRUCT<a: DECIMAL(10, 2), b: ARRAY<STRING>, c: MAP<STRING, BIGINT>, d: LONG>",
        "STRUCT<a: INT NOT NULL COMMENT 'the count'>",
    ],
)
def test_every_field_of_a_valid_struct_is_kept(tmp_path: Path, fmt: str) -> None:
    job = load(tmp_path, fmt)
    assert job.agent.response_format == fmt  # type: ignore[attr-defined]
