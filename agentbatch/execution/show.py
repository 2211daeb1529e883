"""`agentbatch show TABLE`: print a table from any target, and say where tables physically are.

Tables resolve as in a run: on the local target a `--table NAME=PATH` mapping reads the file, any
other name is read from the project's local warehouse (`.agentbatch/warehouse/<catalog>.duckdb`).
"""

from __future__ import annotations

import base64
import math
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.engines.registry import engine_class
from agentbatch.errors import UsageError
from agentbatch.planning.targets import Target, resolve_target

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.engines.base import Engine


def open_target(
    target: str | Target, root: Path, tables: Mapping[str, Any] | None = None
) -> Engine:
    """An engine for `target` that reads tables as a run in project `root` would."""
    from agentbatch.execution.runner import WAREHOUSE_DIR, default_state_dir

    chosen = target if isinstance(target, Target) else resolve_target(target, root)
    settings = dict(chosen.settings)
    if chosen.engine in ("local", "spark"):
        settings.setdefault("warehouse_dir", str(root / WAREHOUSE_DIR))
        settings.setdefault("state_dir", str(default_state_dir(root)))
    elif tables:
        raise UsageError(
            "--table maps tables to local files; it applies to the local and spark targets"
        )
    engine: Engine = engine_class(chosen.engine)(
        settings, tables=dict(tables or {}), output_tables=[]
    )
    return engine


def read_table(
    table: str,
    target: str | Target = "local",
    *,
    limit: int | None = None,
    tables: Mapping[str, Any] | None = None,
    project_dir: str | Path | None = None,
) -> pa.Table:
    """The rows of `table` on `target` (at most `limit`), as an Arrow table."""
    if limit is not None and limit < 0:
        raise UsageError("--limit must be 0 or more")
    root = Path(project_dir) if project_dir is not None else Path.cwd()
    engine = open_target(target, root, tables)
    try:
        if not engine.table_exists(table):
            raise UsageError(_missing(table, engine, tables or {}, root))
        return engine.read_table(table, limit=limit)
    finally:
        engine.close()


def describe_location(where: Mapping[str, str], project_dir: Path | None = None) -> str:
    """One line a user can act on: the file, or the warehouse file and the query that reads it
    (`agentbatch show` from here: with the project folder when it is another)."""
    table = where.get("table", "")
    if where.get("file"):
        return f"{table}: file {where['file']}"
    if where.get("duckdb_file"):
        elsewhere = project_dir is not None and project_dir.resolve() != Path.cwd().resolve()
        option = f" --project-dir {shlex.quote(str(project_dir))}" if elsewhere else ""
        return (
            f"{table}: local warehouse file {where['duckdb_file']}; read it with "
            f"`agentbatch show {table}{option}`, or DuckDB on that file: {where['duckdb_query']}"
        )
    return f"{table}: read it with `agentbatch show {table} --target {where.get('target', '')}`"


def print_table(rows: pa.Table, title: str, *, as_json: bool = False) -> None:
    import json

    if as_json:
        for row in rows.to_pylist():
            sys.stdout.write(json.dumps(_json_value(row), default=str, allow_nan=False) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    cells = [
        ["" if value is None else _cell(value) for value in row.values()]
        for row in rows.to_pylist()
    ]
    widths = [
        max([len(name), *(len(row[i]) for row in cells)])
        for i, name in enumerate(rows.column_names)
    ]
    # Wide enough that no column is cut to a few letters; a terminal narrower than that scrolls.
    console = Console(file=sys.stdout, soft_wrap=False, width=sum(widths) + 3 * len(widths) + 4)
    view = Table(title=title, title_justify="left")
    for name in rows.column_names:
        view.add_column(name, overflow="ellipsis", no_wrap=True)
    for row in cells:
        view.add_row(*row)
    console.print(view)


def _json_value(value: Any) -> Any:
    """`value` as strict JSON has it: NaN and infinities are null (as pandas writes them), bytes
    base64 (as Spark's to_json writes BINARY)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _cell(value: Any, limit: int = 60) -> str:
    import json

    text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _missing(table: str, engine: Engine, tables: Mapping[str, Any], root: Path) -> str:
    hint = ""
    if hasattr(engine, "location"):
        from agentbatch.execution.runner import WAREHOUSE_DIR

        mapped = ", ".join(sorted(tables)) or "none"
        hint = (
            f": it is not mapped with --table (mapped: {mapped}) and is not in the local "
            f"warehouse ({root / WAREHOUSE_DIR}); map a file with --table {table}=PATH"
        )
    return f"no table {table}{hint}"
