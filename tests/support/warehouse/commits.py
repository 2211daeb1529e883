"""Delta's optimistic commits, as the loopback warehouse enforces them.

A statement that writes a table reads the table's version when it starts and commits when it
ends; Delta then checks the commits other transactions made to that table in between. The rule
emulated is the table-level matrix of tables without row-level concurrency, at the default
isolation level, WriteSerializable (docs.databricks.com optimizations/isolation-level): a MERGE,
UPDATE or DELETE, and an INSERT or CREATE OR REPLACE whose query reads its own table, fails if
another commit to the table landed after it started, unless that commit was a blind append (an
INSERT that read nothing of the table). A blind append never conflicts. The failure is the error
class Databricks reports (DELTA_CONCURRENT_APPEND, or DELTA_CONCURRENT_DELETE_READ after a
DELETE; SQLSTATE 2D521) and the statement changes nothing. Stricter than a table with
row-level concurrency, which conflicts only on the same rows: a retry that is right here is
right there.

Statements writing one table run one at a time (Delta's commits are serial), which also keeps
DuckDB's own write-write conflicts out. One known to conflict runs first in a transaction rolled
back (on executors that can), so what it does before its commit fails, calling ai_query for its
rows, still happens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlglot
from sqlglot import exp

from .context import Namespace, current_statement

T = TypeVar("T")
SQLSTATE = "2D521"
_DOCS = "https://docs.databricks.com/optimizations/isolation-level.html"


@dataclass(frozen=True)
class Write:
    """What a statement commits: to `table` (catalog.schema.table, lower case)."""

    table: str
    operation: str  # as Delta names it in the conflict message
    reads_table: bool  # its result depends on the table's rows: it can conflict
    recorded: bool = True  # a commit others can conflict with (a CREATE of a new table is not)

    @property
    def blind_append(self) -> bool:
        return self.operation == "WRITE" and not self.reads_table


@dataclass(frozen=True)
class Snapshot:
    write: Write
    version: int


def _name(table: exp.Table, namespace: Namespace) -> str:
    catalog = table.args.get("catalog")
    db = table.args.get("db")
    parts = (
        catalog.name if catalog is not None else namespace.catalog,
        db.name if db is not None else namespace.schema,
        table.name,
    )
    return ".".join(parts).lower()


def _target(node: exp.Expression | None) -> exp.Table | None:
    if isinstance(node, exp.Schema):
        node = node.this
    return node if isinstance(node, exp.Table) else None


def _reads(query: exp.Expression | None, name: str, namespace: Namespace) -> bool:
    if query is None:
        return False
    local = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    for table in query.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue  # a table function
        if table.args.get("db") is None and table.name.lower() in local:
            continue
        if _name(table, namespace) == name:
            return True
    return False


def parse_write(sql: str, namespace: Namespace) -> Write | None:
    """The table `sql` writes and how, or None for a statement that commits to no table."""
    try:
        tree = sqlglot.parse_one(sql, read="databricks")
    except sqlglot.errors.SqlglotError:
        return None
    if isinstance(tree, (exp.Merge, exp.Update, exp.Delete)):
        table = _target(tree.this)
        operation = type(tree).__name__.upper()
        if table is not None and isinstance(tree, exp.Delete) and _never(tree.args.get("where")):
            # It removes no file: no action to commit, which Delta records as no commit
            # (delta-io/delta OptimisticTransaction `skipRecordingEmptyCommitAllowed`).
            return Write(_name(table, namespace), operation, False, recorded=False)
        return Write(_name(table, namespace), operation, True) if table is not None else None
    if isinstance(tree, exp.Insert):
        table = _target(tree.this)
        if table is None:
            return None
        name = _name(table, namespace)
        if tree.args.get("overwrite"):
            return Write(name, "WRITE (OVERWRITE)", True)  # it removes every file of the table
        return Write(name, "WRITE", _reads(tree.expression, name, namespace))
    if isinstance(tree, exp.Create) and str(tree.args.get("kind") or "").upper() == "TABLE":
        table = _target(tree.this)
        if table is None:
            return None
        name = _name(table, namespace)
        if not tree.args.get("replace"):
            # A new table: no statement started from a version of it. (IF NOT EXISTS over an
            # existing table commits nothing.) It still waits its turn.
            return Write(name, "CREATE TABLE", False, recorded=False)
        reads = _reads(tree.expression, name, namespace)
        return Write(name, "CREATE OR REPLACE TABLE AS SELECT", reads)
    return None


def _never(where: exp.Expression | None) -> bool:
    condition = where.this if isinstance(where, exp.Where) else None
    return isinstance(condition, exp.Boolean) and not condition.this


def conflict_message(write: Write, other: Write, version: int) -> str:
    """Databricks' words for a commit overtaken by `other` (committed as `version`); the
    WITHOUT_HINT subclass (docs.databricks.com error-messages delta-concurrent-append-error-class,
    delta-concurrent-delete-read-error-class)."""
    if other.operation == "DELETE":
        return (
            f"[DELTA_CONCURRENT_DELETE_READ.WITHOUT_HINT] Transaction conflict detected, a "
            f"concurrent {other.operation} deleted data from table {write.table} (committed at "
            f"version {version}) that this transaction read. The concurrent operation deleted "
            f"data read by this operation. Please retry the operation. Refer to {_DOCS} for "
            f"more information. SQLSTATE: {SQLSTATE}"
        )
    return (
        f"[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] Transaction conflict detected. A concurrent "
        f"{other.operation} added data to table {write.table} committed at version {version}. "
        f"Please retry the operation. Refer to {_DOCS} for more information. SQLSTATE: {SQLSTATE}"
    )


class DeltaCommits:
    """Each table's commit history (its versions) since the warehouse started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._history: dict[str, list[Write]] = {}
        self._writing: dict[str, threading.Lock] = {}

    def begin(self, sql: str, namespace: Namespace) -> Snapshot | None:
        """The version a statement that writes a table starts from (None: it writes none)."""
        write = parse_write(sql, namespace)
        if write is None:
            return None
        with self._lock:
            return Snapshot(write, len(self._history.get(write.table, [])))

    def version(self, table: str) -> int:
        with self._lock:
            return len(self._history.get(table.lower(), []))

    def commit(
        self, snapshot: Snapshot, run: Callable[[], T], rehearse: Callable[[], object] | None = None
    ) -> T:
        """Run the statement as the table's next commit, or fail it as Delta would. A statement
        that will conflict does its work first where `rehearse` can run it and roll it back (its
        ai_query calls are made and paid, as on Databricks, where the conflict shows at commit)."""
        write = snapshot.write
        with self._lock:
            writing = self._writing.setdefault(write.table, threading.Lock())
        _acquire(writing)
        try:
            with self._lock:
                since = list(enumerate(self._history.get(write.table, [])))[snapshot.version :]
            if write.reads_table:
                for number, other in since:
                    if not other.blind_append:
                        if rehearse is not None:
                            rehearse()  # a statement failing on its own fails with its error
                        raise RuntimeError(conflict_message(write, other, number + 1))
            result = run()
            if write.recorded:
                with self._lock:
                    self._history.setdefault(write.table, []).append(write)
            return result
        finally:
            writing.release()


def _acquire(lock: threading.Lock) -> None:
    """Wait for the table's turn; a statement cancelled while it waits stops waiting."""
    context = current_statement()
    while not lock.acquire(timeout=0.05):
        if context is not None and context.cancelled.is_set():
            raise RuntimeError("statement cancelled while waiting to commit")
