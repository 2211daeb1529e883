"""Reading answers and writing evaluation tables through the Engine protocol, so the same code
writes DuckDB files locally and Delta tables on Databricks.

DuckDB allows one open handle per database file, so every engine here is opened for one step
and closed before the next step opens its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.engines import engine_class
from agentbatch.engines.base import WriteRequest
from agentbatch.errors import UsageError
from agentbatch.sql import quoting

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.engines.base import Engine
    from agentbatch.planner import Plan

_PLAIN = re.compile(r"^[A-Za-z_]\w*$")


def derived_table(table: str, suffix: str) -> str:
    """`catalog.schema.name` -> `catalog.schema.name<suffix>` (backticks only where needed)."""
    parts = quoting.table_parts(table)
    parts = (*parts[:-1], parts[-1] + suffix)
    if all(_PLAIN.match(p) for p in parts):
        return ".".join(parts)
    return ".".join(f"`{p}`" for p in parts)


def open_engine(
    the_plan: Plan, tables: Mapping[str, Any], root: Path, outputs: Iterable[str]
) -> Engine:
    """An engine for `the_plan`'s target that may write `outputs` (mapped files are saved back)."""
    from agentbatch.runner import WAREHOUSE_DIR

    cls = engine_class(the_plan.target.engine)
    settings = dict(the_plan.target.settings)
    if the_plan.target.engine == "local":
        settings.setdefault("warehouse_dir", str(root / WAREHOUSE_DIR))
    settings.setdefault("endpoint_overrides", dict(the_plan.options.endpoint_overrides))
    settings.setdefault("job_name", the_plan.job.name)
    settings.setdefault("run_id", the_plan.options.run_id)
    if tables and the_plan.target.engine == "databricks-sql":
        raise UsageError(
            "--table maps tables to local files; it applies to the local and spark targets"
        )
    engine: Engine = cls(settings, tables=tables, output_tables=list(outputs))
    return engine


def read_answers(engine: Engine, table: str) -> pa.Table:
    return engine.read_table(table)


def write_table(engine: Engine, the_plan: Plan, table: str, data: pa.Table, key: str) -> int:
    """Replace `table` with `data` (CREATE OR REPLACE from the engine's staging relation)."""
    cls = engine_class(the_plan.target.engine)
    staged = cls.staging_relation(table, the_plan.options.run_id)
    sql = f"CREATE OR REPLACE TABLE {quoting.table(table)} AS\nSELECT * FROM {staged}"
    request = WriteRequest(
        table=table, key=key, mode="overwrite", staging_name=staged, write_sql=(sql,)
    )
    batches = data.to_batches() or _empty_batches(data)
    return engine.write_results(request, iter(batches), data.schema).rows_written


def _empty_batches(data: pa.Table) -> list[pa.RecordBatch]:
    import pyarrow as pa

    return [pa.RecordBatch.from_pylist([], schema=data.schema)]
