"""The unmodified connector runs Databricks SQL against the loopback warehouse on DuckDB."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable

import pyarrow as pa
import pytest
from databricks.sql.client import Connection
from databricks.sql.exc import ServerOperationError

from .server import Warehouse

Connect = Callable[..., Connection]


def test_create_insert_select_merge(connect: Connect, warehouse: Warehouse) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS main.jobs")
        cur.execute(
            "CREATE TABLE main.jobs.answers (id BIGINT, prompt STRING, response STRING) USING DELTA"
        )
        cur.execute("INSERT INTO main.jobs.answers VALUES (1, 'a', 'old'), (3, 'c', 'old')")
        assert cur.rowcount == 2
        cur.execute(
            "CREATE OR REPLACE TABLE main.jobs.staged AS "
            "SELECT * FROM VALUES (1, 'a', 'new'), (2, 'b', 'new') AS v(id, prompt, response)"
        )
        cur.execute(
            "MERGE INTO main.jobs.answers AS t USING main.jobs.staged AS s ON t.id = s.id "
            "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        assert cur.rowcount == 2
        cur.execute("SELECT id, response FROM main.jobs.answers ORDER BY id")
        assert [tuple(r) for r in cur.fetchall()] == [(1, "new"), (2, "new"), (3, "old")]
        assert [d[:2] for d in cur.description or ()] == [("id", "bigint"), ("response", "string")]
    assert warehouse.statements[0] == "CREATE SCHEMA IF NOT EXISTS main.jobs"


def test_unqualified_names_use_the_session_namespace(connect: Connect) -> None:
    with connect(catalog="main", schema="default") as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (x INT)")
        cur.execute("INSERT INTO t VALUES (7)")
        cur.execute("SELECT x FROM main.default.t")
        assert cur.fetchall()[0][0] == 7
        cur.execute("CREATE SCHEMA other")
        cur.execute("USE SCHEMA other")
        cur.execute("CREATE TABLE t (y STRING)")
        cur.execute("SELECT count(*) FROM main.other.t")
        assert cur.fetchall()[0][0] == 0


def test_large_result_arrives_in_several_fetches(connect: Connect, warehouse: Warehouse) -> None:
    fetches: list[int] = []
    sql = "SELECT id, concat('row ', id) AS label FROM range(100000) AS r(id) ORDER BY id"
    with connect() as conn, conn.cursor(arraysize=7_000) as cur:
        cur.execute(sql)
        total = 0
        while True:
            part = cur.fetchmany_arrow(25_000)
            if part.num_rows == 0:
                break
            fetches.append(part.num_rows)
            assert part.column("id")[0].as_py() == total
            total += part.num_rows
        assert total == 100_000
    assert fetches == [25_000, 25_000, 25_000, 25_000]
    # direct results, then FetchResults calls of at most `arraysize` rows each
    sent = warehouse.fetches_of(sql)
    assert sum(sent) == 100_000 and len(sent) == 15 and max(sent) == 7_000


def test_fetchall_arrow_round_trips_types(connect: Connect) -> None:
    with connect() as conn, conn.cursor(arraysize=1000) as cur:
        cur.execute(
            "SELECT CAST(1 AS INT) AS i, CAST(2 AS BIGINT) AS b, CAST(1.5 AS DOUBLE) AS d, "
            "CAST('12.34' AS DECIMAL(10,2)) AS dec, true AS flag, DATE'2024-01-02' AS day, "
            "TIMESTAMP'2024-01-02 03:04:05' AS ts, named_struct('a', 1, 'b', 'x') AS st, "
            "array(1, 2) AS arr, map('k', 'v') AS m, CAST(NULL AS STRING) AS nothing"
        )
        table = cur.fetchall_arrow()
    row = table.to_pylist()[0]
    assert row["i"] == 1 and row["b"] == 2 and row["d"] == 1.5
    assert row["dec"] == decimal.Decimal("12.34")
    assert row["flag"] is True and row["day"] == dt.date(2024, 1, 2)
    assert row["ts"].replace(tzinfo=None) == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert row["st"] == {"a": 1, "b": "x"} and row["arr"] == [1, 2]
    assert dict(row["m"]) == {"k": "v"} and row["nothing"] is None
    assert table.schema.field("dec").type == pa.decimal128(10, 2)


def test_from_json_with_a_ddl_schema(connect: Connect) -> None:
    rows = '[{"id": 1, "r": {"label": "bug", "urgency": 2}}, {"id": 2, "extra": true}]'
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT e.id, e.r, from_json('not json', 'STRUCT<a: INT>') AS bad FROM ("
            "SELECT explode(from_json(:rows, 'ARRAY<STRUCT<id: INT, r: STRUCT<label: STRING, "
            "urgency: INT>>>')) AS e) ORDER BY e.id",
            {"rows": rows},
        )
        got = cur.fetchall_arrow().to_pylist()
    assert got == [
        {"id": 1, "r": {"label": "bug", "urgency": 2}, "bad": None},
        {"id": 2, "r": None, "bad": None},
    ]


def test_named_parameters(connect: Connect, warehouse: Warehouse) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT :n + 1 AS n, :s AS s, :d AS d, :day AS w, :flag AS f, :nothing AS z",
            {
                "n": 41,
                "s": "it's",
                "d": decimal.Decimal("1.25"),
                "day": dt.date(2024, 5, 6),
                "flag": False,
                "nothing": None,
            },
        )
        assert tuple(cur.fetchall()[0]) == (
            42,
            "it's",
            decimal.Decimal("1.25"),
            dt.date(2024, 5, 6),
            False,
            None,
        )
    assert warehouse.executions[-1].params["s"] == "it's"


def test_server_error_is_raised_with_its_message(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        with pytest.raises(ServerOperationError, match="does_not_exist"):
            cur.execute("SELECT * FROM main.default.does_not_exist")
        # the session stays usable
        cur.execute("SELECT 1")
        assert cur.fetchall()[0][0] == 1


def test_async_execution_polls_until_finished(connect: Connect) -> None:
    with connect() as conn, conn.cursor() as cur:
        cur.execute_async("SELECT sum(id) AS s FROM range(1000) AS r(id)")
        cur.get_async_execution_result()  # type: ignore[no-untyped-call]
        assert cur.fetchall()[0][0] == 499500


def test_a_merge_matching_one_target_row_twice_fails_as_in_delta(connect: Connect) -> None:
    """Delta: DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE (DuckDB would pick one)."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS main.jobs")
        cur.execute("CREATE TABLE main.jobs.t AS SELECT * FROM VALUES (1, 'old') AS v(id, v)")
        merge = (
            "MERGE INTO main.jobs.t AS t USING (SELECT * FROM VALUES {rows} AS s(id, v)) AS s "
            "ON t.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        with pytest.raises(
            ServerOperationError,
            match=r"\[DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE\]",
        ):
            cur.execute(merge.format(rows="(1, 'a'), (1, 'b'), (2, 'c')"))
        cur.execute("SELECT id, v FROM main.jobs.t ORDER BY id")
        assert [tuple(r) for r in cur.fetchall()] == [(1, "old")]
        # Source rows matching no target row are inserted, duplicates included, as Delta does.
        cur.execute(merge.format(rows="(1, 'a'), (2, 'b'), (2, 'c')"))
        cur.execute("SELECT id, v FROM main.jobs.t ORDER BY id, v")
        assert [tuple(r) for r in cur.fetchall()] == [(1, "a"), (2, "b"), (2, "c")]


