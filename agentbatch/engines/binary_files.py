"""`read_files(<path>, format => 'binaryFile')` on engines without Databricks' `read_files`.

On Databricks, `read_files` with `format => 'binaryFile'` lists a volume folder (or one file) as
rows of `path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY`, skipping hidden
files (names starting with `_` or `.`), as Spark's binary file source does. Locally the same job
reads a folder:

- DuckDB (`local`): the folder's files listed by Python, their bytes read one at a time by a
  scalar function (see `rewrite_for_duckdb`);
- Spark: its native `binaryFile` source (`binaryFile.\\`<folder>\\``), which has those columns.

The path is the job's literal: a local folder or file, or a `/Volumes/...` path mapped to a local
folder with `--table /Volumes/<catalog>/<schema>/<volume>/<folder>=<local folder>` (the longest
mapped prefix wins). A path that is neither is an error naming it and the mapping to add.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlglot import exp

from agentbatch.errors import UsageError

BINARY_FILE = "binaryfile"
# Relations a DuckDB connection gets for the listings of a statement.
LISTING_PREFIX = "agentbatch_binary_files_"
LISTING_BATCH_ROWS = 8
VOLUMES = "/Volumes/"

# The columns of a binaryFile listing, as Databricks and Spark name and type them.
LISTING_COLUMNS = ("path", "modificationTime", "length", "content")


def volume_mappings(tables: Mapping[str, object]) -> dict[str, Path]:
    """The `--table /Volumes/...=FOLDER` entries (they map paths, not tables)."""
    return {
        name.rstrip("/"): Path(str(source))
        for name, source in tables.items()
        if isinstance(name, str) and name.startswith(VOLUMES)
    }


def local_path(path: str, volumes: Mapping[str, Path]) -> Path:
    """The local folder or file a `read_files` path reads."""
    if path.startswith(VOLUMES):
        for prefix in sorted(volumes, key=len, reverse=True):
            if path.rstrip("/") == prefix or path.startswith(prefix + "/"):
                rest = path.rstrip("/")[len(prefix) :].lstrip("/")
                mapped = volumes[prefix] / rest if rest else volumes[prefix]
                if not mapped.exists():
                    raise UsageError(
                        f"read_files({path!r}): --table {prefix}={volumes[prefix]} maps it to "
                        f"{mapped}, which does not exist"
                    )
                return mapped
        if not Path(path).exists():
            raise UsageError(
                f"read_files({path!r}): this volume path is not mapped to a local folder; "
                f"add --table {path}=FOLDER"
            )
    local = Path(path)
    if not local.exists():
        raise UsageError(f"read_files({path!r}): no such folder or file")
    return local


def binary_file_calls(tree: exp.Expr) -> list[tuple[exp.Table, str]]:
    """Every `read_files(<string literal>, format => 'binaryFile')` in a FROM, with its path."""
    found = []
    for node in list(tree.find_all(exp.Anonymous)):
        if str(node.this).lower() != "read_files" or not isinstance(node.parent, exp.Table):
            continue
        args = list(node.expressions)
        fmt = next(
            (
                a.expression
                for a in args
                if isinstance(a, exp.Kwarg) and a.this.name.lower() == "format"
            ),
            None,
        )
        if not (isinstance(fmt, exp.Literal) and fmt.this.lower() == BINARY_FILE):
            continue
        path = args[0] if args else None
        if not (isinstance(path, exp.Literal) and path.is_string):
            raise UsageError("read_files: the path must be a string literal")
        found.append((node.parent, path.this))
    return found


def rewrite_for_duckdb(tree: exp.Expr, volumes: Mapping[str, Path], connection: Any) -> int:
    """Point each binaryFile listing at a listing registered on the DuckDB `connection`, with
    Databricks' column names and types; the number of listings. Works on the Databricks-dialect
    tree, before it is transpiled.

    Memory stays flat in the number and size of files: the listing holds names, times and sizes
    only, and `content` is read one file at a time, when a row needs it (a scalar function), so
    no operator ever buffers a batch of whole files (DuckDB gathers up to 2,048 rows behind a
    filter or a join). The statement's CTEs are inlined (`NOT MATERIALIZED`), so a CTE read
    twice is not kept either."""
    import pyarrow as pa

    calls = binary_file_calls(tree)
    if not calls:
        return 0
    reader = _reader_of(connection)
    for number, (table, path) in enumerate(calls):
        local = local_path(path, volumes).resolve()
        files = list_files(local)
        listing = pa.table(
            {
                "path": pa.array([str(f) for f, _, _ in files], pa.string()),
                "modificationTime": pa.array(
                    [t for _, t, _ in files], pa.timestamp("us", tz="UTC")
                ),
                "length": pa.array([n for _, _, n in files], pa.int64()),
            }
        )
        name = f"{LISTING_PREFIX}{number}"
        # Small batches: DuckDB scans an Arrow table batch by batch, so a chunk of rows reading
        # their files holds a few files, never thousands.
        connection.register(
            name, pa.Table.from_batches(listing.to_batches(LISTING_BATCH_ROWS), listing.schema)
        )
        select = f"SELECT path, modificationTime, length, {reader}(path) AS content FROM {name}"
        _replace(table, select)
    for cte in tree.find_all(exp.CTE):
        cte.set("materialized", False)
    return len(calls)


_READER = "agentbatch_file_bytes"


def listing_names(tree: exp.Expr) -> set[str]:
    """The registered listings a rewritten statement reads (not catalog tables)."""
    return {t.name for t in tree.find_all(exp.Table) if t.name.startswith(LISTING_PREFIX)}


# Bytes of recently read files kept per connection (see `FileReader`).
READ_CACHE_BYTES = 64 * 1024 * 1024


class FileReader:
    """The bytes of a listed file, for its `content` column.

    DuckDB evaluates `content` once for each use in a statement (the fingerprint's hash, the
    column sent), a few rows apart: the files read last are kept, up to `budget` bytes, so a file
    is read from disk once and every use sees the same bytes."""

    def __init__(self, budget: int = READ_CACHE_BYTES) -> None:
        self._budget = budget
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._kept_bytes = 0
        self._lock = threading.Lock()
        self.reads = 0  # files read from disk

    def __call__(self, path: str | None) -> bytes | None:
        if path is None:
            return None
        with self._lock:
            kept = self._kept.get(path)
            if kept is not None:
                self._kept.move_to_end(path)
                return kept
        with open(path, "rb") as handle:
            data = handle.read()
        with self._lock:
            self.reads += 1
            if len(data) <= self._budget and path not in self._kept:
                self._kept[path] = data
                self._kept_bytes += len(data)
                while self._kept_bytes > self._budget:
                    _, dropped = self._kept.popitem(last=False)
                    self._kept_bytes -= len(dropped)
        return data


def _reader_of(connection: Any) -> str:
    """The name of `connection`'s file reader, registered on first use. DuckDB keeps a Python
    function for the whole database but not the object behind it: a name shared by two
    connections (cursors, or engines over one warehouse file) would call another connection's
    reader, freed once that one closes. So each connection registers its own, under its own name."""
    from duckdb import sqltypes

    name = _READERS.get(connection)
    if name is None:
        name = f"{_READER}_{next(_READER_NUMBERS)}"
        connection.create_function(
            name, FileReader(), [sqltypes.VARCHAR], sqltypes.BLOB, side_effects=True
        )
        _READERS[connection] = name
    return name


_READERS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_READER_NUMBERS = itertools.count(1)


def list_files(local: Path) -> list[tuple[Path, Any, int]]:
    """(path, modification time, size) of every file under `local` (or `local` itself),
    skipping hidden ones (a name in the path starting with `_` or `.`), sorted by path."""
    import datetime

    if local.is_file():
        candidates = [local]
    else:
        candidates = [
            Path(folder) / name
            for folder, dirs, names in os.walk(local)
            for name in names
            if not _hidden(Path(folder).relative_to(local) / name)
        ]
    found = []
    for path in sorted(candidates):
        stat = path.stat()
        modified = datetime.datetime.fromtimestamp(stat.st_mtime, tz=datetime.timezone.utc)
        found.append((path, modified, stat.st_size))
    return found


def _hidden(relative: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.parts)


def rewrite_for_spark(tree: exp.Expr, volumes: Mapping[str, Path]) -> None:
    """Point each binaryFile listing at Spark's native `binaryFile` source."""
    _rewrite(tree, volumes, _spark_listing)


