"""A job whose `rest_fallback_on` changes: the driver's ledger and the executors' checkpoint
folder are read as one store (engines/spark/stores.py).

README ("Paid answers are reused, never lost"): the target table is the truth; a checkpoint may
save calls, never decide what is written, and never writes an answer older than one the job
already received for the same request. Histories of runs through the public API on the spark
target, moving the calls between the driver and the executors while the user drops or truncates
the output table, against the demo agent on 127.0.0.1 that first refuses one row permanently,
then answers it.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentbatch.testing.faults import FaultConfig
from tests.engines.spark.histories import FAILING, KEYS, History

OTHER = {"driver": "executors", "executors": "driver"}


def _answered(history: History, prefix: str) -> dict[int, tuple[Any, ...]]:
    """The table's rows, every key answered `prefix` (the refused one too)."""
    rows = history.rows()
    for key, (response, error, _) in rows.items():
        text = "PERMANENT_ERROR" if key == FAILING else f"t{key}"
        assert (response, error) == (f"answer: {prefix}: {text}", None), (key, response, error)
    return rows


@pytest.mark.slow  # six runs
@pytest.mark.parametrize("clear", ["drop", "truncate"])
@pytest.mark.parametrize("first", ["executors", "driver"])
def test_moving_the_calls_writes_the_newest_answer_and_pays_none_twice(
    history: History, first: str, clear: str
) -> None:
    other = OTHER[first]
    agent = history.agent

    def run(place: str, **options: Any) -> dict[str, Any]:
        return history.run("Q", settings={"rest_fallback_on": place}, **options)

    def cleared() -> None:
        getattr(history, clear)()

    # The agent refuses one row: a permanent error, kept in the first side's store.
    assert run(first)["calls"] == len(KEYS)
    history.answering("Q")

    # The agent answers it now; the calls move. `--retry-errors` sends the refused row, and only
    # it: the other side's answers are reused though this side's store has none of them.
    agent.configure(FaultConfig(permanent={}))
    cleared()
    moved = run(other, retry_errors=True)
    assert (moved["rows"], moved["reused"], moved["calls"]) == (len(KEYS), len(KEYS) - 1, 1)
    answered = _answered(history, "Q")
    # No request was paid twice but the one `--retry-errors` asked to send again.
    by_request = sorted(agent.stats().requests_by_key.values())
    assert by_request == [1] * (len(KEYS) - 1) + [2], by_request

    # Back on the first side: its own store's older answer (the refusal) is not written over
    # the newer one the other side paid for, and nothing is paid.
    cleared()
    back = run(first)
    assert (back["rows"], back["reused"], back["calls"]) == (len(KEYS), len(KEYS), 0)
    assert history.rows() == answered

    # A full refresh on the other side pays every row once; the agent refuses the row again, the
    # newest answer for it is that refusal.
    agent.configure(FaultConfig())
    assert run(other, full_refresh=True)["calls"] == len(KEYS)
    history.answering("Q")
    newest = history.rows()

    # Either side, after the table is cleared, writes the refresh's answers without a call: not
    # the first side's own older answers.
    for place in (first, other):
        cleared()
        again = run(place)
        assert (again["rows"], again["reused"], again["calls"]) == (len(KEYS), len(KEYS), 0)
        assert history.rows() == newest
    assert agent.stats().requests_total == 2 * len(KEYS) + 1


def test_a_ledger_that_cannot_be_read_is_paid_again_on_the_executors(
    history: History, caplog: pytest.LogCaptureFixture
) -> None:
    """The executors read the driver's ledger as a reader: one that is not a SQLite file (it is
    set aside by the next run on the driver) fails no run; its rows are paid again, with a
    warning."""
    assert history.run("Q", settings={"rest_fallback_on": "driver"})["calls"] == len(KEYS)
    (ledger,) = (history.tmp_path / "state").glob("*.ledger.sqlite")
    ledger.write_bytes(b"not a database" * 100)
    history.drop()
    with caplog.at_level("WARNING", logger="agentbatch.engines.spark.stores"):
        again = history.run("Q", settings={"rest_fallback_on": "executors"})
    assert (again["reused"], again["calls"]) == (0, len(KEYS))
    history.answering("Q")
    assert [r for r in caplog.records if str(ledger) in r.getMessage()]