@pytest.mark.parametrize("style", ["named", "positional"])
def test_a_parameterized_merge_matching_one_target_row_twice_fails_too(
    connect: Connect, style: str
) -> None:
    """The duplicate-match check also runs when the MERGE has bound parameters (in its source,
    its ON condition and a WHEN clause), each step of it binding the ones it uses."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS main.jobs")
        cur.execute("CREATE TABLE main.jobs.t AS SELECT * FROM VALUES (1, 'old') AS v(id, v)")
        merge = (
            "MERGE INTO main.jobs.t AS t USING (SELECT * FROM VALUES (1, {a}), (1, 'b'), "
            "(2, 'c') AS s(id, v)) AS s ON t.id = s.id AND t.v <> {b} "
            "WHEN MATCHED AND s.v <> {c} THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        values = ["a", "x", "z"]
        params: dict[str, str] | list[str]
        if style == "named":
            sql, params = (
                merge.format(a=":a", b=":b", c=":c"),
                dict(zip("abc", values, strict=True)),
            )
        else:
            sql, params = merge.format(a="?", b="?", c="?"), values
        with pytest.raises(
            ServerOperationError,
            match=r"\[DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE\]",
        ):
            cur.execute(sql, params)
        cur.execute("SELECT id, v FROM main.jobs.t ORDER BY id")
        assert [tuple(r) for r in cur.fetchall()] == [(1, "old")]
        # With one match per target row it runs, its parameters bound in every step.
        one = sql.replace("(1, 'b'), ", "")
        cur.execute(one, params)
        cur.execute("SELECT id, v FROM main.jobs.t ORDER BY id")
        assert [tuple(r) for r in cur.fetchall()] == [(1, "a"), (2, "c")]


@pytest.mark.parametrize(
    "schema",
    [
        "ARRAY<STRUCT<id: INT, m: MAP<INT, STRING>>>",
        "ARRAY<STRUCT<id: INT, m: ARRAY<MAP<BIGINT, STRING>>>>",
        "ARRAY<STRUCT<id: INT, m: MAP<STRING, STRUCT<x: MAP<DATE, INT>>>>>",
    ],
)
def test_from_json_refuses_a_map_key_other_than_string(connect: Connect, schema: str) -> None:
    """Databricks (Spark's ExprUtils.checkJsonSchema) refuses, at analysis, a from_json schema
    with a MAP keyed by anything but STRING, however deep; DuckDB would cast the keys."""
    refused = pytest.raises(
        ServerOperationError, match=r"\[DATATYPE_MISMATCH\.INVALID_JSON_MAP_KEY_TYPE\]"
    )
    with connect() as conn, conn.cursor() as cur, refused:
        cur.execute(f"SELECT explode(from_json(:rows, '{schema}'))", {"rows": "[]"})


def test_from_json_with_string_keys_then_a_cast_gives_other_keys(connect: Connect) -> None:
    rows = (
        '[{"id": 1, "m": {"1": "a", "20": "b"}, "n": [{"3": 1.5}]}, {"id": 2}, {"id": 3, "m": {}}]'
    )
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT e.id, CAST(e.m AS MAP<INT, STRING>) AS m, "
            "CAST(e.n AS ARRAY<MAP<BIGINT, DOUBLE>>) AS n FROM (SELECT explode(from_json(:rows, "
            "'ARRAY<STRUCT<id: INT, m: MAP<STRING, STRING>, n: ARRAY<MAP<STRING, DOUBLE>>>>')) "
            "AS e) ORDER BY e.id",
            {"rows": rows},
        )
        table = cur.fetchall_arrow()
    assert table.schema.field("m").type == pa.map_(pa.int32(), pa.string())
    got = [(r["id"], r["m"], r["n"]) for r in table.to_pylist()]
    assert got == [(1, [(1, "a"), (20, "b")], [[(3, 1.5)]]), (2, None, None), (3, [], None)]


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("x" * 256, r"too long\. Maximum length is 255 characters"),
        ("a b", r"\[INVALID_SCHEMA_OR_RELATION_NAME\]"),
        ("a/b", r"\[INVALID_SCHEMA_OR_RELATION_NAME\]"),
        ("a.b", r"\[INVALID_SCHEMA_OR_RELATION_NAME\]"),
        ("a\tb", r"\[INVALID_SCHEMA_OR_RELATION_NAME\]"),
    ],
    ids=["256 characters", "space", "slash", "period", "tab"],
)
def test_names_unity_catalog_refuses_are_refused(connect: Connect, name: str, refusal: str) -> None:
    """A Unity Catalog object name has at most 255 characters and no period, space, `/` or control
    character, backticks or not (docs: sql-ref-names); DuckDB takes them all."""
    quoted = "`" + name + "`"
    with connect() as conn, conn.cursor() as cur:
        for statement in (
            f"CREATE TABLE main.default.{quoted} (x INT)",
            f"CREATE OR REPLACE TABLE main.default.{quoted} AS SELECT 1 AS x",
            f"CREATE TABLE IF NOT EXISTS main.default.{quoted} AS SELECT 1 AS x",
            f"CREATE SCHEMA main.{quoted}",
            f"CREATE VIEW main.default.{quoted} AS SELECT 1 AS x",
        ):
            with pytest.raises(ServerOperationError, match=refusal):
                cur.execute(statement)
        cur.execute("CREATE TABLE main.default.t (x INT)")
        with pytest.raises(ServerOperationError, match=refusal):
            cur.execute(f"ALTER TABLE main.default.t RENAME TO main.default.{quoted}")
        # 255 characters, a hyphen (quoted), and a temporary view (not a Unity Catalog object)
        for statement in (
            f"CREATE TABLE main.default.`{'y' * 255}` (x INT)",
            "CREATE TABLE main.default.`with-hyphen` (x INT)",
            f"CREATE TEMPORARY VIEW {quoted} AS SELECT 1 AS x",
        ):
            cur.execute(statement)


@pytest.mark.parametrize("char", list(" ,;{}()\n\t="), ids=repr)
def test_column_names_delta_refuses_without_column_mapping_are_refused(
    connect: Connect, char: str
) -> None:
    """Delta without column mapping refuses a column or nested field name with any of
    ` ,;{}()\\n\\t=` (DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES); with column mapping it takes
    them. DuckDB takes them all."""
    bad = f"`a{char}b`"
    refusal = r"\[DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES\]"
    with connect() as conn, conn.cursor() as cur:
        for statement in (
            f"CREATE TABLE main.default.t ({bad} INT)",
            f"CREATE TABLE main.default.t (s STRUCT<{bad}: INT>) USING DELTA",
            f"CREATE OR REPLACE TABLE main.default.t AS SELECT 1 AS {bad}",
            f"CREATE TABLE IF NOT EXISTS main.default.t AS SELECT 1 AS {bad} UNION ALL SELECT 2",
            f"CREATE TABLE main.default.t AS SELECT CAST(NULL AS STRUCT<{bad}: INT>) AS s",
        ):
            with pytest.raises(ServerOperationError, match=refusal):
                cur.execute(statement)
        cur.execute(
            f"CREATE TABLE main.default.mapped ({bad} INT) USING DELTA "
            "TBLPROPERTIES ('delta.columnMapping.mode' = 'name')"
        )
        cur.execute("CREATE TABLE main.default.plain (`a-b` INT, `a.b` INT, `é` INT)")


def test_division_by_zero_fails_the_statement_as_in_ansi_mode(connect: Connect) -> None:
    """Databricks SQL runs in ANSI mode: `/`, `%` and `div` by 0 fail with DIVIDE_BY_ZERO
    (SQLSTATE 22012); `try_divide` gives NULL, and a CASE branch not taken divides nothing.
    DuckDB gives NULL or infinity."""
    rows = "FROM VALUES (6, 3), (1, 0) AS v(x, y)"
    with connect() as conn, conn.cursor() as cur:
        for statement in (
            f"SELECT x / y AS q {rows}",
            f"SELECT x % y AS q {rows}",
            f"SELECT x div y AS q {rows}",
            "SELECT 1.5 / 0.0 AS q",
        ):
            with pytest.raises(ServerOperationError, match=r"\[DIVIDE_BY_ZERO\]") as refused:
                cur.execute(statement)
            assert "SQLSTATE: 22012" in str(refused.value)
        cur.execute(
            f"SELECT try_divide(x, y) AS t, CASE WHEN y <> 0 THEN x / y END AS q, "
            f"CASE WHEN y <> 0 THEN x % y END AS m {rows} ORDER BY x"
        )
        assert [tuple(r) for r in cur.fetchall()] == [(None, None, None), (2.0, 2.0, 0)]


def test_arrays_overlap_is_null_as_on_databricks(connect: Connect) -> None:
    """arrays_overlap: true for a common non-null element; NULL when there is none, both arrays
    are non-empty and either holds a NULL (or either is NULL); false otherwise (the function's
    reference; real Spark agrees). DuckDB's list_has_any gives false for the NULL cases."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT arrays_overlap(array('a'), array('b', NULL)) AS no_common_with_null, "
            "arrays_overlap(array('a'), array('a', NULL)) AS common, "
            "arrays_overlap(array(), array(NULL)) AS one_empty, "
            "arrays_overlap(array('a'), array('b')) AS no_common, "
            "arrays_overlap(CAST(NULL AS ARRAY<STRING>), array('a')) AS null_array"
        )
        assert tuple(cur.fetchall()[0]) == (None, True, False, False, None)


