"""The checkpoint of REST-fallback runs: every paid answer, before anything else.

The target table decides what is done; the ledger only saves calls. A run selects the rows the
target does not hold (key and current request fingerprint), and for each of them the ledger may
offer an answer already paid for under the same fingerprint: it is written from here instead of
calling the agent again (`reuse`). What the ledger holds never decides which rows are written:
only the rows of this run's selection are, whatever the ledger holds and whoever wrote it.

One SQLite file (WAL mode) per target and output table. Each group commit of completed output rows
is one Arrow IPC blob in `batches`, tagged with the run that recorded it; `answers` maps each key
(canonical JSON of the key value) to its latest answer: request fingerprint, ok / transient error /
permanent error, when it arrived, and where the row lives. A full refresh reuses only answers that
arrived since it began (`refresh_since` in `meta`, kept until a run finishes), so a refresh that
stopped is continued by its next run, not paid again. A run writes the rows it recorded
(`rows_of_run`); a run that was killed before writing leaves them for the next run to reuse. A
SIGKILL at any moment loses at most the calls in flight and the answers the bulk runner holds for
its next group commit (those received within its commit window, `bulk.COMMIT_WINDOW_S`): a commit
is atomic, and SQLite recovers a torn WAL write by discarding it. A file that is not a sound SQLite
database is moved aside (`<name>.corrupt-<time>`) with a warning and the run starts from an empty
ledger: the worst case is paying for rows again, never a wrong or missing row in the target. A
file SQLite cannot use now (a disk I/O error, a lock, permissions: a network or FUSE mount) is no
damage: it is left as it is, and the run stops with a configuration error naming it.

One run at a time: a Ledger holds an exclusive lock on `<file>.lock` while open, so two runs of
the same job (an overlapping schedule) cannot both send the same rows; the second fails at once.

Durability is `synchronous=NORMAL`: safe against the process dying, not against the machine losing
power mid-commit (then the last commits may be lost, and re-sent).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agentbatch import file_lock
from agentbatch.agent.calls import canonical_json
from agentbatch.agent.rows import output_schema as rows_schema
from agentbatch.agent.rows import passthrough_of
from agentbatch.errors import ConfigError, EngineError
from agentbatch.results import FINGERPRINT_COLUMN, RESULT_COLUMN_NAMES, TRANSIENT_ERROR

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches(
    id INTEGER PRIMARY KEY, ipc BLOB, rows INTEGER NOT NULL, written INTEGER NOT NULL DEFAULT 0,
    run TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS answers(
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, ok INTEGER NOT NULL,
    batch_id INTEGER NOT NULL, row INTEGER NOT NULL, transient INTEGER NOT NULL DEFAULT 0,
    answered_us INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_batch ON answers(batch_id);
"""
# Columns added since the first release; an older file gains them on open.
_MIGRATIONS = (
    ("batches", "run", "ALTER TABLE batches ADD COLUMN run TEXT NOT NULL DEFAULT ''"),
    ("answers", "transient", "ALTER TABLE answers ADD COLUMN transient INTEGER NOT NULL DEFAULT 0"),
    (
        "answers",
        "answered_us",
        "ALTER TABLE answers ADD COLUMN answered_us INTEGER NOT NULL DEFAULT 0",
    ),
)
# Stored blobs read while looking for reusable answers, kept for the next lookups.
_BLOB_CACHE = 4
_LOOKUP_CHUNK = 900
_UPSERT = (
    "INSERT INTO answers(key, fingerprint, ok, batch_id, row, transient, answered_us) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET fingerprint = excluded.fingerprint, ok = excluded.ok, "
    "batch_id = excluded.batch_id, row = excluded.row, transient = excluded.transient, "
    "answered_us = excluded.answered_us"
)
# meta key: when the full refresh under way began (microseconds since the epoch).
_REFRESH_SINCE = "refresh_since"
# meta key: the full refresh (its `refresh_since`) that has asked every selected row once, and is
# unfinished only because rows whose new call failed transiently kept their earlier answer.
_REFRESH_REACHED = "refresh_reached"


def refresh_began(path: Path) -> int | None:
    """`Ledger.pending_refresh` of the ledger at `path`, read as a reader: no lock taken, nothing
    checked or changed, no ledger created (a `plan`, or a run deciding its SQL before it opens
    the ledger, must not refuse or alter the run holding it; SQLite may add its -wal and -shm
    files beside an existing one). None when there is no ledger or it cannot be read (a damaged
    one is set aside when a run opens it, and its refresh with it)."""
    if not path.is_file():
        return None
    try:
        with _reading(path) as conn:
            return _refresh_since(conn)
    except sqlite3.Error:
        return None


