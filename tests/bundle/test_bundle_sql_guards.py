"""The SQL files the bundle's sql_tasks run refuse what `agentbatch run` refuses, before anything is
paid: each compiled file (resources/sql/, parameters bound as the task binds them) runs statement
by statement, as a SQL file task does, on the loopback warehouse (DuckDB behind the unmodified
connector), whose `ai_query` counts the calls it answers.

A run checks in Python before any call (execution/selection.py); a SQL file task has only its
statements, so the file's guards (templates/guards.sql) fail the task with `raise_error` and the
run's message before the statement that calls ai_query and writes."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import databricks.sql
import pytest
from databricks.sql.exc import ServerOperationError

import agentbatch
from agentbatch.errors import UsageError
from tests.bundle.dab_refs import ROOT, bind_parameters
from tests.support.warehouse.duckdb_executor import DuckDBExecutor
from tests.support.warehouse.server import Warehouse, serve_warehouse

SQL_DIR = ROOT / "resources" / "sql"
COMPILED = sorted(SQL_DIR.glob("*.sql"))
TICKETS_CSV = ROOT / "agentbatch" / "data" / "support_tickets.csv"
TICKETS = "main.support.tickets"
# Every column of the tickets table, in order (the CSV's header).
COLUMNS = "ticket_id, created_at, customer, channel, status, subject, body, label"
NEW_KEY = 9001  # a ticket no target holds yet
USER_RAISED = "[USER_RAISED_EXCEPTION] "
_SAMPLES = {"string": "text", "integer": 3, "number": 1.5, "boolean": True}


@dataclass
class CountingModel:
    """A foundation model behind ai_query that counts the rows it answers (each one is paid)."""

    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, endpoint: str, request: Any, **named: Any) -> str:
        with self.lock:
            self.calls.append(str(request))
        fmt = named.get("responseFormat")
        if fmt is None:
            return f"Summary: {str(request)[:40]}"
        schema = json.loads(fmt)["json_schema"]["schema"]
        return json.dumps({k: _SAMPLES[v["type"]] for k, v in schema["properties"].items()})


@dataclass
class Loopback:
    warehouse: Warehouse
    model: CountingModel

    def sql(self, statement: str) -> list[dict[str, Any]]:
        with (
            databricks.sql.connect(**self.warehouse.connect_kwargs()) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(statement)
            try:
                return [row.asDict() for row in cur.fetchall()]
            except Exception:
                return []

    def run_file(self, path: Path, ran: list[str] | None = None) -> list[str]:
        """Run the file's statements in order, as a SQL file task does: the first that fails
        fails the task and nothing after it runs. The templates of the statements that ran (in
        `ran` too, as each starts)."""
        ran = [] if ran is None else ran
        with (
            databricks.sql.connect(**self.warehouse.connect_kwargs()) as conn,
            conn.cursor() as cur,
        ):
            for template, statement in statements_of(path):
                ran.append(template)
                cur.execute(statement)
        return ran

    def table(self, name: str, key: str = "ticket_id") -> list[dict[str, Any]]:
        return self.sql(f"SELECT * FROM {name} ORDER BY {key}, answered_at")

    def exists(self, name: str) -> bool:
        catalog, schema, table = name.split(".")
        with (
            databricks.sql.connect(**self.warehouse.connect_kwargs()) as conn,
            conn.cursor() as cur,
        ):
            cur.tables(catalog_name=catalog, schema_name=schema, table_name=table)
            return bool(cur.fetchall())


def statements_of(path: Path) -> list[tuple[str, str]]:
    """(template, SQL) of each statement of a compiled file, with `catalog` bound to `main`:
    `agentbatch compile` heads each with `-- <purpose> [<template>]` and ends it with `;`."""
    text = bind_parameters(path.read_text(encoding="utf-8"), {"catalog": "main"})
    pieces = re.split(r"^-- .+ \[([\w.]+)\]\n", text, flags=re.M)
    found = []
    for template, sql in zip(pieces[1::2], pieces[2::2], strict=True):
        body = sql.strip()
        assert body.endswith(";"), f"{path.name}: a statement of {template} does not end in ;"
        found.append((template, body[:-1]))
    return found


def output_of(path: Path) -> str:
    """The target table of a compiled file (what its guards name)."""
    match = re.search(
        r"CREATE TABLE IF NOT EXISTS `(\w+)`\.`(\w+)`\.`(\w+)`",
        bind_parameters(path.read_text(encoding="utf-8"), {"catalog": "main"}),
    )
    assert match, path
    return ".".join(match.groups())


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[Loopback]:
    volumes = tmp_path / "volumes"
    raw = volumes / "main" / "support" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(TICKETS_CSV, raw / "support_tickets.csv")
    model = CountingModel()
    with (
        DuckDBExecutor(ai_query=model, volumes_dir=volumes) as executor,
        serve_warehouse(executor, volumes_dir=volumes) as wh,
    ):
        here = Loopback(wh, model)
        here.sql("CREATE SCHEMA main.support")
        here.sql(
            f"CREATE TABLE {TICKETS} AS SELECT * FROM "
            "read_files('/Volumes/main/support/raw/support_tickets.csv', format => 'csv')"
        )
        yield here


def add_new_ticket(loopback: Loopback, copies: int) -> None:
    """A billing ticket (every compiled job selects it: extract_order_details selects billing
    tickets only) under a key no target holds yet."""
    assert loopback.sql(f"SELECT label FROM {TICKETS} WHERE ticket_id = 1005") == [
        {"label": "billing"}
    ]
    for _ in range(copies):
        loopback.sql(
            f"INSERT INTO {TICKETS} SELECT {NEW_KEY} AS ticket_id, created_at, customer, channel, "
            f"status, subject, body, label FROM {TICKETS} WHERE ticket_id = 1005"
        )


def fails_with(loopback: Loopback, path: Path) -> tuple[str, list[str]]:
    """The task's error message (without the warehouse's class and SQLSTATE) and the templates
    of the statements that ran."""
    ran: list[str] = []
    with pytest.raises(ServerOperationError) as failed:
        loopback.run_file(path, ran)
    message = str(failed.value)
    assert message.startswith(USER_RAISED) and message.endswith(" SQLSTATE: P0001"), message
    return message[len(USER_RAISED) : -len(" SQLSTATE: P0001")], ran


def test_every_compiled_file_guards_before_it_creates_or_pays() -> None:
    for path in COMPILED:
        templates = [t for t, _ in statements_of(path)]
        assert templates[:3] == ["guards.sql", "ensure_target.sql", "guards.sql"], path.name
        assert templates[3] in ("merge.sql", "create_or_replace.sql", "append.sql"), path.name
        guards = [sql for t, sql in statements_of(path) if t == "guards.sql"]
        assert all("raise_error(" in sql and "ai_query" not in sql for sql in guards)


@pytest.mark.parametrize("path", COMPILED, ids=[p.stem for p in COMPILED])
def test_a_repeated_source_key_fails_the_task_before_anything_is_paid(
    loopback: Loopback, path: Path
) -> None:
    """A MERGE whose source repeats a key the target lacks inserts every copy (ai_query paid for
    each), and every later MERGE fails after paying; the task fails first instead."""
    assert loopback.run_file(path)[-1] != "guards.sql"  # a clean source runs whole
    answered = len(loopback.model.calls)
    assert answered > 0
    output = output_of(path)
    assert loopback.exists(output)
    before = loopback.table(output)
    assert len(before) == answered and len({r["ticket_id"] for r in before}) == answered

    add_new_ticket(loopback, copies=2)
    message, ran = fails_with(loopback, path)
    assert ran == ["guards.sql"], "the first statement fails: nothing is created or called"
    assert message == (
        f"source key 'ticket_id' is not unique: 1 value(s) occur more than once ('{NEW_KEY}' x2); "
        "one key gets one answer, so nothing was sent: remove the duplicates, narrow "
        "`source.where`, or choose a key that is unique"
    )
    assert len(loopback.model.calls) == answered, "ai_query was called"
    assert loopback.table(output) == before, "the target changed"

    loopback.sql(f"DELETE FROM {TICKETS} WHERE ticket_id = {NEW_KEY}")
    add_new_ticket(loopback, copies=1)  # once: the next run answers it, and only it
    loopback.run_file(path)
    assert len(loopback.model.calls) == answered + 1


def test_a_first_run_with_a_repeated_key_creates_no_target(loopback: Loopback) -> None:
    path = SQL_DIR / "summarise_tickets.sql"
    # Seven keys repeated: the message shows five, the most repeated first, as a run's does.
    loopback.sql(
        f"INSERT INTO {TICKETS} SELECT {COLUMNS} FROM {TICKETS} "
        "WHERE ticket_id BETWEEN 1001 AND 1007"
    )
    # 1003 twice more (both its rows copied): the most repeated.
    loopback.sql(f"INSERT INTO {TICKETS} SELECT {COLUMNS} FROM {TICKETS} WHERE ticket_id = 1003")
    message, ran = fails_with(loopback, path)
    assert ran == ["guards.sql"]
    assert message.startswith(
        "source key 'ticket_id' is not unique: 7 value(s) occur more than once "
        "('1003' x4, '1001' x2, '1002' x2, '1004' x2, '1005' x2, ...); one key gets one answer"
    )
    assert loopback.model.calls == []
    assert not loopback.exists(output_of(path))


def test_a_merge_target_holding_a_key_twice_fails_the_task_before_anything_is_paid(
    loopback: Loopback,
) -> None:
    """Mode merge keeps one row per key: a target holding a key in several rows (written by mode
    append) is refused, as `agentbatch run` refuses it."""
    path = SQL_DIR / "summarise_tickets.sql"
    output = output_of(path)
    loopback.run_file(path)
    answered = len(loopback.model.calls)
    loopback.sql(f"INSERT INTO {output} SELECT * FROM {output} WHERE ticket_id = 1002")
    before = loopback.table(output)
    add_new_ticket(loopback, copies=1)  # a row the MERGE would pay for
    message, ran = fails_with(loopback, path)
    assert ran == ["guards.sql", "ensure_target.sql", "guards.sql"]
    assert message == (
        f"{output} holds 1 key(s) in more than one row (by 'ticket_id', the job's source.key: "
        "written by mode append, or with another source.key); mode merge keeps one row per "
        "key, so nothing was sent: run once with mode overwrite (it reuses every answer the "
        "table holds) or keep mode append"
    )
    assert len(loopback.model.calls) == answered
    assert loopback.table(output) == before


@pytest.mark.parametrize("path", COMPILED, ids=[p.stem for p in COMPILED])
def test_a_source_key_of_another_type_than_the_targets_fails_the_task(
    loopback: Loopback, path: Path
) -> None:
    """Text keys against a target keyed by numbers: '01005' = 1005 after the implicit cast, so
    the MERGE (or the rows an overwrite keeps) would take one key for another. Integer widths
    are one kind: an INT source into a BIGINT target runs."""
    output = output_of(path)
    loopback.run_file(path)
    answered = len(loopback.model.calls)
    before = loopback.table(output)

    retype = (
        f"CREATE OR REPLACE TABLE {TICKETS} AS SELECT {{key}} AS ticket_id, "
        + ", ".join(c.strip() for c in COLUMNS.split(",")[1:])
        + f" FROM {TICKETS}"
    )
    loopback.sql(retype.format(key="CAST(ticket_id AS INT)"))
    loopback.run_file(path)  # the same keys: nothing to pay
    assert len(loopback.model.calls) == answered

    loopback.sql(retype.format(key="lpad(CAST(ticket_id AS STRING), 5, '0')"))
    message, ran = fails_with(loopback, path)
    assert ran == ["guards.sql", "ensure_target.sql", "guards.sql"]
    assert message.startswith("source key 'ticket_id' is ") and f", but {output} holds it as " in (
        message
    )
    assert "(the text '01' and the number 1), so nothing was sent" in message
    assert len(loopback.model.calls) == answered
    assert loopback.table(output) == before


def test_the_guard_says_what_agentbatch_run_says(loopback: Loopback, tmp_path: Path) -> None:
    """The same source, refused by a run (a dry run on the local target, which checks as every
    run does) and by the SQL task: the same words."""
    path = SQL_DIR / "summarise_tickets.sql"
    add_new_ticket(loopback, copies=3)
    task_message, _ = fails_with(loopback, path)

    csv = tmp_path / "tickets.csv"
    lines = TICKETS_CSV.read_text().splitlines()
    copied = next(r for r in lines if r.startswith("1005,")).replace("1005,", f"{NEW_KEY},", 1)
    csv.write_text("\n".join([*lines, copied, copied, copied]) + "\n")
    with pytest.raises(UsageError) as refused:
        agentbatch.run(
            ROOT / "jobs" / "summarise_tickets.yml",
            tables={TICKETS: str(csv)},
            project_dir=tmp_path,
            dry_run=True,
            progress=False,
        )
    assert str(refused.value) == task_message


def test_an_append_target_holding_a_key_twice_for_one_request_fails_the_task(
    loopback: Loopback, tmp_path: Path
) -> None:
    """Mode append keeps one row per key and request: a target holding a key's answer to one
    request in two rows (the job was keyed by another column, whose values the new key makes
    one) would have the next answer written into both. The compiled file refuses it before the
    statement that calls ai_query and writes, as `agentbatch run` does."""
    from agentbatch.cli.main import main as cli_main

    job = tmp_path / "jobs" / "summarise_tickets.yml"
    job.parent.mkdir()
    text = (ROOT / "jobs" / "summarise_tickets.yml").read_text()
    job.write_text(text.replace("mode: merge", "mode: append"))
    out = tmp_path / "sql"
    assert cli_main(["compile", str(job), "--out", str(out), "--project-dir", str(ROOT)]) == 0
    [path] = sorted(out.glob("*.sql"))
    assert loopback.run_file(path)[-1] == "append.sql"
    output = output_of(path)
    answered = len(loopback.model.calls)
    loopback.sql(f"INSERT INTO {output} SELECT * FROM {output} WHERE ticket_id = 1002")
    before = loopback.table(output)
    add_new_ticket(loopback, copies=1)  # a row the append would pay for
    message, ran = fails_with(loopback, path)
    assert ran == ["guards.sql", "ensure_target.sql", "guards.sql"]
    assert message.startswith(
        f"{output} holds 1 key(s) in more than one row for the same request (by 'ticket_id', "
        "the job's source.key: written with another source.key); mode append keeps one row "
        "per key and request, so nothing was sent: run once with mode overwrite"
    ), message
    assert len(loopback.model.calls) == answered
    assert loopback.table(output) == before