_TYPED = (
    "CREATE TABLE main.default.typed (k INT, i INT, big BIGINT, d DATE, ts TIMESTAMP, "
    "b BOOLEAN, s STRING, bin BINARY, arr ARRAY<INT>, st STRUCT<a: INT>) USING DELTA"
)


@pytest.mark.parametrize(
    ("column", "value", "refusal"),
    [
        (
            "d",
            "1",
            r"CAST_WITH_FUNC_SUGGESTION\] .*cannot cast \"INT\" to \"DATE\".*DATE_FROM_UNIX",
        ),
        ("big", "current_date()", r"CAST_WITH_FUNC_SUGGESTION\] .*\"DATE\" to \"BIGINT\""),
        ("b", "current_date()", r"CAST_WITH_CONF_SUGGESTION\] .*\"DATE\" to \"BOOLEAN\""),
        ("ts", "true", r"CAST_WITH_CONF_SUGGESTION\] .*\"BOOLEAN\" to \"TIMESTAMP\""),
        ("d", "true", r"CAST_WITHOUT_SUGGESTION\] .*\"BOOLEAN\" to \"DATE\""),
        ("i", "X'01'", r"CAST_WITHOUT_SUGGESTION\] .*\"BINARY\" to \"INT\""),
        ("bin", "1", r"CAST_WITH_CONF_SUGGESTION\] .*\"INT\" to \"BINARY\""),
        ("arr", "'[1, 2]'", r"CAST_WITHOUT_SUGGESTION\] .*\"STRING\" to \"ARRAY<INT>\""),
        ("st", "'{\"a\": 1}'", r"CAST_WITHOUT_SUGGESTION\] .*\"STRING\" to \"STRUCT<a: INT>\""),
        ("arr", "array(current_date())", r"\"ARRAY<DATE>\" to \"ARRAY<INT>\""),
    ],
)
def test_a_write_the_ansi_cast_cannot_convert_fails_analysis_as_on_a_delta_table(
    connect: Connect, column: str, value: str, refusal: str
) -> None:
    """Databricks (store assignment ANSI) casts each written value to its Delta column's type with
    an ANSI CAST; a pair that CAST cannot convert fails the statement before any row is written
    (DATATYPE_MISMATCH, SQLSTATE 42K09), in INSERT ... VALUES / SELECT, UPDATE and MERGE alike.
    DuckDB casts some of them (a STRING into an ARRAY or STRUCT, a BOOLEAN into a TIMESTAMP...),
    or refuses with its own words."""
    source = f"SELECT 1 AS k, {value} AS v"
    with connect() as conn, conn.cursor() as cur:
        cur.execute(_TYPED)
        cur.execute("INSERT INTO main.default.typed (k) VALUES (1)")
        for statement in (
            f"INSERT INTO main.default.typed (k, {column}) VALUES (2, {value})",
            f"INSERT INTO main.default.typed (k, {column}) {source}",
            f"UPDATE main.default.typed SET {column} = {value} WHERE k = 1",
            f"MERGE INTO main.default.typed AS t USING ({source}) AS s ON t.k = s.k "
            f"WHEN MATCHED THEN UPDATE SET {column} = s.v",
            f"MERGE INTO main.default.typed AS t USING ({source}) AS s ON t.k = s.k + 5 "
            f"WHEN NOT MATCHED THEN INSERT (k, {column}) VALUES (s.k + 5, s.v)",
        ):
            with pytest.raises(ServerOperationError, match=r"\[DATATYPE_MISMATCH\.") as refused:
                cur.execute(statement)
            assert re.search(refusal, str(refused.value)), str(refused.value)
            if "CONF_SUGGESTION" in refusal:  # Delta tags an INSERT's cast, not MERGE's / UPDATE's
                insert = statement.startswith("INSERT")
                conf = (
                    "storeAssignmentPolicy\" as 'LEGACY'" if insert else "ansi.enabled\" as 'false'"
                )
                assert conf in str(refused.value)
            assert "SQLSTATE: 42K09" in str(refused.value)
        cur.execute("SELECT count(*) FROM main.default.typed")
        assert cur.fetchall()[0][0] == 1