def _rewrite(
    tree: exp.Expr,
    volumes: Mapping[str, Path],
    listing: Callable[[Path], str],
) -> int:
    calls = binary_file_calls(tree)
    for table, path in calls:
        _replace(table, listing(local_path(path, volumes).resolve()))
    return len(calls)


def _replace(table: exp.Table, select_sql: str) -> None:
    import sqlglot

    alias = table.alias or "binary_files"
    select = sqlglot.parse_one(select_sql, read="databricks")
    table.replace(exp.Subquery(this=select, alias=exp.TableAlias(this=exp.to_identifier(alias))))


def _spark_listing(local: Path) -> str:
    # binaryFile skips hidden files itself. Sub-folders are read as partitions (Spark SQL cannot
    # pass `recursiveFileLookup`): keep a local sample folder flat.
    return f"SELECT path, modificationTime, length, content FROM binaryFile.`{local.as_posix()}`"


_ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"


@contextlib.contextmanager
def arrow_batch_rows(spark: Any, rows: int | None) -> Iterator[None]:
    """Spark's Arrow batches (what a mapInArrow task gets at once) hold at most `rows` rows
    while the block runs, then the session's setting is restored. None: left as it is."""
    if rows is None:
        yield
        return
    before = spark.conf.get(_ARROW_BATCH, None)
    spark.conf.set(_ARROW_BATCH, str(rows))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(_ARROW_BATCH)
        else:
            spark.conf.set(_ARROW_BATCH, before)
