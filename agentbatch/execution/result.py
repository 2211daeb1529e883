"""`RunResult`: what a run did, in a leaf module so the runner and its readers share it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentbatch.planning.definition import Plan

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from agentbatch.engines.base import Engine

# The summary's figures of the whole output table, and the row of `summary.sql` each counts.
TABLE_FIGURES = {"table_rows": "rows", "table_ok": "ok", "table_errors": "errors"}


def table_figures(counted: Mapping[str, Any] | None) -> dict[str, int | None]:
    """The output table's figures from `summary.sql`'s row; None each when it could not be read
    (unknown: never an empty table's 0)."""
    if counted is None:
        return dict.fromkeys(TABLE_FIGURES)
    return {name: int(counted.get(column) or 0) for name, column in TABLE_FIGURES.items()}


@dataclass
class RunResult:
    """What a run did. `summary` is a plain dict; `to_pandas()` reads the rows this run answered
    (`answered_at` at or after its start: an answer reused from the checkpoint keeps the time it
    was first answered), `to_pandas(whole_table=True)` the whole output table.

    It keeps the engine open for `to_pandas()`: close it (or use `with`) when done.

    A run that left no output table (a local run over a CSV with its header only keeps none)
    says so: `no_table: true`, and `table_rows`, `table_ok`, `table_errors` None, never the 0 of
    an empty table."""

    plan: Plan
    summary: dict[str, Any]
    engine: Engine | None = field(default=None, repr=False)
    dry_run_requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Built once the run is over: an engine may drop an empty output as it settles, after
        # the summary counted it. Only an empty (or unread) table can be one that is gone.
        if self.engine is None or self.summary.get("table_rows"):
            return
        if "table_rows" in self.summary and not self.engine.table_exists(
            self.plan.job.output.table
        ):
            self.summary.update(no_table=True, **table_figures(None))

    def close(self) -> None:
        """Close the engine's connection (a warehouse session, a Spark session it started)."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __enter__(self) -> RunResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_pandas(self, *, whole_table: bool = False, limit: int | None = None) -> pd.DataFrame:
        """The rows this run answered (see the class), or the whole output table; at most
        `limit` rows."""
        return self.to_arrow(whole_table=whole_table, limit=limit).to_pandas()

    def to_arrow(self, *, whole_table: bool = False, limit: int | None = None) -> pa.Table:
        """As `to_pandas`, as an Arrow table. The engine filters and limits the rows: the table
        is never read whole for a few of them (the CLI prints the first rows of every run)."""
        import pyarrow as pa

        from agentbatch.planning.render import utc_timestamp
        from agentbatch.sql import quoting

        output = self.plan.job.output.table
        if self.engine is None or not self.engine.table_exists(output):
            return pa.table({})  # no engine, or no output kept (a source without rows)
        schema = self.engine.read_table(output, limit=0).schema
        if whole_table or "answered_at" not in schema.names:
            return self.engine.read_table(output, limit)
        started = quoting.literal(utc_timestamp(self.plan.options.started_at))
        sql = (
            f"SELECT * FROM {quoting.table(output)} "
            f"WHERE `answered_at` >= CAST({started} AS TIMESTAMP)"
            + (f" LIMIT {int(limit)}" if limit is not None else "")
        )
        batches = list(self.engine.fetch_batches(sql))
        return pa.Table.from_batches(batches, schema=batches[0].schema if batches else schema)