def test_a_merge_star_is_checked_column_by_column(connect: Connect) -> None:
    """`UPDATE SET *` / `INSERT *` assign each target column from the source column of its name,
    so each pair is checked (and a source column in another order is no mismatch)."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.t (k INT, d DATE) USING DELTA")
        cur.execute("INSERT INTO main.default.t VALUES (1, DATE'2024-01-01')")
        with pytest.raises(ServerOperationError, match=r"CAST_WITH_FUNC_SUGGESTION.*\"INT\" to"):
            cur.execute(
                "MERGE INTO main.default.t AS t USING (SELECT 1 AS k, 7 AS d) AS s ON t.k = s.k "
                "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
            )
        cur.execute(
            "MERGE INTO main.default.t AS t USING (SELECT DATE'2025-02-03' AS d, 1 AS k) AS s "
            "ON t.k = s.k WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        cur.execute("SELECT k, d FROM main.default.t")
        assert [tuple(r) for r in cur.fetchall()] == [(1, dt.date(2025, 2, 3))]


def test_writes_the_ansi_cast_converts_are_taken(connect: Connect) -> None:
    """Numeric widening and narrowing, anything into STRING, STRING into a number, DATE, TIMESTAMP
    or BOOLEAN (each value parsed by the ANSI CAST: one that does not parse fails the statement),
    a number into BOOLEAN, DATE and TIMESTAMP into each other, NULL into anything: Delta casts
    them (store assignment ANSI), where Spark's own insert into a non-Delta table refuses some
    (`canANSIStoreAssign`: STRING into INT). A value the cast cannot parse fails the statement
    with CAST_INVALID_INPUT (SQLSTATE 22018), as an explicit CAST's does in ANSI mode."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute(_TYPED)
        cur.execute(
            "INSERT INTO main.default.typed (k, i, big, d, ts, b, s, arr) "
            "VALUES (1, 7L, 7, '2024-01-02', DATE'2024-01-03', 2.5D, 42, array(1L))"
        )
        cur.execute(
            "INSERT INTO main.default.typed (k, i, d, b, s, st) "
            "SELECT 2, '8', current_timestamp(), 'true', true, named_struct('a', 1L)"
        )
        cur.execute(
            "INSERT INTO main.default.typed VALUES (3, NULL, NULL, NULL, NULL, NULL, "
            "NULL, NULL, NULL, NULL)"
        )
        cur.execute("UPDATE main.default.typed SET s = current_date() WHERE k = 3")
        cur.execute(
            "MERGE INTO main.default.typed AS t USING (SELECT 3 AS k, '9' AS v) AS s "
            "ON t.k = s.k WHEN MATCHED THEN UPDATE SET i = s.v"
        )
        cur.execute("SELECT k, i, big, d, b, s FROM main.default.typed ORDER BY k")
        rows = [tuple(r) for r in cur.fetchall()]
        assert rows[0] == (1, 7, 7, dt.date(2024, 1, 2), True, "42")
        assert rows[1][:2] == (2, 8) and rows[1][4:] == (True, "true")
        assert rows[2][:2] == (3, 9)
        for statement, target in (
            ("INSERT INTO main.default.typed (k, i) VALUES (4, 'not a number')", "INT"),
            ("INSERT INTO main.default.typed (k, d) SELECT 4, 'someday'", "DATE"),
            ("UPDATE main.default.typed SET b = 'maybe' WHERE k = 1", "BOOLEAN"),
            ("SELECT CAST('x1' AS BIGINT)", "BIGINT"),
        ):
            with pytest.raises(ServerOperationError, match=r"\[CAST_INVALID_INPUT\]") as failed:
                cur.execute(statement)
            assert f'cannot be cast to "{target}" because it is malformed' in str(failed.value)
            assert "SQLSTATE: 22018" in str(failed.value)
        with pytest.raises(ServerOperationError):  # Databricks: CAST_OVERFLOW_IN_TABLE_INSERT
            cur.execute("INSERT INTO main.default.typed (k, i) VALUES (4, 3000000000L)")
        cur.execute("SELECT count(*) FROM main.default.typed")
        assert cur.fetchall()[0][0] == 3


