"""`read_files(<path>, format => 'binaryFile')` on engines without Databricks' `read_files`.

On Databricks, `read_files` with `format => 'binaryFile'` lists a volume folder (or one file) as
rows of `path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY`, skipping hidden
files (names starting with `_` or `.`), as Spark's binary file source does. Locally the same job
reads a folder:

- DuckDB (`local`): `read_blob(<glob>)` renamed to those columns;
- Spark: its native `binaryFile` source (`binaryFile.\\`<folder>\\``), which has those columns.

The path is the job's literal: a local folder or file, or a `/Volumes/...` path mapped to a local
folder with `--table /Volumes/<catalog>/<schema>/<volume>/<folder>=<local folder>` (the longest
mapped prefix wins). A path that is neither is an error naming it and the mapping to add.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from sqlglot import exp

from agentbatch.errors import UsageError

BINARY_FILE = "binaryfile"
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
                return volumes[prefix] / rest if rest else volumes[prefix]
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


def rewrite_for_duckdb(tree: exp.Expr, volumes: Mapping[str, Path]) -> None:
    """Point each binaryFile listing at `read_blob` with Databricks' column names and types.
    Works on the Databricks-dialect tree, before it is transpiled."""
    _rewrite(tree, volumes, _duckdb_listing)


def rewrite_for_spark(tree: exp.Expr, volumes: Mapping[str, Path]) -> None:
    """Point each binaryFile listing at Spark's native `binaryFile` source."""
    _rewrite(tree, volumes, _spark_listing)


def _rewrite(
    tree: exp.Expr,
    volumes: Mapping[str, Path],
    listing: Callable[[Path], str],
) -> None:
    import sqlglot

    for table, path in binary_file_calls(tree):
        local = local_path(path, volumes).resolve()
        alias = table.alias or "binary_files"
        select = sqlglot.parse_one(listing(local), read="databricks")
        table.replace(
            exp.Subquery(this=select, alias=exp.TableAlias(this=exp.to_identifier(alias)))
        )


def _string(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="databricks")


def _duckdb_listing(local: Path) -> str:
    pattern = str(local / "**") if local.is_dir() else str(local)
    # `read_blob` lists hidden files too; Spark's file index skips names starting with _ or .
    return (
        "SELECT filename AS path, CAST(last_modified AS TIMESTAMP) AS modificationTime, "
        f"size AS length, content FROM read_blob({_string(pattern)}) "
        "WHERE NOT regexp_like(filename, '(^|/)[._][^/]*$')"
    )


def _spark_listing(local: Path) -> str:
    # binaryFile skips hidden files itself. Sub-folders are read as partitions (Spark SQL cannot
    # pass `recursiveFileLookup`): keep a local sample folder flat.
    return f"SELECT path, modificationTime, length, content FROM binaryFile.`{local.as_posix()}`"
