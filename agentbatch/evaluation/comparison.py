"""A/B comparison of two scored runs on the same rows (paired by key).

Per scorer: wins of A, ties, wins of B (a win is the better score, which for latency, tokens
and error rate is the lower one), the means on the paired rows, the difference B - A with a
paired-bootstrap interval, and the sign test's p-value. Per row: how much the two disagree,
to list the rows worth reading first.

Rows pair by the canonical text of their key (`agentbatch.evaluation.text.as_text`): 1, 1.0 and
"1" are the same row - one source may read the key as a number, another as text - while "01" and
1 are not. No paired row at all raises UsageError (nothing was compared); rows found on one side
only are counted (`only_a`, `only_b`) and logged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentbatch.errors import UsageError
from agentbatch.evaluation import stats
from agentbatch.evaluation.metrics import MetricOptions
from agentbatch.evaluation.scoring import Scored, ScorerInfo
from agentbatch.evaluation.text import as_text, preview

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("scorer", "string"),
    ("kind", "string"),
    ("higher_is_better", "bool"),
    ("variant_a", "string"),
    ("variant_b", "string"),
    ("paired", "int64"),
    ("wins_a", "int64"),
    ("ties", "int64"),
    ("wins_b", "int64"),
    ("mean_a", "float64"),
    ("mean_b", "float64"),
    ("delta", "float64"),
    ("delta_ci_low", "float64"),
    ("delta_ci_high", "float64"),
    ("p_value", "float64"),
)


@dataclass(frozen=True)
class Comparison:
    variant_a: str
    variant_b: str
    summary: pa.Table
    # The rows where A and B disagree most, most first (dicts: key, expected, responses, scores).
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    paired_rows: int = 0
    only_a: int = 0
    only_b: int = 0

    def counts(self, scorer: str) -> tuple[int, int, int]:
        """(wins of A, ties, wins of B) for one scorer."""
        for row in self.summary.to_pylist():
            if row["scorer"] == scorer:
                return row["wins_a"], row["ties"], row["wins_b"]
        raise KeyError(scorer)


def summary_schema() -> pa.Schema:
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
    }
    return pa.schema([pa.field(name, types[kind]) for name, kind in SUMMARY_COLUMNS])


def compare_scores(
    a: Scored,
    b: Scored,
    *,
    variant_a: str = "a",
    variant_b: str = "b",
    options: MetricOptions | None = None,
    top: int = 10,
) -> Comparison:
    import pyarrow as pa

    options = options or MetricOptions()
    rows_a = {key_text(row[a.key]): row for row in a.table.to_pylist()}
    rows_b = {key_text(row[b.key]): row for row in b.table.to_pylist()}
    keys = [k for k in rows_a if k in rows_b]
    if not keys and (rows_a or rows_b):
        raise UsageError(
            f"no row of {variant_a} pairs with a row of {variant_b} by the key: "
            f"{variant_a} has {len(rows_a):,} row(s) ({a.key} {_examples(a)}), "
            f"{variant_b} has {len(rows_b):,} ({b.key} {_examples(b)}); rows pair by the text "
            f"of their key (1 and '1' pair, '01' and 1 do not): compare runs over the same rows"
        )
    if len(keys) < max(len(rows_a), len(rows_b)):
        log.warning(
            "compare: %d row(s) paired; %d only in %s and %d only in %s are not compared",
            len(keys),
            len(rows_a) - len(keys),
            variant_a,
            len(rows_b) - len(keys),
            variant_b,
        )
    infos_b = {info.name: info for info in b.scorers}
    shared = [info for info in a.scorers if info.name in infos_b]
    records = [
        _compare_scorer(info, keys, rows_a, rows_b, variant_a, variant_b, options)
        for info in shared
    ]
    return Comparison(
        variant_a=variant_a,
        variant_b=variant_b,
        summary=pa.Table.from_pylist(records, schema=summary_schema()),
        disagreements=_disagreements(a, keys, rows_a, rows_b, shared, top),
        paired_rows=len(keys),
        only_a=len(rows_a) - len(keys),
        only_b=len(rows_b) - len(keys),
    )


def key_text(value: Any) -> str | None:
    """A row's key as compared across runs: its canonical text (1, 1.0 and "1" agree)."""
    return None if value is None else as_text(value)


def _examples(scored: Scored, shown: int = 3) -> str:
    values = scored.table.column(scored.key).to_pylist()[:shown]
    kind = str(scored.table.schema.field(scored.key).type)
    listed = ", ".join(preview(repr(v), 30) for v in values)
    return f"{kind}: {listed}{', ...' if scored.table.num_rows > shown else ''}"


def _compare_scorer(
    info: ScorerInfo,
    keys: list[str | None],
    rows_a: dict[str | None, dict[str, Any]],
    rows_b: dict[str | None, dict[str, Any]],
    variant_a: str,
    variant_b: str,
    options: MetricOptions,
) -> dict[str, Any]:
    pairs = [
        (rows_a[k][info.name], rows_b[k][info.name])
        for k in keys
        if rows_a[k][info.name] is not None and rows_b[k][info.name] is not None
    ]
    better_a = sum((x > y) if info.higher_is_better else (x < y) for x, y in pairs)
    ties = sum(x == y for x, y in pairs)
    better_b = len(pairs) - better_a - ties
    record: dict[str, Any] = {
        "scorer": info.name,
        "kind": info.kind,
        "higher_is_better": info.higher_is_better,
        "variant_a": variant_a,
        "variant_b": variant_b,
        "paired": len(pairs),
        "wins_a": better_a,
        "ties": ties,
        "wins_b": better_b,
        "mean_a": None,
        "mean_b": None,
        "delta": None,
        "delta_ci_low": None,
        "delta_ci_high": None,
        "p_value": stats.sign_test_p_value(better_a, better_b),
    }
    if pairs:
        differences = [y - x for x, y in pairs]
        low, high = stats.bootstrap_interval(
            differences, options.confidence, options.bootstrap_samples, options.seed
        )
        record.update(
            mean_a=math.fsum(x for x, _ in pairs) / len(pairs),
            mean_b=math.fsum(y for _, y in pairs) / len(pairs),
            delta=math.fsum(differences) / len(pairs),
            delta_ci_low=low,
            delta_ci_high=high,
        )
    return record


def _disagreements(
    a: Scored,
    keys: list[str | None],
    rows_a: dict[str | None, dict[str, Any]],
    rows_b: dict[str | None, dict[str, Any]],
    shared: list[ScorerInfo],
    top: int,
) -> list[dict[str, Any]]:
    """Rows ranked by the sum over bounded scorers of |A - B| / range."""
    bounded = [info for info in shared if info.bounds is not None]
    ranked: list[tuple[float, int, dict[str, Any]]] = []
    for order, key in enumerate(keys):
        row_a, row_b = rows_a[key], rows_b[key]
        distance = 0.0
        scores: dict[str, tuple[float | None, float | None]] = {}
        for info in bounded:
            x, y = row_a[info.name], row_b[info.name]
            scores[info.name] = (x, y)
            if x is not None and y is not None and info.bounds is not None:
                low, high = info.bounds
                distance += abs(x - y) / (high - low)
        if distance > 0:
            entry = {
                "key": row_a[a.key],  # A's value, as its table holds it
                "expected": row_a.get(a.expected) if a.expected else None,
                "response_a": row_a.get("response"),
                "response_b": row_b.get("response"),
                "error_a": row_a.get("agent_error"),
                "error_b": row_b.get("agent_error"),
                "scores": scores,
                "disagreement": distance,
            }
            ranked.append((-distance, order, entry))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [entry for _, _, entry in ranked[:top]]