def test_a_value_longer_than_its_char_or_varchar_column_fails_the_write(connect: Connect) -> None:
    """Delta checks a CHAR(n) / VARCHAR(n) column's length on every write (a constraint): a longer
    value fails the statement with DELTA_EXCEED_CHAR_VARCHAR_LIMIT (SQLSTATE 22001), in INSERT,
    UPDATE and MERGE alike; a table created again (CREATE OR REPLACE ... AS) has the new types.
    DuckDB keeps no length."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.short (k INT, v VARCHAR(3), c CHAR(2)) USING DELTA")
        cur.execute("INSERT INTO main.default.short VALUES (1, 'abc', 'xy'), (2, NULL, NULL)")
        for statement in (
            "INSERT INTO main.default.short VALUES (3, 'abcd', 'x')",
            "INSERT INTO main.default.short (k, c) SELECT 3, 'xyz'",
            "UPDATE main.default.short SET v = concat(v, '!') WHERE k = 1",
            "MERGE INTO main.default.short AS t USING (SELECT 1 AS k, 'long' AS v) AS s "
            "ON t.k = s.k WHEN MATCHED THEN UPDATE SET v = s.v",
        ):
            with pytest.raises(
                ServerOperationError, match=r"\[DELTA_EXCEED_CHAR_VARCHAR_LIMIT\]"
            ) as refused:
                cur.execute(statement)
            assert "SQLSTATE: 22001" in str(refused.value)
        cur.execute(
            "CREATE OR REPLACE TABLE main.default.short AS "
            "SELECT k, concat(v, '-longer') AS v FROM main.default.short"
        )
        cur.execute("INSERT INTO main.default.short VALUES (3, 'no limit now')")
        cur.execute("SELECT k, v FROM main.default.short ORDER BY k")
        assert [tuple(r) for r in cur.fetchall()] == [
            (1, "abc-longer"),
            (2, None),
            (3, "no limit now"),
        ]


def test_a_cast_to_an_integer_truncates_and_refuses_as_spark_ansi(connect: Connect) -> None:
    """Spark's ANSI CAST to an integral type truncates a DOUBLE or DECIMAL toward zero (DuckDB's
    rounds), refuses a STRING with a fraction or an exponent (CAST_INVALID_INPUT; DuckDB's takes
    '1.5' as 2) and a value out of range (CAST_OVERFLOW, SQLSTATE 22003); try_cast gives NULL.
    Each result as local Spark 4.3 gives it in ANSI mode."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT CAST(1.5D AS INT), CAST(-1.5D AS INT), CAST(2.7 AS INT), CAST(-2.7 AS BIGINT), "
            "CAST(x AS SMALLINT), CAST(' +7 ' AS INT), CAST(true AS TINYINT), "
            "try_cast('1.5' AS INT), try_cast(3e9D AS INT), try_cast(2.5D AS INT) "
            "FROM VALUES (1.9999D) AS t(x)"
        )
        assert tuple(cur.fetchall()[0]) == (1, -1, 2, -2, 1, 7, 1, None, None, 2)
        for statement, failure in (
            ("SELECT CAST('1.5' AS INT)", "[CAST_INVALID_INPUT] The value '1.5' of the type "),
            ("SELECT CAST('1e3' AS BIGINT)", "[CAST_INVALID_INPUT] The value '1e3' of the type "),
            ("SELECT CAST('300' AS TINYINT)", '"STRING" cannot be cast to "TINYINT" because'),
            (
                "SELECT CAST(3e9D AS INT)",
                '[CAST_OVERFLOW] The value 3.0E9D of the type "DOUBLE" cannot be cast to "INT" '
                "due to an overflow. Use `try_cast` to tolerate overflow and return NULL instead. "
                "SQLSTATE: 22003",
            ),
            (
                "SELECT CAST(3000000000.5 AS INT)",
                '[CAST_OVERFLOW] The value 3000000000.5BD of the type "DECIMAL(11,1)" cannot',
            ),
            ("SELECT CAST(3000000000L AS INT)", "[CAST_OVERFLOW] The value 3000000000L of the"),
        ):
            with pytest.raises(ServerOperationError) as failed:
                cur.execute(statement)
            assert failure in str(failed.value), statement


