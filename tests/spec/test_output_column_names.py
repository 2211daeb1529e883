"""`source.key` and `source.columns` become the output table's columns, and a Delta table (without
column mapping) refuses a column name with any of ` ,;{}()\\n\\t=` (DELTA_INVALID_CHARACTERS_IN_
COLUMN_NAMES). Such a job is refused when loaded, on every target, naming file, line and key and
the fix: other names (a where clause, a request reading a source column) may hold a space."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import agentbatch
from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job
from agentbatch.spec.models import output_column_problem
from agentbatch.sql import quoting

# delta-io/delta SchemaUtils.checkFieldNames: ".*[ ,;{}()\n\t=].*"
DELTA_REFUSED = " ,;{}()\n\t="

SPACED = """\
name: reviews
source:
  table: main.shop.reviews
  key: review_id
  columns:
    - stars
    - review text
request: "concat('Classify: ', `review text`)"
agent:
  endpoint: "builtin:instant"
output:
  table: main.shop.out
"""

RENAMED = """\
name: reviews
source:
  query: "SELECT review_id, stars, `review text` AS review_text FROM main.shop.reviews"
  key: review_id
  columns: [stars, review_text]
request: "concat('Classify: ', review_text)"
agent:
  endpoint: "builtin:instant"
output:
  table: main.shop.out
"""


def write(tmp_path: Path, text: str, name: str = "reviews.yml") -> Path:
    path = tmp_path / "jobs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_job(path)
    return str(caught.value)


def test_a_passthrough_column_with_a_space_is_refused_at_its_line_with_the_fix(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, SPACED)
    assert error_of(path) == (
        f"{path}:7: source.columns[1]: 'review text' has a space, which Delta output tables "
        "refuse in column names (DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES); select it under "
        "another name with source.query, e.g. SELECT ..., `review text` AS review_text "
        "FROM main.shop.reviews, and name review_text here"
    )


def test_a_key_with_a_space_is_refused(tmp_path: Path) -> None:
    text = RENAMED.replace("key: review_id", "key: review id").replace(
        "SELECT review_id,", "SELECT `review id`,"
    )
    message = error_of(write(tmp_path, text))
    assert message.endswith(
        "reviews.yml:4: source.key: 'review id' has a space, which Delta output tables refuse in "
        "column names (DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES); select it under another name "
        "with source.query, e.g. SELECT ..., `review id` AS review_id FROM ..., "
        "and name review_id here"
    ), message


def test_every_spaced_output_column_is_reported(tmp_path: Path) -> None:
    text = SPACED.replace("key: review_id", "key: review id").replace(
        "    - stars", "    - star count"
    )
    lines = error_of(write(tmp_path, text)).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "source.key",
        "source.columns[0]",
        "source.columns[1]",
    ]


def test_a_request_or_where_reading_a_spaced_source_column_is_allowed(tmp_path: Path) -> None:
    """Only the output's names are Delta's business: the spaced column is read, never written."""
    text = SPACED.replace("    - review text\n", "").replace(
        "  columns:", '  where: "`review text` IS NOT NULL"\n  columns:'
    )
    job = load_job(write(tmp_path, text))
    assert job.source.columns == ("stars",)
    mapping = text.replace(
        "request: \"concat('Classify: ', `review text`)\"",
        'request: {"review text": "`review text`"}',
    ).replace('"builtin:instant"', "my-model")
    assert load_job(write(tmp_path, mapping)).request == {"review text": "`review text`"}


def test_hyphens_and_other_letters_are_still_allowed(tmp_path: Path) -> None:
    text = SPACED.replace("    - review text", "    - review-text\n    - größe")
    assert load_job(write(tmp_path, text)).source.columns == ("stars", "review-text", "größe")


@pytest.mark.parametrize("character", list(DELTA_REFUSED), ids=repr)
def test_no_character_delta_refuses_gets_through(tmp_path: Path, character: str) -> None:
    """The name pattern refuses all but the space; the output-column check refuses the space."""
    name = f"a{character}b"
    assert output_column_problem(name) is not None
    try:
        quoting.identifier(name)
    except quoting.SqlValueError:
        assert character != " "
    else:
        assert character == " "
    text = SPACED.replace("    - review text", f"    - {json.dumps(name)}")  # YAML takes JSON
    assert "reviews.yml:7: source.columns[1]: " in error_of(write(tmp_path, text))


def test_the_job_is_refused_on_the_local_target_too_and_the_fix_runs(tmp_path: Path) -> None:
    """DuckDB would take the spaced column: the job is refused before anything runs anyway."""
    csv = tmp_path / "reviews.csv"
    csv.write_text("review_id,stars,review text\n1,5,great\n2,1,broke\n")
    tables = {"main.shop.reviews": csv}
    with pytest.raises(SpecError, match=r"source\.columns\[1\]: 'review text' has a space"):
        agentbatch.run(write(tmp_path, SPACED), tables=tables, progress=False)
    assert not (tmp_path / ".agentbatch").exists()
    with agentbatch.run(write(tmp_path, RENAMED), tables=tables, progress=False) as result:
        assert result.summary["sent"] == 2
        assert "review_text" in result.to_arrow().column_names


def test_cli_validate_reports_it_like_other_spec_errors(tmp_path: Path) -> None:
    path = write(tmp_path, SPACED)
    done = subprocess.run(
        [sys.executable, "-m", "agentbatch", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith(
        f"{path}:7: source.columns[1]: 'review text' has a space, which Delta output tables"
    )
    assert "Traceback" not in done.stderr
