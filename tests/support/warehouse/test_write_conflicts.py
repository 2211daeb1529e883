"""Delta's write conflicts on the loopback warehouse (commits.py), seen through the connector from
two sessions: a write that read a table another commit changed since it started fails with the
Delta error class and SQLSTATE, and changes nothing; blind appends never conflict."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from databricks.sql.client import Connection
from databricks.sql.exc import ServerOperationError

from .commits import Write, parse_write
from .context import Namespace
from .server import Warehouse

Connect = Callable[..., Connection]

MERGE_A = (
    "MERGE INTO main.default.out AS t USING (SELECT 1 AS id, 'a' AS v) AS s "
    "ON t.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
)
MERGE_B = MERGE_A.replace("1 AS id, 'a'", "2 AS id, 'b'")


def _run_held(
    connect: Connect, warehouse: Warehouse, held: str, meanwhile: str
) -> BaseException | None:
    """Start `held` in one session (it takes its snapshot, then waits), commit `meanwhile` from
    another, then let `held` commit; what `held` raised."""
    gate = warehouse.hold(held)
    outcome: list[BaseException | None] = []
    with connect() as first, first.cursor() as cur:

        def run() -> None:
            try:
                cur.execute(held)
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        worker = threading.Thread(target=run)
        worker.start()
        warehouse.wait_until_running(held)
        with connect() as second, second.cursor() as other:
            other.execute(meanwhile)
        gate.set()
        worker.join(timeout=30)
        assert not worker.is_alive()
    return outcome[0]


def _rows(connect: Connect) -> list[tuple[object, ...]]:
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM main.default.out ORDER BY id")
        return [tuple(row) for row in cur.fetchall()]


@pytest.fixture
def table(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.out (id INT, v STRING)")


def test_a_merge_overtaken_by_another_merge_fails_and_changes_nothing(
    connect: Connect, warehouse: Warehouse, table: None
) -> None:
    error = _run_held(connect, warehouse, MERGE_A, MERGE_B)
    assert isinstance(error, ServerOperationError)
    message = str(error)
    assert message.startswith("[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] Transaction conflict")
    assert "A concurrent MERGE added data to table main.default.out committed at version 1" in (
        message
    )
    assert message.rstrip().endswith("SQLSTATE: 2D521")
    assert _rows(connect) == [(2, "b")]  # the failed MERGE wrote nothing
    # Retried, it starts from the new version and commits.
    with connect() as conn, conn.cursor() as cur:
        cur.execute(MERGE_A)
    assert _rows(connect) == [(1, "a"), (2, "b")]


def test_a_delete_overtaking_a_merge_is_a_concurrent_delete_read(
    connect: Connect, warehouse: Warehouse, table: None
) -> None:
    error = _run_held(connect, warehouse, MERGE_A, "DELETE FROM main.default.out WHERE id = 9")
    assert isinstance(error, ServerOperationError)
    assert str(error).startswith("[DELTA_CONCURRENT_DELETE_READ.WITHOUT_HINT]")


def test_a_replace_reading_its_table_conflicts_one_that_does_not_read_it_does_not(
    connect: Connect, warehouse: Warehouse, table: None
) -> None:
    reading = (
        "CREATE OR REPLACE TABLE main.default.out AS SELECT id + 10 AS id, v FROM main.default.out"
    )
    error = _run_held(connect, warehouse, reading, MERGE_B)
    assert isinstance(error, ServerOperationError)
    assert "[DELTA_CONCURRENT_APPEND" in str(error)
    blind = "CREATE OR REPLACE TABLE main.default.out AS SELECT 5 AS id, 'e' AS v"
    assert _run_held(connect, warehouse, blind, MERGE_A) is None
    assert _rows(connect) == [(5, "e")]


def test_blind_appends_never_conflict(connect: Connect, warehouse: Warehouse, table: None) -> None:
    # Under WriteSerializable a MERGE may commit after a blind append that landed meanwhile, and
    # an append after anything.
    append = "INSERT INTO main.default.out VALUES (3, 'c')"
    assert _run_held(connect, warehouse, MERGE_A, append) is None
    assert (
        _run_held(connect, warehouse, "INSERT INTO main.default.out VALUES (4, 'd')", MERGE_B)
        is None
    )
    assert _rows(connect) == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]


def test_writes_to_other_tables_do_not_conflict(
    connect: Connect, warehouse: Warehouse, table: None
) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.other (id INT, v STRING)")
    other = MERGE_B.replace("main.default.out", "main.default.other")
    assert _run_held(connect, warehouse, MERGE_A, other) is None


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "MERGE INTO out t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            Write("c.d.out", "MERGE", True),
        ),
        ("UPDATE x.out SET v = 1", Write("c.x.out", "UPDATE", True)),
        ("INSERT INTO out SELECT * FROM staged", Write("c.d.out", "WRITE", False)),
        ("INSERT INTO out SELECT * FROM c.d.out", Write("c.d.out", "WRITE", True)),
        (
            "CREATE OR REPLACE TABLE out AS WITH out AS (SELECT 1 AS id) SELECT * FROM out",
            Write("c.d.out", "CREATE OR REPLACE TABLE AS SELECT", False),
        ),
        (
            "CREATE TABLE IF NOT EXISTS out AS SELECT 1 AS id",
            Write("c.d.out", "CREATE TABLE", False, recorded=False),
        ),
        ("SELECT * FROM out", None),
        ("DROP TABLE IF EXISTS out", None),
    ],
)
def test_what_a_statement_writes(sql: str, expected: Write | None) -> None:
    assert parse_write(sql, Namespace(catalog="c", schema="d")) == expected