def test_a_write_into_an_integer_column_casts_as_delta_does(connect: Connect) -> None:
    """A DOUBLE written into an INT / BIGINT column is truncated (Delta's ANSI cast; DuckDB's
    implicit one rounds), a STRING with a fraction fails with CAST_INVALID_INPUT, and a value out
    of range fails with the write's own class naming the column: CAST_OVERFLOW_IN_TABLE_INSERT
    for an INSERT, DELTA_CAST_OVERFLOW_IN_TABLE_WRITE for a MERGE or UPDATE."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE main.default.counts (k INT, i INT, b BIGINT)")
        cur.execute("INSERT INTO main.default.counts VALUES (1, 1.5D, -1.5D)")
        cur.execute("INSERT INTO main.default.counts SELECT 2, 2.7, -2.7")
        cur.execute("UPDATE main.default.counts SET b = 9.9D WHERE k = 2")
        cur.execute(
            "MERGE INTO main.default.counts AS t USING (SELECT * FROM VALUES (1, 10.7D, '11'), "
            "(3, -6.6D, ' 12 ') AS v(k, i, b)) AS s ON t.k = s.k "
            "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        cur.execute("SELECT k, i, b FROM main.default.counts ORDER BY k")
        assert [tuple(r) for r in cur.fetchall()] == [(1, 10, 11), (2, 2, 9), (3, -6, 12)]
        for statement, failure in (
            (
                "INSERT INTO main.default.counts (k, i) SELECT 4, 3e9D",
                '[CAST_OVERFLOW_IN_TABLE_INSERT] Fail to assign a value of "DOUBLE" type to the '
                '"INT" type column or variable `i` due to an overflow.',
            ),
            (
                "INSERT INTO main.default.counts SELECT 4, '1.5', 1",
                "[CAST_INVALID_INPUT] The value '1.5' of the type \"STRING\" cannot be cast to "
                '"INT" because it is malformed.',
            ),
            (
                "UPDATE main.default.counts SET b = 1e30D WHERE k = 1",
                '[DELTA_CAST_OVERFLOW_IN_TABLE_WRITE] Failed to write a value of "DOUBLE" type '
                'into the "BIGINT" type column `b` due to an overflow.',
            ),
            (
                "MERGE INTO main.default.counts AS t USING (SELECT 1 AS k, 1e12D AS i) AS s "
                "ON t.k = s.k WHEN MATCHED THEN UPDATE SET i = s.i",
                '[DELTA_CAST_OVERFLOW_IN_TABLE_WRITE] Failed to write a value of "DOUBLE" type '
                'into the "INT" type column `i`',
            ),
        ):
            with pytest.raises(ServerOperationError) as failed:
                cur.execute(statement)
            assert failure in str(failed.value), statement
        cur.execute("SELECT k, i, b FROM main.default.counts ORDER BY k")
        assert [tuple(r) for r in cur.fetchall()] == [(1, 10, 11), (2, 2, 9), (3, -6, 12)]
