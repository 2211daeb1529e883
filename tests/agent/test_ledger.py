"""The SQLite ledger: skip what is answered, latest answer wins, hand unwritten rows to the sink,
survive damage."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from agentbatch.agent.ledger import (
    Ledger,
    canonical_keys,
    refresh_began,
    refresh_reached,
    stored_answers,
)

from .conftest import output_rows


def inputs(keys: list[object], fingerprint: str = "fp") -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "id": pa.array(keys),
            "_request": pa.array([f"q{k}" for k in keys]),
            "request_fingerprint": pa.array([fingerprint] * len(keys)),
        }
    )


def all_unwritten(ledger: Ledger, max_rows: int = 50_000) -> pa.Table:
    batches = list(ledger.rows_of_run(max_rows))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def test_unanswered_skips_answered_keys_with_the_same_fingerprint(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
        assert ledger.reuse(inputs([1, 2, 3]), None, retry_errors=False)[1].num_rows == 3
        ledger.append(output_rows([1, 2], errors=[None, "HTTP 400: bad"]))
        todo = ledger.reuse(inputs([1, 2, 3]), None, retry_errors=False)[1]
        assert todo.column("id").to_pylist() == [3]
        # retry_errors: the failed row is sent again, the answered one is not.
        todo = ledger.reuse(inputs([1, 2, 3]), None, retry_errors=True)[1]
        assert todo.column("id").to_pylist() == [2, 3]
        # A changed request (new fingerprint) is sent again.
        todo = ledger.reuse(inputs([1, 2, 3], fingerprint="other"), None, retry_errors=False)[1]
        assert todo.column("id").to_pylist() == [1, 2, 3]


def test_latest_answer_per_key_wins_and_a_run_yields_each_key_once(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
        ledger.append(output_rows([1, 2, 3], errors=[None, "boom", None]))
        ledger.append(output_rows([2], errors=[None]))
        table = all_unwritten(ledger)
        assert sorted(table.column("id").to_pylist()) == [1, 2, 3]
        row2 = next(r for r in table.to_pylist() if r["id"] == 2)
        assert row2["error"] is None and row2["response"] == "answer 2"
        assert ledger.stats() == {
            "answers": 3,
            "ok": 3,
            "errors": 0,
            "transient": 0,
            "this_run": 3,
            "batches": 2,
        }


def test_a_run_writes_its_own_rows_and_reuses_earlier_answers(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key="id", run_id="first") as ledger:
        ledger.append(
            output_rows([1, 2, 3], errors=[None, "[transient] HTTP 503", "[permanent] no"])
        )
    with Ledger(path, key="id", run_id="second") as ledger:
        # Nothing of the first run is this run's to write, whatever the first run did.
        assert all_unwritten(ledger).num_rows == 0
        reused, todo = ledger.reuse(inputs([1, 2, 3, 4]), None, retry_errors=False)
        # The answer and the permanent error are reused; the transient error is sent again.
        assert reused is not None
        assert sorted(reused.column("id").to_pylist()) == [1, 3]
        assert todo.column("id").to_pylist() == [2, 4]
        # Reused rows are this run's rows now, with the source's current columns.
        assert sorted(all_unwritten(ledger).column("id").to_pylist()) == [1, 3]
        ledger.compact()
        # The first run's blob still holds row 2's (transient) answer: kept until superseded.
        assert ledger.stats()["batches"] == 2
    with Ledger(path, key="id", run_id="third") as ledger:
        reused, todo = ledger.reuse(inputs([1, 2, 3]), None, retry_errors=True)
        assert reused is not None and reused.column("id").to_pylist() == [1]
        assert todo.column("id").to_pylist() == [2, 3]


def test_unwritten_chunks_and_keeps_types(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
        for start in range(0, 1000, 100):
            ledger.append(output_rows(list(range(start, start + 100))))
        batches = list(ledger.rows_of_run(max_rows=300))
        assert [b.num_rows for b in batches] == [300, 300, 300, 100]
        assert batches[0].schema.field("answered_at").type == pa.timestamp("us", tz="UTC")
        assert sorted(pa.Table.from_batches(batches).column("id").to_pylist()) == list(range(1000))


def test_lookups_are_chunked_for_large_batches(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
        ledger.append(output_rows(list(range(0, 5000, 2))))
        todo = ledger.reuse(inputs(list(range(5000))), None, retry_errors=False)[1]
        assert todo.column("id").to_pylist() == list(range(1, 5000, 2))


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key="id") as ledger:
        ledger.append(output_rows([1, 2]))
    with Ledger(path, key="id") as ledger:
        assert ledger.reuse(inputs([1, 2, 3]), None, retry_errors=False)[1].num_rows == 1
        assert all_unwritten(ledger).num_rows == 2


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pa.array([1, None, -5]), ["1", "null", "-5"]),
        (pa.array(["a", 'q"uote', "é"]), ['"a"', '"q\\"uote"', '"é"']),
        (pa.array([{"a": 1, "b": "x"}]), ['{"a":1,"b":"x"}']),
    ],
)
def test_canonical_keys(values: pa.Array, expected: list[str]) -> None:
    assert canonical_keys(values) == expected


def test_string_and_struct_keys_work(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
        ledger.append(output_rows(["a", "b"]))
        assert ledger.reuse(inputs(["a", "c"]), None, retry_errors=False)[1].column(
            "id"
        ).to_pylist() == ["c"]


def test_a_garbage_file_is_moved_aside_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING), Ledger(path, key="id") as ledger:
        assert ledger.reuse(inputs([1]), None, retry_errors=False)[1].num_rows == 1
        ledger.append(output_rows([1]))
    assert "damaged" in caplog.text
    assert list(tmp_path.glob("l.sqlite.corrupt-*"))


def test_a_torn_file_is_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key="id") as ledger:
        for start in range(0, 3000, 500):
            ledger.append(output_rows(list(range(start, start + 500))))
    # Checkpoint the WAL into the main file, then cut the file in half.
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING), Ledger(path, key="id") as ledger:
        # Whatever survived is usable; the run goes on.
        ledger.append(output_rows([10_000]))
        assert ledger.reuse(inputs([10_000]), None, retry_errors=False)[1].num_rows == 0
    assert "damaged" in caplog.text


def test_an_unreadable_blob_sends_its_rows_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key="id") as ledger:
        ledger.append(output_rows([1, 2]))
        ledger.append(output_rows([3]))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE batches SET ipc = x'00010203' WHERE id = 1")
    with caplog.at_level(logging.WARNING), Ledger(path, key="id") as ledger:
        assert all_unwritten(ledger).column("id").to_pylist() == [3]
        assert "unreadable" in caplog.text
        assert ledger.reuse(inputs([1, 2, 3]), None, retry_errors=False)[1].column(
            "id"
        ).to_pylist() == [1, 2]


def test_a_batch_of_this_run_damaged_before_the_write_is_checked_in_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A batch this ledger appended is read without comparing row by row only while it is
    # whole; damaged (or an answer moved) it gets the full check, as any other.
    path = tmp_path / "l.sqlite"
    with Ledger(path, key="id") as ledger:
        ledger.append(output_rows([1, 2]))
        ledger.append(output_rows([3, 4]))
        ledger.append(output_rows([5]))
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE batches SET ipc = x'00010203' WHERE id = 1")
            conn.execute("UPDATE answers SET row = 0 WHERE batch_id = 2 AND row = 1")
        with caplog.at_level(logging.WARNING):
            assert all_unwritten(ledger).column("id").to_pylist() == [3, 5]
        assert "unreadable" in caplog.text
        assert "do not match" in caplog.text


def test_a_different_key_discards_the_old_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, key="id") as ledger:
        ledger.append(output_rows([1]))
    with caplog.at_level(logging.WARNING), Ledger(path, key="ticket_id") as ledger:
        assert ledger.stats()["answers"] == 0
    assert "keyed by 'id'" in caplog.text


def test_a_key_renamed_in_case_only_keeps_the_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Engines resolve column names case-insensitively: `ID` is the column `id` was.
    path = tmp_path / "l.sqlite"
    with Ledger(path, key="id", run_id="first") as ledger:
        ledger.append(output_rows([1, 2]))
    # pyarrow 14 (the floor) has no RecordBatch.rename_columns.
    renamed = pa.RecordBatch.from_arrays(
        inputs([1, 2, 3]).columns, names=["ID", "_request", "request_fingerprint"]
    )
    with caplog.at_level(logging.WARNING), Ledger(path, key="ID", run_id="second") as ledger:
        assert ledger.stats()["answers"] == 2
        reused, todo = ledger.reuse(renamed, None, retry_errors=False)
        assert reused is not None and reused.column("ID").to_pylist() == [1, 2]
        assert todo.column("ID").to_pylist() == [3]
        assert all_unwritten(ledger).column("ID").to_pylist() == [1, 2]
    assert "discarding" not in caplog.text
    # Read as the executors read it: the stored rows under the job's spelling of the key.
    [found] = stored_answers(path, "Id", [pa.array([1, 2])])
    assert found.column("Id").to_pylist() == [1, 2]


def test_schema_changes_between_runs_are_conformed(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite", key="id") as ledger:
        first = output_rows([1])  # pyarrow 14 (the floor) has no RecordBatch.append_column
        old = pa.RecordBatch.from_arrays(
            [*first.columns, pa.array(["a"])], names=[*first.schema.names, "team"]
        )
        ledger.append(old)
        ledger.append(output_rows([2]))  # the job dropped the `team` passthrough column
        table = all_unwritten(ledger)
        assert "team" not in table.column_names
        assert sorted(table.column("id").to_pylist()) == [1, 2]


def test_one_run_at_a_time(tmp_path: Path) -> None:
    """Refused as a second run writing one output is (exit 5), naming the run that holds it."""
    import os

    from agentbatch.errors import EngineError, exit_code_for

    path = tmp_path / "l.sqlite"
    first = Ledger(path, key="id")
    with pytest.raises(
        EngineError, match=rf"in use by another run.*\(pid {os.getpid()}, since "
    ) as refused:
        Ledger(path, key="id")
    assert exit_code_for(refused.value) == 5
    first.close()
    Ledger(path, key="id").close()  # free again once closed


def test_a_ledger_of_the_first_release_is_upgraded_and_reused(tmp_path: Path) -> None:
    """A file written before runs and error kinds existed: its answers are still reusable."""
    path = tmp_path / "old.sqlite"
    with Ledger(path, key="id") as ledger:
        ledger.append(output_rows([1, 2]))
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE answers_old(
            key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, ok INTEGER NOT NULL,
            batch_id INTEGER NOT NULL, row INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO answers_old SELECT key, fingerprint, ok, batch_id, row FROM answers;
        DROP TABLE answers;
        ALTER TABLE answers_old RENAME TO answers;
        CREATE INDEX answers_by_batch ON answers(batch_id);
        DROP INDEX batches_by_run;
        ALTER TABLE batches DROP COLUMN run;
        """
    )
    conn.close()
    with Ledger(path, key="id", run_id="new") as ledger:
        reused, todo = ledger.reuse(inputs([1, 2, 3]), None, retry_errors=False)
        assert reused is not None and sorted(reused["id"].to_pylist()) == [1, 2]
        assert todo["id"].to_pylist() == [3]


