"""The local engine's mapped outputs: a table the run writes, mapped with `--table NAME=PATH`.

Its path decides its kind (`output_kind`): a .parquet file or a Delta folder, which keep its
column types, or a CSV / JSON file, which only a table written whole may replace. It is locked
(`lock`) before it is read (`load`) into the engine's in-memory catalog `mapped`, and saved back
(`save`) after each statement that writes it, whole or not at all. An error names the mapping,
says what to do, and that the answers already paid for are kept. The Delta readers here serve
mapped inputs too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from agentbatch.engines import output_lock, writable
from agentbatch.engines.base import ctrl_c_kept, error_line
from agentbatch.errors import ConfigError, MissingDependencyError, UsageError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

Full = tuple[str, str, str]  # catalog, schema, table

FILE_READERS = {
    ".csv": "read_csv_auto",
    ".tsv": "read_csv_auto",
    ".parquet": "read_parquet",
    ".pq": "read_parquet",
    ".json": "read_json_auto",
    ".jsonl": "read_json_auto",
    ".ndjson": "read_json_auto",
}
# Formats whose reader guesses the column types again, and what it gets wrong.
_GUESSED = {
    suffix: "(a text key comes back as a number, a typed answer as text)"
    if reader == "read_csv_auto"
    else "(a date-like text comes back as a date, an INT as a BIGINT)"
    for suffix, reader in FILE_READERS.items()
    if reader != "read_parquet"
}
MAPPED_CATALOG = "mapped"


def output_kind(name: str, source: object) -> str:
    """`parquet`, `delta` or `untyped` (CSV, JSON) for a mapped output; anything else is refused."""
    if not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"the output table {name} can only be mapped to a file path")
    path = Path(source)
    mapping = f"--table {name}={path}"
    suffix = path.suffix.lower()
    blocker = _in_the_way(path)
    if blocker is not None:
        raise ConfigError(
            f"{mapping}: cannot write the output there: {blocker} is a file, not a folder; map "
            "the output to a path in a folder"
        )
    if path.is_dir():
        if (path / "_delta_log").is_dir() or not any(path.iterdir()):
            return "delta"
        raise UsageError(
            f"{mapping}: the folder is not a Delta table (it has no _delta_log) and is not "
            "empty; map the output to a new folder or a .parquet file"
        )
    if suffix in _GUESSED:
        return "untyped"
    if FILE_READERS.get(suffix) == "read_parquet":
        return "parquet"
    if not suffix and not path.exists():
        return "delta"
    if not suffix:
        raise UsageError(
            f"{mapping}: the path is a file, and an output without an extension is a Delta "
            "folder; map the output to a .parquet file or a new folder"
        )
    raise UsageError(
        f"{mapping}: unsupported output type; map the output to a .parquet file or a Delta "
        "folder (a path without an extension)"
    )


def lock(full: Full, path: Path, holder: str) -> output_lock.OutputLock:
    """This run's lock on the output, taken before it is read, once the folders its save writes
    in are known to take a new file: a save refused there comes after the calls are paid for."""
    try:
        held = output_lock.hold(path.resolve(), holder)
    except OSError as err:  # its lock file, beside it, cannot be made: nor can it
        raise ConfigError(_cannot_write(_mapping(full, path), err)) from None
    try:
        for folder in _save_folders(path):
            writable.try_writing(folder, path.name)
    except OSError as err:
        held.release()
        raise ConfigError(_cannot_write(_mapping(full, path), err)) from None
    return held


def load(con: duckdb.DuckDBPyConnection, full: Full, path: Path, kind: str) -> str | None:
    """Load what the output's file holds into memory; nothing for a file still to be made.
    Returns why this run may replace the output whole but not read it (the error to raise), or
    None."""
    mapping = f"--table {'.'.join(full)}={path}"
    relation = f'{MAPPED_CATALOG}."{full[1]}"."{full[2]}"'
    _sql(con, f'CREATE SCHEMA IF NOT EXISTS {MAPPED_CATALOG}."{full[1]}"')
    if kind == "untyped":
        # Not even loaded: its types would be guesses. A table written whole may replace it.
        return (
            f"{mapping}: a job's output cannot be a {path.suffix.lower()} file: the next run "
            "reads it back, and such a file does not keep the output's column types "
            f"{_GUESSED[path.suffix.lower()]}; map the output to a .parquet file or a Delta "
            "folder"
        )
    if not _holds_a_table(path):  # a 0-byte file or an empty folder holds no rows to keep
        return None
    try:
        plain = delta_files_relation(path) if kind == "delta" else None
        if plain is not None:
            _sql(con, f"CREATE TABLE {relation} AS SELECT * FROM {plain}")
        elif kind == "delta":
            con.register("agentbatch_seed", delta_dataset(path))
            _sql(con, f"CREATE TABLE {relation} AS SELECT * FROM agentbatch_seed")
            con.unregister("agentbatch_seed")
        else:
            _sql(
                con,
                f"CREATE TABLE {relation} AS SELECT * FROM read_parquet({duck_literal(path)})",
            )
    except Exception as err:  # not Parquet, a damaged Delta log, ...
        raise UsageError(
            f"{mapping}: cannot read the output file: {error_line(err)}; repair it, or map "
            f"the output to a new path ({_KEPT})"
        ) from None
    if "request_fingerprint" not in _columns(con, f"SELECT * FROM {relation} LIMIT 0"):
        return (
            f"{mapping}: the file is not an agentbatch output table (it has no "
            "request_fingerprint column); map the output to a new file"
        )
    return None


def save(con: duckdb.DuckDBPyConnection, full: Full, path: Path) -> None:
    """Save the table to its mapped path, whole or not at all; a path that cannot be written
    is an error naming the mapping (the answers stay in the checkpoint for the next run)."""
    try:
        _write(con, full, path)
    except (MissingDependencyError, ConfigError):
        raise
    except Exception as err:  # OSError, DuckDB's IO errors, deltalake's DeltaError
        raise ConfigError(_cannot_write(_mapping(full, path), err)) from None


def remove(full: Full, path: Path, *, existed: bool) -> None:
    """The output's path as it was before the run created a table there (a table not kept)."""
    try:
        _remove_saved(path, existed=existed)
    except OSError as err:
        raise ConfigError(_cannot_write(_mapping(full, path), err)) from None


