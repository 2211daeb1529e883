"""`raise_error` and `assert_true` on the loopback warehouse, as Databricks runs them: the statement
fails with the message, error class USER_RAISED_EXCEPTION and SQLSTATE P0001
(docs.databricks.com sql/language-manual/functions/raise_error, .../assert_true); a CASE branch
not taken raises nothing, and a failed statement changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from databricks.sql.client import Connection
from databricks.sql.exc import ServerOperationError

Connect = Callable[..., Connection]


def test_raise_error_fails_the_statement_with_its_message(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        with pytest.raises(ServerOperationError) as failed:
            cur.execute("SELECT raise_error(concat('custom ', 'error message: it\\'s main'))")
        # The user's words as given: not the executor's catalog names (`uc_main`).
        assert str(failed.value) == (
            "[USER_RAISED_EXCEPTION] custom error message: it's main SQLSTATE: P0001"
        )


def test_a_case_branch_not_taken_raises_nothing(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT CASE WHEN (SELECT count(*) FROM range(3)) > 5 "
            "THEN raise_error('too many') ELSE 'ok' END AS checked"
        )
        assert [tuple(r) for r in cur.fetchall()] == [("ok",)]
        with pytest.raises(ServerOperationError, match=r"^\[USER_RAISED_EXCEPTION\] 3 rows "):
            cur.execute(
                "SELECT CASE WHEN (SELECT count(*) FROM range(3)) > 2 "
                "THEN raise_error(concat(CAST((SELECT count(*) FROM range(3)) AS STRING), "
                "' rows')) ELSE 'ok' END AS checked"
            )


def test_assert_true_fails_unless_the_condition_is_true(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT assert_true(0 < 1) AS checked")
        assert [tuple(r) for r in cur.fetchall()] == [(None,)]
        with pytest.raises(ServerOperationError) as default:
            cur.execute("SELECT assert_true(0 > 1)")
        assert str(default.value) == "[USER_RAISED_EXCEPTION] '0 > 1' is not true! SQLSTATE: P0001"
        with pytest.raises(ServerOperationError) as given:
            cur.execute("SELECT assert_true(1 = 2, 'One is not two!')")
        assert str(given.value) == "[USER_RAISED_EXCEPTION] One is not two! SQLSTATE: P0001"
        with pytest.raises(ServerOperationError, match="is not true"):
            cur.execute("SELECT assert_true(CAST(NULL AS BOOLEAN))")


def test_a_statement_that_raises_writes_nothing(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.t (id BIGINT)")
        cur.execute("INSERT INTO main.default.t VALUES (1)")
        with pytest.raises(ServerOperationError, match="USER_RAISED_EXCEPTION"):
            cur.execute(
                "INSERT INTO main.default.t SELECT CASE WHEN id > 0 THEN raise_error('no') "
                "END FROM main.default.t"
            )
        cur.execute("SELECT id FROM main.default.t")
        assert [tuple(r) for r in cur.fetchall()] == [(1,)]