def test_a_refresh_is_read_without_opening_the_ledger(tmp_path: Path) -> None:
    """`refresh_began` reads what `pending_refresh` reads, as a reader: while a run holds the
    ledger, with nothing created where there is none, and None for a file that is no ledger."""
    path = tmp_path / "l.sqlite"
    assert refresh_began(path) is None and not path.exists()
    with Ledger(path, key="id") as ledger:
        assert refresh_began(path) is None
        ledger.begin_refresh(1_700_000_000_123_456)
        assert refresh_began(path) == 1_700_000_000_123_456 == ledger.pending_refresh()
        ledger.end_refresh()
        assert refresh_began(path) is None
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database" * 100)
    assert refresh_began(garbage) is None
    assert garbage.read_bytes() == b"not a database" * 100


def test_a_refresh_that_asked_every_row_is_marked_until_it_ends(tmp_path: Path) -> None:
    """`keep_refresh(reached=True)` marks the refresh under way as having asked every row (any
    run continues it: `refresh_reached`); the mark is of that refresh only, and goes with it."""
    path = tmp_path / "l.sqlite"
    assert not refresh_reached(path)
    with Ledger(path, key="id", run_id="r1") as ledger:
        ledger.keep_refresh(reached=True)  # no refresh: nothing to mark
        assert not ledger.refresh_reached()
        ledger.begin_refresh(1_000)
        ledger.keep_refresh(reached=False)
        assert not refresh_reached(path)
        ledger.keep_refresh(reached=True)
        assert refresh_reached(path) and ledger.refresh_reached()
        ledger.end_refresh()
        assert not refresh_reached(path) and refresh_began(path) is None
        ledger.begin_refresh(2_000)  # another refresh: not marked
        assert not refresh_reached(path)


def test_a_runs_transient_failures_are_read_from_the_index(tmp_path: Path) -> None:
    """`transient_of_run`: (canonical key, fingerprint) of this run's latest answers that are
    transient failures, not a permanent one, not another run's."""
    path = tmp_path / "l.sqlite"
    with Ledger(path, key="id", run_id="r1") as ledger:
        ledger.append(output_rows([1], errors=["[transient] HTTP 503"]))
    with Ledger(path, key="id", run_id="r2") as ledger:
        rows = output_rows(
            [2, 3, 4],
            errors=["[transient] HTTP 429", "[permanent] HTTP 400", None],
            fingerprint="f2",
        )
        ledger.append(rows)
        assert ledger.transient_of_run() == {("2", "f2")}
