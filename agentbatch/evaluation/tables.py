"""Reading answers and writing evaluation tables through the Engine protocol, so the same code
writes DuckDB files locally and Delta tables on Databricks.

DuckDB allows one open handle per database file, so every engine here is opened for one step
and closed before the next step opens its own.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agentbatch.engines.base import WriteRequest
from agentbatch.engines.registry import engine_class
from agentbatch.sql import quoting

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.engines.base import Engine
    from agentbatch.planning.definition import Plan

_PLAIN = re.compile(r"^[A-Za-z_]\w*$")


def derived_table(table: str, suffix: str) -> str:
    """`catalog.schema.name` -> `catalog.schema.name<suffix>` (backticks only where needed)."""
    parts = quoting.table_parts(table)
    parts = (*parts[:-1], parts[-1] + suffix)
    if all(_PLAIN.match(p) for p in parts):
        return ".".join(parts)
    return ".".join(f"`{p}`" for p in parts)


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
