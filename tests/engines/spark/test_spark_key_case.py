"""A job whose key is renamed in case only (`id` -> `ID`): one column to Spark (names are
case-insensitive), so the answers either checkpoint holds (the executors' folder, the driver's
ledger) for it are its own. The table is truncated, the source and the job spell the key `ID`, and
the next run writes every row from the checkpoints without a call, into the table whose column is
still `id`, on either side and after the calls moved from one side to the other.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.engines.spark.histories import KEYS, History


def _run(history: History, key: str, place: str) -> dict[str, Any]:
    return history.run("Q", key=key, settings={"rest_fallback_on": place})


@pytest.mark.slow  # three runs
@pytest.mark.parametrize(
    ("first", "then"),
    [("executors", "executors"), ("driver", "executors"), ("executors", "driver")],
)
def test_a_key_renamed_in_case_only_pays_no_answer_again(
    history: History, first: str, then: str
) -> None:
    assert _run(history, "id", first)["calls"] == len(KEYS)
    history.answering("Q")
    answered = history.rows()
    history.truncate()  # the answers are in a checkpoint only
    text = history.source.read_text()
    history.source.write_text(text.replace("id,txt", "ID,txt", 1))
    summary = _run(history, "ID", then)
    assert (summary["rows"], summary["reused"], summary["calls"]) == (len(KEYS),) * 2 + (0,)
    assert history.rows() == answered  # each key once, its own answer (the table keeps `id`)
    summary = _run(history, "ID", then)
    assert (summary["skipped"], summary["calls"]) == (len(KEYS), 0), summary
    assert history.rows() == answered
