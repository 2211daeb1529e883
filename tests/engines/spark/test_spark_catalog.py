"""Parquet catalog tables (storage: catalog) rewritten by save-aside and renames: a crash between any
two catalog operations leaves the old or the new content, and a table the user drops stays dropped.

A crash is injected by failing the statement of the chosen step (the one method every catalog
operation of a swap goes through): the session, its catalog and the tables on disk are real.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbatch.engines.spark.catalog import CatalogTable


class Crash(BaseException):
    """A process killed at this point: nothing below catches it."""


@pytest.fixture
def table(spark: Any) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:8]}"
    yield name
    for suffix in ("", "__agentbatch_new", "__agentbatch_old"):
        spark.sql(f"DROP TABLE IF EXISTS default.{name}{suffix}")


def present(spark: Any, name: str) -> set[str]:
    """The tables of this test's family in the catalog, by suffix ('' is the table itself)."""
    names = {t.name for t in spark.catalog.listTables("default") if t.name.startswith(name)}
    return {n[len(name) :].replace("__agentbatch_", "") for n in names}


def crash_at(monkeypatch: pytest.MonkeyPatch, statement: str) -> None:
    """Kill the process instead of running `statement`, once."""
    real = CatalogTable._sql

    def sql(self: CatalogTable, text: str) -> None:
        if text == statement:
            monkeypatch.setattr(CatalogTable, "_sql", real)
            raise Crash(text)
        real(self, text)

    monkeypatch.setattr(CatalogTable, "_sql", sql)


def steps(name: str) -> dict[str, str]:
    t, new, old = (f"`default`.`{name}{s}`" for s in ("", "__agentbatch_new", "__agentbatch_old"))
    return {
        "rename the old table aside": f"ALTER TABLE {t} RENAME TO {old}",
        "rename the new table in": f"ALTER TABLE {new} RENAME TO {t}",
        "drop the old table": f"DROP TABLE IF EXISTS {old}",
    }


def merge(engine: Any, name: str, rows: str) -> None:
    engine.execute(
        f"MERGE INTO default.{name} AS target USING (SELECT * FROM VALUES {rows} AS x(id, v)) AS s "
        "ON target.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
    )


def content(engine: Any, name: str) -> list[tuple[int, str]]:
    return sorted((r["id"], r["v"]) for r in engine.read_table(f"default.{name}").to_pylist())


OLD = [(1, "a")]
NEW = [(1, "b"), (2, "c")]

# Where the crash leaves the swap: the tables present, and what the next use of the table reads.
CRASHES = [
    ("rename the old table aside", {"", "new"}, OLD),
    ("rename the new table in", {"new", "old"}, NEW),
    ("drop the old table", {"", "old"}, NEW),
]


@pytest.mark.parametrize(("step", "left", "after"), CRASHES, ids=[c[0] for c in CRASHES])
def test_a_crash_between_catalog_operations_leaves_the_old_or_the_new_content(
    make_engine: Callable[..., Any],
    spark: Any,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    left: set[str],
    after: list[tuple[int, str]],
) -> None:
    engine = make_engine({"storage": "catalog"})
    engine.execute(f"CREATE TABLE default.{table} AS SELECT 1 AS id, 'a' AS v")
    crash_at(monkeypatch, steps(table)[step])
    with pytest.raises(Crash):
        merge(engine, table, "(1, 'b'), (2, 'c')")
    assert present(spark, table) == left
    again = make_engine({"storage": "catalog"})  # the next run
    assert again.table_exists(f"default.{table}")
    assert content(again, table) == after
    assert present(spark, table) == {""}
    merge(again, table, "(3, 'd')")  # and the table takes writes again
    assert content(again, table) == [*after, (3, "d")]


USER_DROPS = [c for c in CRASHES if "" in c[1]]  # a crash that leaves the table for the user


@pytest.mark.parametrize(("step", "left", "after"), USER_DROPS, ids=[c[0] for c in USER_DROPS])
def test_a_table_the_user_drops_after_a_crash_stays_dropped(
    make_engine: Callable[..., Any],
    spark: Any,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    left: set[str],
    after: list[tuple[int, str]],
) -> None:
    """The answers were wanted gone: the next run found the leftover of the crashed write and
    renamed it back (the old code: `<t>__agentbatch_new` without `<t>` was taken for a crash)."""
    engine = make_engine({"storage": "catalog"})
    engine.execute(f"CREATE TABLE default.{table} AS SELECT 1 AS id, 'a' AS v")
    crash_at(monkeypatch, steps(table)[step])
    with pytest.raises(Crash):
        merge(engine, table, "(1, 'b'), (2, 'c')")
    spark.sql(f"DROP TABLE default.{table}")  # the user, outside agentbatch
    again = make_engine({"storage": "catalog"})
    assert not again.table_exists(f"default.{table}")
    assert present(spark, table) == set()  # the leftover went with it
    again.execute(f"CREATE TABLE IF NOT EXISTS default.{table} AS SELECT 7 AS id, 'z' AS v")
    assert content(again, table) == [(7, "z")]


def test_a_write_killed_inside_save_as_table_does_not_block_the_table(
    make_engine: Callable[..., Any], spark: Any, table: str
) -> None:
    """A kill while Spark writes the new table leaves its folder without a catalog entry; Spark
    refuses a managed table over an existing folder (LOCATION_ALREADY_EXISTS), so every later
    write of the table failed."""
    engine = make_engine({"storage": "catalog"})
    engine.execute(f"CREATE TABLE default.{table} AS SELECT 1 AS id, 'a' AS v")
    base = spark.catalog.getDatabase("default").locationUri.removeprefix("file:")
    orphan = Path(base) / f"{table}__agentbatch_new"
    orphan.mkdir()
    (orphan / "part-00000-cut.parquet").write_bytes(b"PAR1")  # half a file
    merge(engine, table, "(1, 'b'), (2, 'c')")
    assert content(engine, table) == NEW
    assert present(spark, table) == {""}