def refresh_reached(path: Path) -> bool:
    """Whether the ledger at `path` holds an unfinished full refresh that has asked every row
    once (`Ledger.keep_refresh`): what is left of it are the rows that kept their earlier
    answer, and any run continues it. Read as `refresh_began` reads."""
    if not path.is_file():
        return False
    try:
        with _reading(path) as conn:
            return _refresh_reached(conn)
    except sqlite3.Error:
        return False


def holds_answers(path: Path) -> bool:
    """Whether the ledger at `path` holds any answer, read as `refresh_began` reads (False when
    it cannot be read: its answers are then paid again, with a warning)."""
    if not path.is_file():
        return False
    try:
        with _reading(path) as conn:
            return conn.execute("SELECT 1 FROM answers LIMIT 1").fetchone() is not None
    except sqlite3.Error as err:
        log.warning("ledger %s cannot be read (%s): its answers are not reused here", path, err)
        return False


def stored_answers(
    path: Path, key: str, keys: Iterable[pa.Array | pa.ChunkedArray]
) -> Iterator[pa.Table]:
    """The stored row of each key of `keys` that the ledger at `path` holds an answer for (its
    latest), a stored batch's rows at a time, read as `refresh_began` reads in one read
    transaction (a snapshot the run holding the ledger cannot tear). Each row is checked against
    its answer entry as `Ledger` checks it: damage is skipped, so its rows are paid again."""
    try:
        with _reading(path) as conn:
            conn.execute("BEGIN")
            blobs: dict[int, pa.Table | None] = {}
            for column in keys:
                wanted = canonical_keys(column)
                for start in range(0, len(wanted), _LOOKUP_CHUNK):
                    chunk = wanted[start : start + _LOOKUP_CHUNK]
                    found = conn.execute(
                        "SELECT batch_id, row, key, fingerprint, ok FROM answers "
                        f"WHERE key IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                    by_batch: dict[int, list[tuple[int, str, str, int]]] = {}
                    for batch_id, row, k, fingerprint, ok in found:
                        by_batch.setdefault(batch_id, []).append((row, k, fingerprint, ok))
                    for batch_id, entries in sorted(by_batch.items()):
                        if batch_id not in blobs:
                            if len(blobs) >= _BLOB_CACHE:  # neighbouring keys share batches
                                blobs.pop(next(iter(blobs)))
                            blobs[batch_id] = _stored_batch(conn, path, batch_id)
                        stored = blobs[batch_id]
                        picked = None if stored is None else _entries_of(stored, entries, key)
                        if picked is not None and picked.num_rows:
                            yield picked
    except sqlite3.Error as err:
        log.warning("ledger %s cannot be read (%s): its answers are not reused here", path, err)


def answered_at(path: Path, keys: list[str]) -> dict[str, int]:
    """When the ledger at `path` received its answer for each of `keys` (canonical keys) that it
    holds one for, in microseconds since the epoch; read as `refresh_began` reads."""
    held: dict[str, int] = {}
    with _reading(path) as conn:
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            held.update(
                conn.execute(
                    "SELECT key, answered_us FROM answers "
                    f"WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
            )
    return held


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection: no lock taken, nothing created or changed."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
    conn.text_factory = lambda data: data.decode("utf-8", "replace")
    try:
        yield conn
    finally:
        conn.close()


def _stored_batch(conn: sqlite3.Connection, path: Path, batch_id: int) -> pa.Table | None:
    blob = conn.execute("SELECT ipc FROM batches WHERE id = ?", (batch_id,)).fetchone()
    try:
        return _from_ipc(blob[0]) if blob and blob[0] is not None else None
    except Exception as err:  # damaged: its rows are paid again
        log.warning("ledger %s: batch %d unreadable (%s)", path, batch_id, err)
        return None


def _entries_of(
    stored: pa.Table, entries: list[tuple[int, str, str, int]], key: str
) -> pa.Table | None:
    """The stored rows the answer entries (row, key, fingerprint, ok) point to, those that are
    what their entry says."""
    import pyarrow as pa

    inside = [e for e in entries if 0 <= e[0] < stored.num_rows]
    name = key_column(stored.column_names, key)
    if not inside or name is None or "error" not in stored.column_names:
        return None
    picked = stored.take(pa.array([e[0] for e in inside], type=pa.int64()))
    if name != key:  # stored under the key's earlier spelling: read as the job's key
        picked = picked.rename_columns([key if n == name else n for n in picked.column_names])
    fingerprints = (
        picked.column(FINGERPRINT_COLUMN).to_pylist()
        if FINGERPRINT_COLUMN in picked.column_names
        else [None] * picked.num_rows
    )
    same = [
        (k, fp or "", bool(ok)) == (kk, ff or "", good)
        for (_, k, fp, ok), kk, ff, good in zip(
            inside,
            canonical_keys(picked.column(key)),
            fingerprints,
            picked.column("error").is_null().to_pylist(),
            strict=True,
        )
    ]
    if not all(same):
        picked = picked.filter(pa.array(same, type=pa.bool_()))
    return picked


def _refresh_since(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT v FROM meta WHERE k = ?", (_REFRESH_SINCE,)).fetchone()
    return int(row[0]) if row is not None and str(row[0]).isdigit() else None


def _refresh_reached(conn: sqlite3.Connection) -> bool:
    since = _refresh_since(conn)
    row = conn.execute("SELECT v FROM meta WHERE k = ?", (_REFRESH_REACHED,)).fetchone()
    return since is not None and row is not None and str(row[0]) == str(since)


def key_column(names: Sequence[str], key: str) -> str | None:
    """The column of `names` that is the key `key`: of that name, else of that name in another
    case (Databricks, Spark and DuckDB resolve column names case-insensitively: a job whose key
    became `Review_ID` reads the same `review_id` column); None when there is none."""
    if key in names:
        return key
    lowered = key.lower()
    return next((name for name in names if name.lower() == lowered), None)


# json.dumps with any option builds a new JSONEncoder on every call (several microseconds):
# per row, one made once gives the same text.
_KEY_JSON = json.JSONEncoder(ensure_ascii=False)


def canonical_keys(column: pa.Array | pa.ChunkedArray) -> list[str]:
    """Canonical JSON text of every key value (the ledger's and the sink's identity of a row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_integer(kind):
        return ["null" if v is None else v for v in pc.cast(column, pa.string()).to_pylist()]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        dumps = _KEY_JSON.encode  # json.dumps(v, ensure_ascii=False)
        return [dumps(v) for v in column.to_pylist()]
    return [canonical_json(v) for v in column.to_pylist()]


class Ledger:
    def __init__(self, path: Path, *, key: str, run_id: str = "run") -> None:
        self.path = Path(path)
        self.key = key
        self.run_id = run_id
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = _exclusive_lock(self.path)
        except OSError as e:  # the state folder (--state-dir) cannot be made or written
            raise ConfigError(
                f"cannot make the checkpoint {self.path}: {e.strerror or e}. {_LOCAL_DISK}"
            ) from None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._writer = self._open_sound()
            self._reader = self._connect()
        except sqlite3.Error as e:
            if self._lock_file is not None:
                self._lock_file.close()
            if not _cannot_use(e):
                raise
            raise ConfigError(
                f"cannot use the checkpoint {self.path}: {e}. {_LOCAL_DISK}"
            ) from None
        self._check_key()
        self._has_answers = self._scalar("SELECT count(*) FROM answers") > 0
        self._blobs: dict[int, pa.Table] = {}
        # Batches this object appended (id -> rows): their answers were written in the same
        # transaction, from the same arrays.
        self._appended: dict[int, int] = {}
        # Only answers received at or after this time (microseconds) are reused: a full refresh.
        self.answered_since: int | None = None
        # Set once a commit is refused (the disk full, an I/O error): this run's rows from then
        # on are kept here, in memory, for the target's write (`rows_of_run`).
        self.refused: CheckpointRefused | None = None
        self._unsaved: list[pa.Table] = []
        # Called with each commit of this run's rows once it is in: an engine copies them where a
        # lost disk cannot take them (the spark target's checkpoint folder on a volume).
        self.copy_rows: Callable[[pa.RecordBatch | pa.Table], None] | None = None

    # --- opening ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=60.0
        )
        # Damaged text must not raise on read: it decodes to something that matches nothing.
        conn.text_factory = lambda data: data.decode("utf-8", "replace")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _open_sound(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            # integrity_check, not quick_check: a damaged index would hide answers from rows_of_run().
            verdict = conn.execute("PRAGMA integrity_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                raise sqlite3.DatabaseError(
                    f"integrity_check: {verdict[0] if verdict else 'no result'}"
                )
            conn.executescript(_SCHEMA)
            _migrate(conn)
            return conn
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            # Not a sound SQLite file (a garbled schema surfaces as a decode error).
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            if _cannot_use(e):
                raise  # the disk, a lock or permissions: the file may be sound, leave it be
            moved = self._quarantine()
            log.warning(
                "ledger %s is damaged (%s); moved it to %s and starting an empty ledger: "
                "rows it recorded will be sent again",
                self.path,
                e,
                moved,
            )
            conn = self._connect()
            conn.executescript(_SCHEMA)
            return conn

    def _quarantine(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                source.replace(Path(str(target) + suffix))
        return target

    def _check_key(self) -> None:
        row = self._writer.execute("SELECT v FROM meta WHERE k = 'key'").fetchone()
        if row is None:
            self._writer.execute("INSERT INTO meta(k, v) VALUES ('key', ?)", (self.key,))
        elif row[0].lower() == self.key.lower():
            # The same column in another case (engines resolve names case-insensitively): its
            # answers are this job's; the stored rows are read by either spelling.
            if row[0] != self.key:
                self._writer.execute("UPDATE meta SET v = ? WHERE k = 'key'", (self.key,))
        else:
            log.warning(
                "ledger %s was keyed by %r, this job by %r: discarding its answers",
                self.path,
                row[0],
                self.key,
            )
            with self._transaction():
                self._writer.execute("DELETE FROM answers")
                self._writer.execute("DELETE FROM batches")
                self._writer.execute("UPDATE meta SET v = ? WHERE k = 'key'", (self.key,))

    # --- the API ----------------------------------------------------------------------------

    @property
    def has_answers(self) -> bool:
        """Whether any answer is recorded. A run that starts without any need not look rows up:
        source keys are unique, so no row can be answered before it is sent."""
        return self._has_answers

    def begin_refresh(self, since: int) -> None:
        """Record a full refresh begun at `since` (microseconds), unless one is unfinished: until
        a run finishes, answers received since then are that refresh's own, and its next run
        reuses them instead of paying for them again."""
        self._writer.execute(
            "INSERT OR IGNORE INTO meta(k, v) VALUES (?, ?)", (_REFRESH_SINCE, str(since))
        )

    def pending_refresh(self) -> int | None:
        """When the full refresh a stopped run left unfinished began, if there is one."""
        with self._read_lock:
            return _refresh_since(self._reader)

    def end_refresh(self) -> None:
        """A run finished: no refresh is left to continue (done, or given up for a plain run)."""
        self._writer.execute(
            "DELETE FROM meta WHERE k IN (?, ?)", (_REFRESH_SINCE, _REFRESH_REACHED)
        )

    def keep_refresh(self, *, reached: bool) -> None:
        """A run of the full refresh under way finished, but rows whose new call failed
        transiently kept their earlier answer: the refresh stays unfinished for them.
        `reached`: it has now asked every selected row once, so what is left are those rows
        only, and the next run, plain or not, continues it (`refresh_reached`)."""
        if reached:
            with self._read_lock:
                since = _refresh_since(self._reader)
            if since is not None:
                self._writer.execute(
                    "INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)",
                    (_REFRESH_REACHED, str(since)),
                )

    def refresh_reached(self) -> bool:
        """`refresh_reached` of this ledger."""
        with self._read_lock:
            return _refresh_reached(self._reader)

    def reuse(
        self,
        batch: pa.RecordBatch,
        response_type: pa.DataType | None,
        *,
        retry_errors: bool,
    ) -> tuple[pa.RecordBatch | None, pa.RecordBatch]:
        """Split input rows into (output rows answered before under the same fingerprint, the rest).

        An answer is reused when it is ok, or a permanent error and not `retry_errors`; a transient
        error never is. Reused rows take the key and passthrough columns of `batch` (the source as
        it is now) and the stored result columns, and are recorded for this run."""
        import pyarrow as pa

        if not self._has_answers or batch.num_rows == 0:
            return None, batch
        output_schema = rows_schema(passthrough_of(batch).schema, response_type)
        keys = canonical_keys(batch.column(self.key))
        fingerprints = batch.column(FINGERPRINT_COLUMN).to_pylist()
        found: dict[int, list[tuple[int, int]]] = {}  # batch id -> [(input row, stored row)]
        for i, batch_id, row in self._lookup(keys, fingerprints, retry_errors):
            found.setdefault(batch_id, []).append((i, row))
        taken: list[int] = []
        parts: list[pa.Table] = []
        for batch_id, pairs in found.items():
            stored = self._stored_results(batch_id)
            if stored is None:
                continue
            rows_ok = [(i, r) for i, r in pairs if 0 <= r < stored.num_rows]
            picked = stored.take(pa.array([r for _, r in rows_ok], type=pa.int64()))
            # The stored row must be the answer the index says it is (damage is never reused).
            stored_key = key_column(picked.column_names, self.key)
            if stored_key is None:
                continue
            same = [
                k == keys[i] and fp == fingerprints[i]
                for (i, _), k, fp in zip(
                    rows_ok,
                    canonical_keys(picked.column(stored_key)),
                    picked.column(FINGERPRINT_COLUMN).to_pylist(),
                    strict=True,
                )
            ]
            good = [p for p, keep in zip(rows_ok, same, strict=True) if keep]
            if not good:
                continue
            if len(good) != len(rows_ok):
                picked = stored.take(pa.array([r for _, r in good], type=pa.int64()))
            indices = pa.array([i for i, _ in good], type=pa.int64())
            results = _results_as(picked, output_schema)
            if results is None:
                continue  # stored under another response type: not this job's answer
            passthrough = batch.take(indices)
            columns = [
                passthrough.column(f.name)
                for f in output_schema
                if f.name not in RESULT_COLUMN_NAMES
            ]
            table = pa.Table.from_arrays([*columns, *results], schema=output_schema)
            parts.append(table)
            taken.extend(i for i, _ in good)
        if not parts:
            return None, batch
        reused = pa.concat_tables(parts).combine_chunks()
        self.append(reused)
        keep = [True] * batch.num_rows
        for i in taken:
            keep[i] = False
        mask = pa.array(keep, type=pa.bool_())
        merged = reused.to_batches()
        return (merged[0] if len(merged) == 1 else pa.concat_batches(merged)), batch.filter(mask)

    def reusable(self, batch: pa.RecordBatch, *, retry_errors: bool) -> list[bool]:
        """Which input rows `reuse` would answer from the ledger, recording nothing (what an
        estimate counts; the stored rows are not read)."""
        if not self._has_answers or batch.num_rows == 0:
            return [False] * batch.num_rows
        keys = canonical_keys(batch.column(self.key))
        fingerprints = batch.column(FINGERPRINT_COLUMN).to_pylist()
        found = [False] * batch.num_rows
        for i, _, _ in self._lookup(keys, fingerprints, retry_errors):
            found[i] = True
        return found

    def append(self, rows: pa.RecordBatch | pa.Table, *, run: str | None = None) -> None:
        """Record completed output rows of this run (or of `run`: answers of another run, not
        this run's to write) in one transaction; the latest per key wins."""
        if rows.num_rows == 0:
            return
        if self.refused is not None:
            self._keep_unsaved(rows, run)
            return
        try:
            self._commit(rows, run)
        except sqlite3.Error as e:
            if not _cannot_use(e):
                raise
            self._keep_unsaved(rows, run)
            self.refused = CheckpointRefused(
                f"cannot keep answers in the checkpoint {self.path}: {e}. The run stops: the "
                f"answers received are written to the output table, nothing more is sent. "
                f"{_LOCAL_DISK}, with free space"
            )
            raise self.refused from None
        if self.copy_rows is not None and run in (None, self.run_id):
            self.copy_rows(rows)

    def _commit(self, rows: pa.RecordBatch | pa.Table, run: str | None) -> None:
        keys = canonical_keys(rows.column(self.key))
        fingerprints = rows.column(FINGERPRINT_COLUMN).to_pylist()
        errors = rows.column("error").to_pylist()
        answered = answered_us(rows)
        blob = _to_ipc(rows)
        with self._write_lock, self._transaction():
            cursor = self._writer.execute(
                "INSERT INTO batches(ipc, rows, run) VALUES (?, ?, ?)",
                (blob, rows.num_rows, self.run_id if run is None else run),
            )
            batch_id = cursor.lastrowid
            assert batch_id is not None
            self._writer.executemany(
                _UPSERT,
                (
                    (
                        k,
                        fp or "",
                        int(error is None),
                        batch_id,
                        i,
                        int(error is not None and error.startswith(TRANSIENT_ERROR)),
                        at or 0,
                    )
                    for i, (k, fp, error, at) in enumerate(
                        zip(keys, fingerprints, errors, answered, strict=True)
                    )
                ),
            )
        self._appended[batch_id] = rows.num_rows
        self._has_answers = True

    def _keep_unsaved(self, rows: pa.RecordBatch | pa.Table, run: str | None) -> None:
        import pyarrow as pa

        if run is None or run == self.run_id:  # another run's answers are not this run's to write
            self._unsaved.append(
                rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
            )

    def rows_of_run(self, max_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        """This run's recorded rows that are still the latest answer for their key, in chunks of
        at most `max_rows`: what the sink writes."""
        import pyarrow as pa

        with self._read_lock:
            ids = [
                r[0]
                for r in self._reader.execute(
                    "SELECT id FROM batches WHERE run = ? ORDER BY id", (self.run_id,)
                ).fetchall()
            ]
        schema = self._latest_schema(ids)
        pending: list[pa.Table] = []
        pending_rows = 0
        for batch_id in ids:
            table = self._live_rows(batch_id)
            if table is None or table.num_rows == 0:
                continue
            pending.append(_conform(table, schema) if schema is not None else table)
            pending_rows += table.num_rows
            while pending_rows >= max_rows:
                merged = pa.concat_tables(pending)
                yield from merged.slice(0, max_rows).combine_chunks().to_batches()
                rest = merged.slice(max_rows)
                pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if pending_rows:
            yield from pa.concat_tables(pending).combine_chunks().to_batches()
        # What the checkpoint refused (answered after the keys above: a later answer).
        for table in self._unsaved:
            yield from (_conform(table, schema) if schema is not None else table).to_batches()

    def transient_of_run(self) -> set[tuple[str, str]]:
        """(canonical key, fingerprint) of this run's recorded rows that are transient failures
        and still the latest answer for their key (read from the index, no stored row)."""
        with self._read_lock:
            found = self._reader.execute(
                "SELECT a.key, a.fingerprint FROM answers a JOIN batches b ON a.batch_id = b.id "
                "WHERE b.run = ? AND a.transient = 1",
                (self.run_id,),
            ).fetchall()
        return {(str(key), str(fingerprint)) for key, fingerprint in found}

    def compact(self) -> None:
        """Drop stored batches that no latest answer points to any more (after a run's write)."""
        with self._write_lock, self._transaction():
            self._writer.execute(
                "DELETE FROM batches WHERE NOT EXISTS "
                "(SELECT 1 FROM answers WHERE answers.batch_id = batches.id)"
            )
        self._blobs.clear()

    def stats(self) -> dict[str, int]:
        with self._read_lock:
            answers, ok, transient = self._reader.execute(
                "SELECT count(*), coalesce(sum(ok), 0), coalesce(sum(transient), 0) FROM answers"
            ).fetchone()
            this_run = self._reader.execute(
                "SELECT count(*) FROM answers a JOIN batches b ON a.batch_id = b.id "
                "WHERE b.run = ?",
                (self.run_id,),
            ).fetchone()[0]
            batches = self._reader.execute("SELECT count(*) FROM batches").fetchone()[0]
        return {
            "answers": int(answers),
            "ok": int(ok),
            "errors": int(answers) - int(ok),
            "transient": int(transient),
            "this_run": int(this_run),
            "batches": int(batches),
        }

    def close(self) -> None:
        for conn in (self._reader, self._writer):
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------

    def _lookup(
        self, keys: list[str], fingerprints: list[str | None], retry_errors: bool
    ) -> Iterator[tuple[int, int, int]]:
        """(input row, batch id, stored row) of every input row with a reusable answer: same
        fingerprint; ok, or a permanent error and not `retry_errors` (a transient error never);
        received at or after `answered_since` when that is set."""
        position = {k: i for i, k in enumerate(keys)}
        since = self.answered_since or 0
        with self._read_lock:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._reader.execute(
                    "SELECT key, fingerprint, ok, transient, batch_id, row, answered_us "
                    f"FROM answers WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, fingerprint, ok, transient, batch_id, row, answered_us in rows:
                    i = position.get(key)
                    if i is None or fingerprints[i] != fingerprint or answered_us < since:
                        continue
                    if ok or (not transient and not retry_errors):
                        yield i, batch_id, row

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._read_lock:
            row = self._reader.execute(sql, params).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _transaction(self) -> _Transaction:
        return _Transaction(self._writer)

    def _live_rows(self, batch_id: int) -> pa.Table | None:
        """The rows of a stored batch that are still the latest answer for their key.

        Damage is dropped, never fatal: an unreadable blob forgets all its answers, and a row
        whose key, fingerprint or outcome disagrees with its answer entry forgets that answer
        (both are re-sent).
        """
        import pyarrow as pa

        whole = self._whole_own_batch(batch_id)
        if whole is not None:
            return whole
        with self._read_lock:
            blob_row = self._reader.execute(
                "SELECT ipc FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
            entries = self._reader.execute(
                "SELECT key, fingerprint, ok, row FROM answers WHERE batch_id = ? ORDER BY row",
                (batch_id,),
            ).fetchall()
        if not entries or blob_row is None or blob_row[0] is None:
            return None
        rows = [entry[3] for entry in entries]
        try:
            table = _from_ipc(blob_row[0])
            if rows[0] < 0 or rows[-1] >= table.num_rows:
                raise ValueError("an answer points outside its batch")
            if rows != list(range(table.num_rows)):
                table = table.take(pa.array(rows, type=pa.int64()))
            stored = zip(
                canonical_keys(table.column(key_column(table.column_names, self.key) or self.key)),
                table.column(FINGERPRINT_COLUMN).to_pylist(),
                table.column("error").is_null().to_pylist(),
                strict=True,
            )
            wrong = [
                i
                for i, ((key, fingerprint, ok, _), (k, fp, good)) in enumerate(
                    zip(entries, stored, strict=True)
                )
                if (key, fingerprint, bool(ok)) != (k, fp or "", good)
            ]
        except Exception as e:  # a damaged blob must not stop the sink; its rows are re-sent
            log.warning(
                "ledger batch %d is unreadable (%s); its rows will be sent again", batch_id, e
            )
            self._forget(batch_id, rows)
            return None
        if wrong:
            log.warning(
                "ledger batch %d: %d answer(s) do not match their rows; they will be sent again",
                batch_id,
                len(wrong),
            )
            self._forget(batch_id, [rows[i] for i in wrong])
            keep = sorted(set(range(len(rows))) - set(wrong))
            table = table.take(pa.array(keep, type=pa.int64()))
        return table

    def _whole_own_batch(self, batch_id: int) -> pa.Table | None:
        """A batch this object appended whose every row is still the latest answer (one answer
        per row, none moved or forgotten since): read without comparing each row with its
        answer, which the same transaction wrote from the same arrays. None: the full check."""
        rows = self._appended.get(batch_id)
        if rows is None:
            return None
        with self._read_lock:
            count, first, last = self._reader.execute(
                "SELECT count(*), min(row), max(row) FROM answers WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            blob_row = self._reader.execute(
                "SELECT ipc FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
        if count != rows or first != 0 or last != rows - 1 or blob_row is None:
            return None
        try:
            table = _from_ipc(blob_row[0])
        except Exception:  # damaged since: the full check forgets its answers
            return None
        return table if table.num_rows == rows else None

    def _stored_results(self, batch_id: int) -> pa.Table | None:
        """A stored batch (cached: neighbouring input rows tend to live in the same blobs)."""
        cached = self._blobs.get(batch_id)
        if cached is not None:
            return cached
        with self._read_lock:
            row = self._reader.execute(
                "SELECT ipc FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            table = _from_ipc(row[0])
        except Exception as e:  # a damaged blob is never reused; its rows are sent again
            log.warning(
                "ledger batch %d is unreadable (%s); its rows will be sent again", batch_id, e
            )
            return None
        if len(self._blobs) >= _BLOB_CACHE:
            self._blobs.pop(next(iter(self._blobs)))
        self._blobs[batch_id] = table
        return table

    def _forget(self, batch_id: int, rows: list[int]) -> None:
        # By position, not by key: a damaged key may not even read back as what is stored.
        with self._write_lock, self._transaction():
            self._writer.executemany(
                "DELETE FROM answers WHERE batch_id = ? AND row = ?", ((batch_id, r) for r in rows)
            )

    def _latest_schema(self, ids: list[int]) -> pa.Schema | None:
        for batch_id in reversed(ids):
            with self._read_lock:
                row = self._reader.execute(
                    "SELECT ipc FROM batches WHERE id = ?", (batch_id,)
                ).fetchone()
            if row and row[0] is not None:
                try:
                    return _schema_of(row[0])
                except Exception:  # an unreadable blob is dealt with in _live_rows
                    continue
        return None


# SQLite's result codes (and, before Python 3.11, its messages) for a file that cannot be used now
# (the disk, a lock, permissions), as opposed to one that is damaged: moving a sound ledger aside
# would lose the answers it holds, and the next attempt would fail alike.
_CANNOT_USE_CODES = (
    "SQLITE_IOERR",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_PERM",
    "SQLITE_NOLFS",
    "SQLITE_AUTH",
)
_CANNOT_USE_WORDS = (
    "disk I/O error",
    "is locked",
    "readonly database",
    "disk is full",
    "unable to open database file",
    "access permission denied",
)


class CheckpointRefused(ConfigError):
    """A commit the checkpoint's disk refused mid-run: the run stops, its answers are kept in
    memory and written to the target."""


_LOCAL_DISK = (
    "It is an SQLite database, which needs a local disk (it fails on network and FUSE mounts "
    "such as /Workspace, /Volumes and /dbfs): set state_dir (--state-dir) to a local folder"
)


def _cannot_use(error: BaseException) -> bool:
    name = getattr(error, "sqlite_errorname", None)  # Python 3.11+
    if name:
        return str(name).startswith(_CANNOT_USE_CODES)
    return isinstance(error, sqlite3.OperationalError) and any(
        words in str(error) for words in _CANNOT_USE_WORDS
    )


def answered_us(rows: pa.RecordBatch | pa.Table) -> list[int | None]:
    """When each row was answered, in microseconds since the epoch (None where unknown)."""
    import pyarrow as pa

    if "answered_at" not in rows.schema.names:
        return [None] * rows.num_rows
    column = rows.column("answered_at")
    if not pa.types.is_timestamp(column.type):
        return [None] * rows.num_rows
    micros = column.cast(pa.timestamp("us", tz=column.type.tz), safe=False)
    answered: list[int | None] = micros.cast(pa.int64()).to_pylist()
    return answered


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file of an earlier release up to the current schema (then index the new column)."""
    for table, column, statement in _MIGRATIONS:
        names = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in names:
            conn.execute(statement)
    conn.execute("CREATE INDEX IF NOT EXISTS batches_by_run ON batches(run)")


def _results_as(stored: pa.Table, schema: pa.Schema) -> list[pa.ChunkedArray] | None:
    """The stored result columns in `schema`'s types, or None when they cannot take them."""
    import pyarrow as pa

    columns = []
    for name in RESULT_COLUMN_NAMES:
        want = schema.field(name).type
        if name not in stored.column_names:
            columns.append(pa.chunked_array([pa.nulls(stored.num_rows, want)]))
            continue
        column = stored.column(name)
        if column.type != want:
            try:
                column = column.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                return None
        columns.append(column)
    return columns


def _exclusive_lock(path: Path) -> IO[bytes] | None:
    """Lock `<path>.lock` for this process, or raise EngineError naming the run that holds it
    (as a second run writing one output is refused: exit 5)."""
    try:
        return file_lock.take(Path(str(path) + ".lock"))
    except file_lock.LockHeld as held:
        raise EngineError(
            f"ledger {path} is in use by another run of this job's output ({held.holder}); wait "
            "for it to finish"
        ) from None


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _ipc_options() -> Any:
    import pyarrow as pa

    try:
        return pa.ipc.IpcWriteOptions(compression="zstd")
    except (ValueError, pa.ArrowException):  # pragma: no cover - pyarrow built without zstd
        return pa.ipc.IpcWriteOptions()


def _to_ipc(rows: pa.RecordBatch | pa.Table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema, options=_ipc_options()) as writer:
        writer.write(rows)
    return bytes(sink.getvalue().to_pybytes())


def _from_ipc(blob: bytes) -> pa.Table:
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
    # Damaged bytes can still decode; full validation catches bad offsets and invalid UTF-8.
    table.validate(full=True)
    return table


def _schema_of(blob: bytes) -> pa.Schema:
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(blob)).schema


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Align a stored batch with the latest schema (a job may have changed its columns)."""
    import pyarrow as pa

    if table.schema.equals(schema):
        return table
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    column = pa.nulls(table.num_rows, field.type)
            columns.append(column)
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
