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

import heapq
import logging
import math
from collections.abc import Iterator
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
    # Each side's rows by key, as row numbers: the rows themselves stay in their Arrow tables
    # (Python dicts of both whole sides were about 2 KB a paired row).
    index_a, index_b = _row_numbers(a), _row_numbers(b)
    keys = [k for k in index_a if k in index_b]
    if not keys and (index_a or index_b):
        raise UsageError(
            f"no row of {variant_a} pairs with a row of {variant_b} by the key: "
            f"{variant_a} has {len(index_a):,} row(s) ({a.key} {_examples(a)}), "
            f"{variant_b} has {len(index_b):,} ({b.key} {_examples(b)}); rows pair by the text "
            f"of their key (1 and '1' pair, '01' and 1 do not): compare runs over the same rows"
        )
    if len(keys) < max(len(index_a), len(index_b)):
        log.warning(
            "compare: %d row(s) paired; %d only in %s and %d only in %s are not compared",
            len(keys),
            len(index_a) - len(keys),
            variant_a,
            len(index_b) - len(keys),
            variant_b,
        )
    pairs = _Pairs(a, b, [index_a[k] for k in keys], [index_b[k] for k in keys])
    only_a, only_b = len(index_a) - len(keys), len(index_b) - len(keys)
    del index_a, index_b, keys
    infos_b = {info.name: info for info in b.scorers}
    shared = [info for info in a.scorers if info.name in infos_b]
    records = [_compare_scorer(info, pairs, variant_a, variant_b, options) for info in shared]
    return Comparison(
        variant_a=variant_a,
        variant_b=variant_b,
        summary=pa.Table.from_pylist(records, schema=summary_schema()),
        disagreements=_disagreements(pairs, shared, top),
        paired_rows=len(pairs.rows_a),
        only_a=only_a,
        only_b=only_b,
    )


@dataclass(frozen=True)
class _Pairs:
    """The paired rows: row numbers in A's and B's tables, in pairing order."""

    a: Scored
    b: Scored
    rows_a: list[int]
    rows_b: list[int]

    def scores(self, scorer: str) -> Iterator[tuple[float | None, float | None]]:
        """A's and B's values of `scorer`, pair by pair."""
        values_a = self.a.table.column(scorer).to_pylist()
        values_b = self.b.table.column(scorer).to_pylist()
        for i, j in zip(self.rows_a, self.rows_b, strict=True):
            yield values_a[i], values_b[j]


def _row_numbers(scored: Scored) -> dict[str | None, int]:
    """Row number by key text (a repeated key: its last row, as before)."""
    keys = scored.table.column(scored.key).to_pylist()
    return {key_text(value): number for number, value in enumerate(keys)}


def _cell(table: pa.Table, column: str | None, row: int) -> Any:
    if column is None or column not in table.column_names:
        return None
    return table.column(column)[row].as_py()


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
    paired: _Pairs,
    variant_a: str,
    variant_b: str,
    options: MetricOptions,
) -> dict[str, Any]:
    pairs = [(x, y) for x, y in paired.scores(info.name) if x is not None and y is not None]
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
            # None, not NaN, when there is no interval (one pair): NaN is no JSON.
            delta_ci_low=low if math.isfinite(low) else None,
            delta_ci_high=high if math.isfinite(high) else None,
        )
    return record


def _disagreements(pairs: _Pairs, shared: list[ScorerInfo], top: int) -> list[dict[str, Any]]:
    """Rows ranked by the sum over bounded scorers of |A - B| / range; only the `top` rows
    are kept while ranking, and only theirs are read in full."""
    a, b = pairs.a, pairs.b
    bounded = [info for info in shared if info.bounds is not None]
    distances = [0.0] * len(pairs.rows_a)
    for info in bounded:
        assert info.bounds is not None
        low, high = info.bounds
        for order, (x, y) in enumerate(pairs.scores(info.name)):
            if x is not None and y is not None:
                distances[order] += abs(x - y) / (high - low)
    ranked = heapq.nsmallest(
        top,
        ((-distance, order) for order, distance in enumerate(distances) if distance > 0),
    )
    entries = []
    for negative, order in ranked:
        i, j = pairs.rows_a[order], pairs.rows_b[order]
        entries.append(
            {
                "key": _cell(a.table, a.key, i),  # A's value, as its table holds it
                "expected": _cell(a.table, a.expected, i),
                "response_a": _cell(a.table, "response", i),
                "response_b": _cell(b.table, "response", j),
                "error_a": _cell(a.table, "agent_error", i),
                "error_b": _cell(b.table, "agent_error", j),
                "scores": {
                    info.name: (_cell(a.table, info.name, i), _cell(b.table, info.name, j))
                    for info in bounded
                },
                "disagreement": -negative,
            }
        )
    return entries