def _write(con: duckdb.DuckDBPyConnection, full: Full, path: Path) -> None:
    relation = f'{MAPPED_CATALOG}."{full[1]}"."{full[2]}"'
    if not _has_table(con, MAPPED_CATALOG, full[1], full[2]):
        _remove_saved(path, existed=False)  # dropped (DROP TABLE): its file goes too
        return
    suffix = path.suffix.lower()
    if suffix in FILE_READERS and not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fmt = {
            "read_csv_auto": "FORMAT CSV, HEADER",
            "read_parquet": "FORMAT PARQUET",
            "read_json_auto": "FORMAT JSON",
        }[FILE_READERS[suffix]]
        columns = _parquet_columns(con, relation) if fmt == "FORMAT PARQUET" else "*"
        try:
            _sql(con, f"COPY (SELECT {columns} FROM {relation}) TO {duck_literal(tmp)} ({fmt})")
            os.replace(tmp, path)  # atomic: a crash leaves the old file or the new one
        except BaseException:
            with contextlib.suppress(OSError):  # a new file the move could not place
                tmp.unlink(missing_ok=True)
            raise
    else:
        try:
            from deltalake import write_deltalake
        except ImportError:
            raise MissingDependencyError("deltalake", "local") from None
        # Streamed: the table is never whole in memory. A failed write commits no version.
        rows = con.sql(f"SELECT * FROM {relation}").to_arrow_reader(64 * 1024)
        try:
            _check_delta_types(full, path, rows.schema)
            write_deltalake(str(path), rows, mode="overwrite", schema_mode="overwrite")
        finally:
            rows.close()  # a write that failed part-way leaves DuckDB's result open otherwise


def _check_delta_types(full: Full, path: Path, schema: pa.Schema) -> None:
    """Refuse columns of a type Delta has none for (TIME, an interval), naming them: deltalake
    names the type only. The target is created, and so saved, before any call."""
    import pyarrow as pa
    from deltalake import Schema

    unstorable = []
    for field in schema:
        try:
            Schema.from_arrow(pa.schema([field]))
        except Exception:  # deltalake's own error class, by version
            unstorable.append(f"{field.name} ({field.type})")
    if unstorable:
        raise ConfigError(
            f"{_mapping(full, path)}: a Delta table cannot hold the column(s) "
            f"{', '.join(unstorable)}: cast them in `source.query` (a time of day to STRING, for "
            "one), or map the output to a Parquet file"
        )


def _parquet_columns(con: duckdb.DuckDBPyConnection, relation: str) -> str:
    """`*`, with 128-bit integers as DECIMAL(38,0): DuckDB writes them to Parquet as DOUBLE,
    which merges two keys past 2^53 into one (and a number column loses digits)."""
    wide = [
        name
        for name, type_name, *_ in con.execute(f"DESCRIBE {relation}").fetchall()
        if type_name in ("HUGEINT", "UHUGEINT")
    ]
    if not wide:
        return "*"
    names = [exp.to_identifier(name, quoted=True).sql("duckdb") for name in wide]
    casts = ", ".join(f"CAST({name} AS DECIMAL(38,0)) AS {name}" for name in names)
    return f"* REPLACE ({casts})"


