"""What a report says, as data: facts, sections of tables and charts. The Markdown and HTML
writers (`agentbatch.evaluation.report.markdown`, `agentbatch.evaluation.report.html`) are two readers of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentbatch.evaluation.metrics import by_scorer
from agentbatch.evaluation.report import svg
from agentbatch.evaluation.scoring import ScorerInfo
from agentbatch.evaluation.text import preview

if TYPE_CHECKING:
    from agentbatch.evaluation.results import CompareResult, EvalResult

FAILED_ROWS_SHOWN = 10
ERRORS_SHOWN = 5


class Null(str):
    """A cell that stands for SQL NULL (the group of rows whose group column is NULL). The writers
    set it apart (italic; a value's own text is escaped, never italic), so it is never read as a
    group whose value is the text "NULL" or "(null)"."""


NULL = Null("NULL")


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    # Columns to right-align (numbers).
    numeric: frozenset[int] = frozenset()


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)  # inline SVG


@dataclass
class Report:
    title: str
    facts: list[tuple[str, str]]
    sections: list[Section]


# -- formatting ---------------------------------------------------------------------------------


def fmt_value(value: float | None, info: ScorerInfo) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if info.binary:
        return f"{value * 100:.1f}%"
    if info.unit == "ms":
        return f"{value:,.0f} ms"
    if info.unit == "tokens":
        return f"{value:,.1f}"
    return f"{value:.2f}"


def fmt_interval(low: float | None, high: float | None, info: ScorerInfo) -> str:
    if low is None or high is None:
        return "–"
    return f"[{fmt_value(low, info)}, {fmt_value(high, info)}]"


def fmt_delta(value: float | None, info: ScorerInfo) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    sign = "+" if value > 0 else ""
    if info.binary:
        return f"{sign}{value * 100:.1f} pts"
    if info.unit == "ms":
        return f"{sign}{value:,.0f} ms"
    return f"{sign}{value:.2f}"


def _delta_interval(low: float | None, high: float | None, info: ScorerInfo) -> str:
    if low is None or high is None:
        return "–"
    return f"[{fmt_delta(low, info)}, {fmt_delta(high, info)}]"


def _cell(value: Any, limit: int = 100) -> str:
    return "" if value is None else preview(value, limit)


# -- a single evaluation ------------------------------------------------------------------------


def eval_report(result: EvalResult) -> Report:
    scored = result.scored
    table = scored.table
    infos = list(scored.scorers)
    overall = by_scorer(result.metrics)
    agent_errors = sum(e is not None for e in table.column("agent_error").to_pylist())
    facts = [
        ("job", result.job.name),
        ("endpoint", result.endpoint),
        ("target", result.target),
        ("rows", f"{table.num_rows:,}"),
        *coverage_facts(result),
        ("agent errors", f"{agent_errors:,}"),
        ("answers", result.answers_table),
        ("scores", result.scores_table),
        ("metrics", result.metrics_table),
        *((f"judge {name}", table) for name, table in result.judge_tables.items()),
        ("evaluated at", result.evaluated_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        *spend_facts(result.run_summary),
    ]
    confidence = _confidence(result.metrics)
    scores = Section("Scores", text=[f"Means with {confidence} confidence intervals."])
    proportion = [i for i in infos if i.binary and i.higher_is_better]
    if proportion:
        scores.charts.append(
            svg.bar_chart(
                "Share of rows passing, per scorer",
                [i.name for i in proportion],
                [
                    svg.Bars(
                        result.variant or result.job.name,
                        [overall[i.name]["mean"] for i in proportion],
                        [overall[i.name]["ci_low"] for i in proportion],
                        [overall[i.name]["ci_high"] for i in proportion],
                    )
                ],
                y_label="share of rows",
                y_range=(0.0, 1.0),
            )
        )
    scores.tables.append(_scores_table(infos, overall))
    sections = [scores]
    distribution = _distribution_section([(result.variant or "", result)], infos)
    if distribution is not None:
        sections.append(distribution)
    grouped = _group_section([(result.variant, result)], infos, scored.group_by)
    if grouped is not None:
        sections.append(grouped)
    failed = _failed_rows_section(result, infos)
    if failed is not None:
        sections.append(failed)
    errors = _errors_section(result, infos)
    if errors is not None:
        sections.append(errors)
    return Report(f"Evaluation: {result.job.name}", facts, sections)


def coverage_facts(result: EvalResult) -> list[tuple[str, str]]:
    """The selected keys not scored, and why: none is scored with another request's answer."""
    covered = result.coverage
    if covered is None or not covered.not_scored:
        return []
    why = [
        f"{count:,} {reason}"
        for count, reason in (
            (covered.other_request, "answered another request only"),
            (covered.unanswered, "unanswered"),
        )
        if count
    ]
    return [
        (
            "not scored",
            f"{covered.not_scored:,} of {covered.selected:,} selected keys: " + ", ".join(why),
        )
    ]


def spend_facts(summary: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What the run used, beside what the last `agentbatch estimate` projected for its rows."""
    if not summary or "input_tokens" not in summary:
        return []
    tokens = f"{summary['input_tokens']:,} input, {summary['output_tokens']:,} output"
    if "estimated_input_tokens" in summary:
        tokens += (
            f" (estimated {summary['estimated_input_tokens']:,} input, "
            f"{summary['estimated_output_tokens']:,} output)"
        )
    facts = [("tokens this run", tokens)]
    if "cost" in summary:
        cost = f"{summary['cost']:,.4g}"
        if "estimated_cost" in summary:
            cost += f" (estimated {summary['estimated_cost']:,.4g})"
        facts.append(("cost this run", cost))
    return facts


def _confidence(metrics: Any) -> str:
    values = metrics.column("confidence").to_pylist() if metrics.num_rows else []
    return f"{values[0] * 100:g}%" if values else "95%"


def _scores_table(infos: Sequence[ScorerInfo], overall: dict[str, dict[str, Any]]) -> Table:
    rows = []
    for info in infos:
        row = overall[info.name]
        spread = ""
        if not info.binary and row["p50"] is not None:
            spread = f"p50 {fmt_value(row['p50'], info)}, p95 {fmt_value(row['p95'], info)}"
        rows.append(
            [
                info.name,
                info.kind,
                fmt_value(row["mean"], info),
                fmt_interval(row["ci_low"], row["ci_high"], info),
                spread,
                f"{row['scored']:,} / {row['rows']:,}",
                f"{row['errors']:,}",
                "higher" if info.higher_is_better else "lower",
            ]
        )
    return Table(
        [
            "scorer",
            "kind",
            "mean",
            "interval",
            "spread",
            "scored / rows",
            "scorer errors",
            "better",
        ],
        rows,
        frozenset({2, 5, 6}),
    )


def _distribution_section(
    variants: Sequence[tuple[str, EvalResult]], infos: Sequence[ScorerInfo]
) -> Section | None:
    section = Section("Distributions")
    for info in infos:
        if info.binary:
            continue
        series = []
        for name, result in variants:
            values = [v for v in result.scored.values(info.name) if v is not None]
            series.append((name or result.job.name, values))
        if not any(values for _, values in series):
            continue
        discrete = info.kind == "llm_judge"
        unit = f" ({info.unit})" if info.unit and info.unit != info.name else ""
        section.charts.append(
            svg.histogram(
                f"{info.name}{unit}", series, x_label=f"{info.name}{unit}", discrete=discrete
            )
        )
    return section if section.charts else None


def _group_section(
    variants: Sequence[tuple[str, EvalResult]], infos: Sequence[ScorerInfo], group_by: str | None
) -> Section | None:
    if group_by is None:
        return None
    shown = [i for i in infos if i.bounds is not None and i.kind not in ("error_rate",)]
    if not shown:
        return None
    section = Section(f"By {group_by}")
    # By group value; None is the NULL group (the overall rows have no `group_by`).
    lookup: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    groups: list[str | None] = []
    for name, result in variants:
        for row in result.metrics.to_pylist():
            if row["group_by"] is None:
                continue
            lookup[(name, row["scorer"], row["group_value"])] = row
            if row["group_value"] not in groups:
                groups.append(row["group_value"])
    if None in groups:
        groups.remove(None)
        groups.append(None)  # the NULL group last, whichever variant had it first
        section.text.append(f"The group NULL, in italics, holds the rows whose {group_by} is NULL.")
    # One count per variant: A and B may hold different rows of a group.
    names = [name for name, _ in variants]
    headers = [group_by, "rows" if len(names) == 1 else f"rows {' / '.join(names)}".strip()]
    for info in shown:
        for name, _ in variants:
            headers.append(f"{info.name} {name}".strip())
    rows = []
    for group in groups:
        counts = []
        for name in names:
            first = lookup.get((name, shown[0].name, group))
            counts.append(f"{first['rows']:,}" if first else "–")
        line = [_group_label(group), " / ".join(counts)]
        for info in shown:
            for name, _ in variants:
                metric = lookup.get((name, info.name, group))
                line.append(_group_cell(metric, info) if metric else "–")
        rows.append(line)
    section.tables.append(Table(headers, rows, frozenset({1})))
    primary = shown[0]
    section.charts.append(
        svg.bar_chart(
            f"{primary.name} by {group_by}",
            [_group_label(g) for g in groups],
            [
                svg.Bars(
                    name or result.job.name,
                    [_get(lookup, name, primary.name, g, "mean") for g in groups],
                    [_get(lookup, name, primary.name, g, "ci_low") for g in groups],
                    [_get(lookup, name, primary.name, g, "ci_high") for g in groups],
                )
                for name, result in variants
            ],
            y_range=primary.bounds,
            italic_categories=frozenset(i for i, g in enumerate(groups) if g is None),
        )
    )
    return section


def _group_cell(metric: dict[str, Any], info: ScorerInfo) -> str:
    """A group's mean and interval; with how many of its rows it is over when the scorer left
    some unscored (errors, skipped agent failures): the rows column counts them all."""
    if metric["mean"] is None:
        text = "–"
    else:
        interval = fmt_interval(metric["ci_low"], metric["ci_high"], info)
        text = f"{fmt_value(metric['mean'], info)} {interval}"
    if metric["scored"] != metric["rows"]:
        text += f" ({metric['scored']:,} of {metric['rows']:,} scored)"
    return text


def _group_label(value: str | None) -> str:
    return NULL if value is None else value


def _get(
    lookup: dict[tuple[str, str, str | None], dict[str, Any]],
    name: str,
    scorer: str,
    group: str | None,
    column: str,
) -> float | None:
    row = lookup.get((name, scorer, group))
    return None if row is None else row[column]


def _failed_rows_section(result: EvalResult, infos: Sequence[ScorerInfo]) -> Section | None:
    graded = [i for i in infos if i.bounds is not None and i.higher_is_better]
    if not graded:
        return None
    primary = graded[0]
    scored = result.scored
    rows = []
    for row in scored.table.to_pylist():
        value = row[primary.name]
        if value is not None and primary.bounds is not None and value <= primary.bounds[0]:
            rows.append(
                [
                    _cell(row[scored.key]),
                    _cell(row.get(scored.expected)) if scored.expected else "",
                    _cell(row["response"]),
                    _cell(row["agent_error"]),
                ]
            )
    if not rows:
        return None
    total = len(rows)
    section = Section(
        f"Rows failing {primary.name}",
        text=[f"{total:,} row(s); the first {min(total, FAILED_ROWS_SHOWN)} are shown."],
    )
    section.tables.append(
        Table([scored.key, "expected", "response", "agent error"], rows[:FAILED_ROWS_SHOWN])
    )
    return section


def _errors_section(result: EvalResult, infos: Sequence[ScorerInfo]) -> Section | None:
    scored = result.scored
    rows = []
    for info in infos:
        messages = [
            (row[scored.key], row[f"{info.name}_error"])
            for row in scored.table.select([scored.key, f"{info.name}_error"]).to_pylist()
            if row[f"{info.name}_error"] is not None
        ]
        for key, message in messages[:ERRORS_SHOWN]:
            rows.append([info.name, _cell(key), _cell(message, 160)])
    if not rows:
        return None
    section = Section(
        "Scoring errors", text=["Rows a scorer could not score (first few per scorer)."]
    )
    section.tables.append(Table(["scorer", scored.key, "error"], rows))
    return section


# -- a comparison -------------------------------------------------------------------------------


def compare_report(result: CompareResult) -> Report:
    a, b, comparison = result.a, result.b, result.comparison
    infos = list(a.scored.scorers)
    by_name = {info.name: info for info in infos}
    facts = [
        ("job", a.job.name if a.job.name == b.job.name else f"{a.job.name} vs {b.job.name}"),
        (f"A ({a.variant})", a.endpoint),
        (f"B ({b.variant})", b.endpoint),
        ("target", a.target),
        ("paired rows", f"{comparison.paired_rows:,}"),
        ("only in A / only in B", f"{comparison.only_a:,} / {comparison.only_b:,}"),
        *(
            (f"{side} {name}", value)
            for side, variant in (("A", a), ("B", b))
            for name, value in coverage_facts(variant)
        ),
        ("comparison table", result.comparison_table),
        ("evaluated at", b.evaluated_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    summary_rows = comparison.summary.to_pylist()
    head = Section(
        "Head to head",
        text=[
            "A win is the better score on a row (lower for latency, tokens and error rate). "
            "Per scorer, A, B and their delta (B − A, with a paired bootstrap interval) are "
            "over the rows both variants scored (rows): a row either could not score is left "
            "out of both, so A and B may differ from the variants' own means (the chart, the "
            "metrics tables). p is the two-sided sign test on wins against losses."
        ],
    )
    proportion = [
        by_name[r["scorer"]]
        for r in summary_rows
        if by_name[r["scorer"]].binary and by_name[r["scorer"]].higher_is_better
    ]
    overall_a = by_scorer(a.metrics)
    overall_b = by_scorer(b.metrics)
    if proportion:
        head.charts.append(
            svg.bar_chart(
                "Share of rows passing: A vs B",
                [i.name for i in proportion],
                [
                    svg.Bars(
                        f"A ({a.variant})",
                        [overall_a[i.name]["mean"] for i in proportion],
                        [overall_a[i.name]["ci_low"] for i in proportion],
                        [overall_a[i.name]["ci_high"] for i in proportion],
                    ),
                    svg.Bars(
                        f"B ({b.variant})",
                        [overall_b[i.name]["mean"] for i in proportion],
                        [overall_b[i.name]["ci_low"] for i in proportion],
                        [overall_b[i.name]["ci_high"] for i in proportion],
                    ),
                ],
                y_label="share of rows",
                y_range=(0.0, 1.0),
            )
        )
    rows = []
    for row in summary_rows:
        info = by_name[row["scorer"]]
        rows.append(
            [
                info.name,
                f"{row['paired']:,}",
                fmt_value(row["mean_a"], info),
                fmt_value(row["mean_b"], info),
                fmt_delta(row["delta"], info),
                _delta_interval(row["delta_ci_low"], row["delta_ci_high"], info),
                f"{row['wins_a']:,}",
                f"{row['ties']:,}",
                f"{row['wins_b']:,}",
                f"{row['p_value']:.3g}",
            ]
        )
    head.tables.append(
        Table(
            [
                "scorer",
                "rows",
                "A",
                "B",
                "delta",
                "delta interval",
                "A wins",
                "ties",
                "B wins",
                "p",
            ],
            rows,
            frozenset({1, 2, 3, 4, 6, 7, 8, 9}),
        )
    )
    sections = [head]
    variants = [(f"A ({a.variant})", a), (f"B ({b.variant})", b)]
    distribution = _distribution_section(variants, infos)
    if distribution is not None:
        sections.append(distribution)
    grouped = _group_section([(a.variant, a), (b.variant, b)], infos, a.scored.group_by)
    if grouped is not None:
        sections.append(grouped)
    if comparison.disagreements:
        shown = [name for name in comparison.disagreements[0]["scores"]]
        table_rows = []
        for entry in comparison.disagreements:
            scores = "; ".join(
                f"{name} {_short(entry['scores'][name][0])}→{_short(entry['scores'][name][1])}"
                for name in shown
                if entry["scores"][name][0] != entry["scores"][name][1]
            )
            table_rows.append(
                [
                    _cell(entry["key"]),
                    _cell(entry["expected"]),
                    _cell(entry["response_a"] or entry["error_a"], 80),
                    _cell(entry["response_b"] or entry["error_b"], 80),
                    scores,
                ]
            )
        section = Section(
            "Rows where A and B disagree most",
            text=["Ranked by the summed difference of bounded scores (A→B)."],
        )
        section.tables.append(
            Table([a.scored.key, "expected", "A answer", "B answer", "scores A→B"], table_rows)
        )
        sections.append(section)
    title = f"Comparison: {a.variant} vs {b.variant} ({a.job.name})"
    return Report(title, facts, sections)


def _short(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:g}"
