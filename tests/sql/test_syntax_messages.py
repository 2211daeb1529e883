"""A job's SQL with a syntax slip (`stars >`, an unclosed quote) is named in the author's terms:
the operator left without its operand and the column in the value as written, never sqlglot's
class names or the `SELECT ` the check wraps an expression in."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job

JOB = """\
name: reviews
source:
  table: main.shop.reviews
  key: review_id
  where: "stars > 3"
request: "concat('Summarise: ', review_text)"
agent:
  endpoint: "builtin:instant"
output:
  table: main.shop.review_summaries
"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'where: "stars > 3"',
            'where: "stars >"',
            ":5: source.where: the where clause is not valid Databricks SQL: "
            "`>` has no right-hand side (line 1, column 7)",
        ),
        (
            'where: "stars > 3"',
            'where: "stars > 3 AND"',
            ":5: source.where: the where clause is not valid Databricks SQL: "
            "`AND` has no right-hand side (line 1, column 13)",
        ),
        (
            "request: \"concat('Summarise: ', review_text)\"",
            'request: "concat(\'Summarise: , review_text)"',
            ":6: request: the request is not valid Databricks SQL: "
            "a quoted string or name is not closed",
        ),
        (
            'where: "stars > 3"',
            'where: "stars BETWEEN 1"',
            ":5: source.where: the where clause is not valid Databricks SQL: "
            "BETWEEN has no bounds: `x BETWEEN low AND high` (line 1, column 15)",
        ),
    ],
)
def test_a_syntax_slip_is_named_in_the_authors_terms(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = tmp_path / "reviews.yml"
    path.write_text(JOB.replace(old, new))
    with pytest.raises(SpecError) as caught:
        load_job(path)
    assert str(caught.value) == f"{path}{expected}"
    assert "sqlglot" not in str(caught.value) and "SELECT" not in str(caught.value)