def _remove_saved(path: Path, *, existed: bool) -> None:
    """Put a mapped output's path back as it was before the run created a table there: absent,
    or an empty file or folder still to be written."""
    if path.is_dir():
        shutil.rmtree(path)
        if existed:
            path.mkdir()
    elif existed:
        path.write_bytes(b"")
    else:
        path.unlink(missing_ok=True)


def delta_files_relation(path: Path) -> str | None:
    """The Delta table's current files read by DuckDB itself, when they are the whole table: no
    partition columns (their values are in the log, not the files) and reader version 1 (no
    deletion vectors, no column mapping), as the tables agentbatch writes are. Else None (read
    through deltalake's dataset). pyarrow decodes a whole row group at a time, and deltalake
    writes them a million rows long: a 3,000,000-row output took 1.2 GB to load that way, 0.36 GB
    this way."""
    try:
        from deltalake import DeltaTable
    except ImportError:
        raise MissingDependencyError("deltalake", "local") from None
    table = DeltaTable(str(path))
    files = table.file_uris()
    if (
        not files
        or any("://" in file for file in files)  # remote storage: deltalake reads it
        or table.metadata().partition_columns
        or table.protocol().min_reader_version > 1
    ):
        return None
    listed = ", ".join(duck_literal(file) for file in files)
    return f"read_parquet([{listed}], union_by_name = true)"


def delta_dataset(path: Path) -> Any:
    try:
        from deltalake import DeltaTable
    except ImportError:
        raise MissingDependencyError("deltalake", "local") from None
    return DeltaTable(str(path)).to_pyarrow_dataset()


def _mapping(full: Full, path: Path) -> str:
    return f"--table {'.'.join(full)}={path}"


def _save_folders(path: Path) -> list[Path]:
    """The folders a save of `path` makes files in: a Delta folder and its log, or the first
    existing folder above a file or a Delta folder still to be made (the save makes the rest)."""
    if path.is_dir():
        log = path / "_delta_log"
        return [path, log] if log.is_dir() else [path]
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    return [parent]


def _in_the_way(path: Path) -> Path | None:
    """The file that stands where a folder of `path` must be (`out` in `out/x.parquet`)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


# Said where a mapped output cannot be read or written: the run's checkpoint keeps what it paid for.
_KEPT = "the answers already received are kept: the next run writes them without sending them again"
# What to do, by the errno of a write that failed.
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def _cannot_write(mapping: str, err: BaseException) -> str:
    """A failed save in the user's terms: the mapping, why, what to do, and that nothing paid
    for is lost (the run's answers are in its checkpoint)."""
    number = getattr(err, "errno", None)
    if not isinstance(number, int):  # DuckDB and deltalake give the errno in their text only
        found = re.search(r'errno"?\s*:\s*"?(\d+)|os error (\d+)', str(err))
        number = int(found.group(1) or found.group(2)) if found else None
    if number is None:  # or only its words: `Cannot open file "...": Permission denied`
        number = next((n for n in (*_FULL, *_DENIED) if os.strerror(n) in str(err)), None)
    reason = os.strerror(number) if number else error_line(err)
    if number in _FULL:
        todo = "free some space, or map the output to another disk"
    elif number in _DENIED:
        todo = "map the output to a folder this user can write"
    else:
        todo = "map the output to a path that can be written"
    return f"{mapping}: cannot write the output: {reason}; {todo} ({_KEPT})"


def _holds_a_table(path: Path) -> bool:
    """False for a path still to be written: absent, a 0-byte file or an empty folder."""
    if path.is_dir():
        return any(path.iterdir())
    return path.is_file() and path.stat().st_size > 0


def duck_literal(path: str | Path) -> str:
    return exp.Literal.string(str(path)).sql(dialect="duckdb")


def _sql(con: duckdb.DuckDBPyConnection, statement: str, params: list[Any] | None = None) -> Any:
    """Run one statement and drain its result (DuckDB refuses new work until then)."""
    with ctrl_c_kept():
        return con.execute(statement, params or None).fetchall()


def _has_table(con: duckdb.DuckDBPyConnection, catalog: str, schema: str, name: str) -> bool:
    found = _sql(
        con,
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE database_name = ? AND schema_name = ? AND table_name = ?",
        [catalog, schema, name],
    )
    return bool(found and found[0][0])


def _columns(con: duckdb.DuckDBPyConnection, query: str) -> list[str]:
    return [column[0] for column in con.execute(query).description or []]
