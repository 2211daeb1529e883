"""Reading answers and writing evaluation tables through the Engine protocol, so the same code
writes DuckDB files locally and Delta tables on Databricks.

DuckDB allows one open handle per database file, so every engine here is opened for one step
and closed before the next step opens its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from agentbatch.engines.base import WriteRequest
from agentbatch.engines.registry import engine_class
from agentbatch.errors import SpecError, UsageError
from agentbatch.evaluation.results import Coverage
from agentbatch.planning.builder import scored_statements
from agentbatch.spec.project import template_dirs
from agentbatch.sql import quoting

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.engines.base import Engine
    from agentbatch.planning.definition import Plan, Scored

_PLAIN = re.compile(r"^[A-Za-z_]\w*$")
_UC_NAME_LIMIT = 255


def derived_table(table: str, suffix: str) -> str:
    """`catalog.schema.name` -> `catalog.schema.name<suffix>` (backticks only where needed)."""
    parts = quoting.table_parts(table)
    parts = (*parts[:-1], parts[-1] + suffix)
    if len(parts[-1]) > _UC_NAME_LIMIT:
        # Unity Catalog refuses a longer name (docs: sql-ref-names), and so does `table_parts`
        # when the name is used, mid-run: refuse it while the eval is prepared, as a job error.
        raise SpecError(
            f"the table {table!r} + {suffix!r} is {len(parts[-1])} characters, over the "
            f"{_UC_NAME_LIMIT} of a Unity Catalog name: give output.table a shorter name, or name "
            "this table in the evaluation (scores_table, metrics_table, a judge's table)"
        )
    if all(_PLAIN.match(p) for p in parts):
        return ".".join(parts)
    return ".".join(f"`{p}`" for p in parts)


def evaluated_rows_sql(the_plan: Plan) -> str:
    """The rows an evaluation of the plan's job scores, as one query (`scored_statements`): for each
    key of the current selection, its answer to the current request; a key without one is left
    out, never scored with an answer to another request (`coverage` counts them)."""
    return _scored(the_plan).current.sql


def _scored(the_plan: Plan) -> Scored:
    root = Path(the_plan.options.project_dir or Path.cwd())
    return scored_statements(the_plan, template_dirs(root))


def read_evaluated_rows(engine: Engine, the_plan: Plan) -> pa.Table:
    """`evaluated_rows_sql` read through `engine`, in key order."""
    import pyarrow as pa

    if not engine.table_exists(the_plan.job.output.table):  # a run that kept no table
        return _no_rows(engine, the_plan)
    sql = evaluated_rows_sql(the_plan)
    batches = [batch for batch in engine.fetch_batches(sql) if batch.num_columns]
    if not batches or not sum(batch.num_rows for batch in batches):
        return _no_rows(engine, the_plan)
    table = pa.Table.from_batches(batches)
    key = next(c for c in table.column_names if c.lower() == the_plan.job.source.key.lower())
    return table.sort_by(key)


def coverage(engine: Engine, the_plan: Plan, scored: int) -> Coverage:
    """How many keys the selection has, and how many of those not `scored` the output holds
    answers to another request for (`Scored.current_or_latest` holds a row for every selected
    key the output answered, whatever the request). A selection whose keys repeat is refused,
    as a run refuses it (`--skip-run` reads it without a run)."""
    counts = engine.fetch_one(the_plan.preflight.counts.sql)
    repeated = int(counts.get("repeated_keys") or 0)
    if repeated:
        # A run refuses such a source before any call (one key, one answer); scoring it without
        # one would take one of a key's rows at random for its expected value.
        from agentbatch.execution.selection import repeated_keys_message

        raise UsageError(repeated_keys_message(the_plan, engine, repeated))
    selected = int(counts.get("selected") or 0)
    answered_sql = _scored(the_plan).current_or_latest.sql.strip().rstrip(";")
    answered = engine.fetch_one(f"SELECT count(*) AS `answered` FROM ({answered_sql}) AS `_any`")
    other = int(answered.get("answered") or 0) - scored
    return Coverage(selected=selected, scored=scored, other_request=max(other, 0))


def _no_rows(engine: Engine, the_plan: Plan) -> pa.Table:
    """No row to score: an empty table with the query's columns (typed as the output holds
    them, text when there is no output table; the result of a query without rows may come
    without a schema)."""
    import pyarrow as pa

    from agentbatch.results import RESULT_COLUMN_NAMES

    job = the_plan.job
    types = {}
    if engine.table_exists(job.output.table):
        held = engine.read_table(job.output.table, limit=0).schema
        types = {field.name.lower(): field.type for field in held}
    names = [job.source.key, *job.source.columns, *RESULT_COLUMN_NAMES]
    fields = [pa.field(name, types.get(name.lower(), pa.string())) for name in names]
    return pa.schema(fields).empty_table()


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
