"""Aggregate a scores table: per scorer, overall and per group, the mean with its confidence
interval, counts of scored / errored rows, and the median and 95th percentile.

One row per (scorer, group). The overall rows have `group_by` NULL (and `group_value` NULL); a
group's rows name the group column in `group_by` and its value, as text, in `group_value`, which
is NULL for the group of rows whose group column is NULL: that group is never merged with a value
whose text reads "(null)" or "NULL".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from agentbatch.evaluation import stats
from agentbatch.evaluation.scoring import Scored, ScorerInfo

if TYPE_CHECKING:
    import pyarrow as pa

METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("variant", "string"),
    ("scorer", "string"),
    ("kind", "string"),
    ("group_by", "string"),
    ("group_value", "string"),
    ("rows", "int64"),
    ("scored", "int64"),
    ("errors", "int64"),
    ("agent_errors", "int64"),
    ("mean", "float64"),
    ("ci_low", "float64"),
    ("ci_high", "float64"),
    ("ci_method", "string"),
    ("confidence", "float64"),
    ("p50", "float64"),
    ("p95", "float64"),
    ("higher_is_better", "bool"),
    ("unit", "string"),
    ("job", "string"),
    ("endpoint", "string"),
    ("evaluated_at", "timestamp"),
)


@dataclass(frozen=True)
class MetricOptions:
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    seed: int = 0


def metrics_schema() -> pa.Schema:
    import pyarrow as pa

    types: dict[str, pa.DataType] = {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([pa.field(name, types[kind]) for name, kind in METRIC_COLUMNS])


def compute_metrics(
    scored: Scored,
    options: MetricOptions | None = None,
    *,
    variant: str = "",
    job: str = "",
    endpoint: str = "",
    evaluated_at: datetime | None = None,
) -> pa.Table:
    import pyarrow as pa

    options = options or MetricOptions()
    when = evaluated_at or datetime.now(timezone.utc)
    table = scored.table
    agent_errors = [e is not None for e in table.column("agent_error").to_pylist()]
    # (group_by, group_value, row numbers): the overall rows first, then each group in value
    # order, the NULL group last.
    groups: list[tuple[str | None, str | None, list[int]]] = [
        (None, None, list(range(table.num_rows)))
    ]
    if scored.group_by is not None:
        by_value: dict[str, list[int]] = {}
        nulls: list[int] = []
        for index, value in enumerate(table.column(scored.group_by).to_pylist()):
            if value is None:
                nulls.append(index)
            else:
                by_value.setdefault(str(value), []).append(index)
        groups += [(scored.group_by, value, rows) for value, rows in sorted(by_value.items())]
        if nulls:
            groups.append((scored.group_by, None, nulls))
    records: list[dict[str, Any]] = []
    for info in scored.scorers:
        values = scored.values(info.name)
        errors = [e is not None for e in table.column(f"{info.name}_error").to_pylist()]
        for group_by, group_value, indexes in groups:
            summary = summarise(
                [values[i] for i in indexes], info, options, errors=sum(errors[i] for i in indexes)
            )
            records.append(
                {
                    "variant": variant,
                    "scorer": info.name,
                    "kind": info.kind,
                    "group_by": group_by,
                    "group_value": group_value,
                    "rows": len(indexes),
                    "agent_errors": sum(agent_errors[i] for i in indexes),
                    "higher_is_better": info.higher_is_better,
                    "unit": info.unit,
                    "job": job,
                    "endpoint": endpoint,
                    "evaluated_at": when,
                    **summary,
                }
            )
    return pa.Table.from_pylist(records, schema=metrics_schema())


def summarise(
    values: Sequence[float | None], info: ScorerInfo, options: MetricOptions, *, errors: int = 0
) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    result: dict[str, Any] = {
        "scored": len(present),
        "errors": errors,
        "confidence": options.confidence,
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "ci_method": None,
        "p50": None,
        "p95": None,
    }
    if not present:
        return result
    low, high, method = stats.mean_interval(
        present,
        binary=info.binary,
        confidence=options.confidence,
        samples=options.bootstrap_samples,
        seed=options.seed,
    )
    result.update(
        mean=math.fsum(present) / len(present),
        ci_low=_finite(low),
        ci_high=_finite(high),
        ci_method=method,
        p50=stats.percentile(present, 50),
        p95=stats.percentile(present, 95),
    )
    return result


def overall(metrics: pa.Table) -> list[dict[str, Any]]:
    """The overall rows (no group) of a metrics table, in scorer order. By `group_by`: the NULL
    group's rows have `group_value` NULL too."""
    return [row for row in metrics.to_pylist() if row["group_by"] is None]


def by_scorer(metrics: pa.Table) -> dict[str, dict[str, Any]]:
    """The overall rows of a metrics table by scorer."""
    return {row["scorer"]: row for row in overall(metrics)}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
