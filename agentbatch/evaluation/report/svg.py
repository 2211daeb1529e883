"""Hand-built inline SVG charts for the HTML report: no plotting library, no scripts, no network.

Two charts: grouped bars with confidence whiskers, and overlaid histograms. Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")
_FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\""
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 56, 16, 40, 64


@dataclass(frozen=True)
class Bars:
    """One series of a bar chart: a value per category, with an optional interval."""

    name: str
    values: Sequence[float | None]
    lows: Sequence[float | None] = ()
    highs: Sequence[float | None] = ()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = [round(first, 10)]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(first + step * len(ticks), 10))
    return ticks


def _label(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}" if value == round(value, 2) else f"{value:.2f}"


def _frame(width: int, height: int, title: str, body: list[str], legend: Sequence[str]) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" {_FONT}>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{_MARGIN_LEFT}" y="22" font-size="15" font-weight="600" fill="#222">{escape(title)}</text>',
        *body,
    ]
    x = width - _MARGIN_RIGHT
    for number, name in reversed(list(enumerate(legend))):
        x -= 12 + 7 * len(name) + 16
        parts.append(
            f'<rect x="{x}" y="12" width="12" height="12" fill="{PALETTE[number % len(PALETTE)]}"/>'
            f'<text x="{x + 16}" y="22" font-size="12" fill="#333">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _y_axis(
    ticks: list[float], scale: float, low: float, plot_bottom: int, width: int, label: str
) -> list[str]:
    out = []
    for tick in ticks:
        y = plot_bottom - (tick - low) * scale
        out.append(
            f'<line x1="{_MARGIN_LEFT}" y1="{y:.1f}" x2="{width - _MARGIN_RIGHT}" y2="{y:.1f}" '
            f'stroke="#e5e5e5"/><text x="{_MARGIN_LEFT - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#555">{_label(tick)}</text>'
        )
    if label:
        out.append(
            f'<text x="14" y="{(_MARGIN_TOP + plot_bottom) / 2:.1f}" font-size="11" fill="#555" '
            f'transform="rotate(-90 14 {(_MARGIN_TOP + plot_bottom) / 2:.1f})" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    return out


def bar_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[Bars],
    *,
    y_label: str = "",
    y_range: tuple[float, float] | None = None,
    width: int = 720,
    height: int = 320,
    italic_categories: frozenset[int] = frozenset(),
) -> str:
    """Grouped bars, one group per category, with whiskers where lows/highs are given; the
    categories at `italic_categories` are labelled in italics (a NULL group, set apart from a
    value whose text is "NULL")."""
    finite = [
        v for s in series for v in (*s.values, *s.highs) if v is not None and math.isfinite(v)
    ]
    low, high = (
        y_range if y_range else (min(0.0, *finite) if finite else 0.0, max(finite, default=1.0))
    )
    ticks = nice_ticks(low, high)
    low, high = min(low, ticks[0]), max(high, ticks[-1])
    plot_bottom = height - _MARGIN_BOTTOM
    scale = (plot_bottom - _MARGIN_TOP) / (high - low or 1.0)
    body = _y_axis(ticks, scale, low, plot_bottom, width, y_label)
    slot = (width - _MARGIN_LEFT - _MARGIN_RIGHT) / max(1, len(categories))
    bar = min(48.0, slot * 0.8 / max(1, len(series)))
    labels = axis_labels(categories)
    for index, category in enumerate(categories):
        centre = _MARGIN_LEFT + slot * (index + 0.5)
        start = centre - bar * len(series) / 2
        for number, one in enumerate(series):
            value = one.values[index] if index < len(one.values) else None
            x = start + number * bar
            color = PALETTE[number % len(PALETTE)]
            if value is None or not math.isfinite(value):
                continue
            top = plot_bottom - (max(value, low) - low) * scale
            body.append(
                f'<rect x="{x + 1:.1f}" y="{top:.1f}" width="{bar - 2:.1f}" '
                f'height="{max(0.0, plot_bottom - top):.1f}" fill="{color}">'
                f"<title>{escape(one.name)} {escape(category)}: {_label(value)}</title></rect>"
            )
            lo = one.lows[index] if index < len(one.lows) else None
            hi = one.highs[index] if index < len(one.highs) else None
            if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                mid = x + bar / 2
                y_lo, y_hi = plot_bottom - (lo - low) * scale, plot_bottom - (hi - low) * scale
                body.append(
                    f'<path d="M{mid:.1f} {y_lo:.1f}V{y_hi:.1f}M{mid - 5:.1f} {y_lo:.1f}h10'
                    f'M{mid - 5:.1f} {y_hi:.1f}h10" stroke="#222" stroke-width="1.3" fill="none"/>'
                )
        italic = ' font-style="italic"' if index in italic_categories else ""
        body.append(
            f'<text x="{centre:.1f}" y="{plot_bottom + 16}" font-size="11" text-anchor="middle" '
            f'fill="#333"{italic}>{escape(labels[index])}</text>'
        )
    body.append(
        f'<line x1="{_MARGIN_LEFT}" y1="{plot_bottom}" x2="{width - _MARGIN_RIGHT}" '
        f'y2="{plot_bottom}" stroke="#999"/>'
    )
    return _frame(width, height, title, body, [s.name for s in series] if len(series) > 1 else [])


def axis_labels(categories: Sequence[str], limit: int = 18) -> list[str]:
    """Labels of at most `limit` characters that tell the categories apart: a long name keeps its
    start and its end (scorers and groups often differ only at the end: `judge_correctness_a`,
    `judge_correctness_b`); names that still read alike are numbered. The full name is each
    bar's tooltip."""
    head = (limit - 1) // 2
    tail = limit - 1 - head
    labels = [c if len(c) <= limit else c[:head] + "…" + c[-tail:] for c in categories]
    repeated = {label for label in labels if labels.count(label) > 1}
    for index, label in enumerate(labels):
        if label in repeated and len(categories[index]) > limit:
            number = f" #{index + 1}"
            labels[index] = categories[index][: limit - len(number) - 1] + "…" + number
    return labels


def histogram(
    title: str,
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    x_label: str = "",
    bins: int = 20,
    discrete: bool = False,
    width: int = 720,
    height: int = 320,
) -> str:
    """Overlaid histograms (counts), shared bins; `discrete` puts one bar on each whole value."""
    values = [v for _, vs in series for v in vs if math.isfinite(v)]
    if not values:
        return _frame(width, height, title, [_empty(width, height)], [])
    low, high = min(values), max(values)
    # Whole numbers over a short range (token counts, judge scores): one bar per value.
    discrete = discrete or (all(v == int(v) for v in values) and high - low <= 40)
    if discrete:
        # At least five slots, so one or two values do not fill the whole width.
        spare = max(0, 5 - (math.ceil(high) - math.floor(low) + 1))
        first, last = math.floor(low) - spare // 2, math.ceil(high) + spare - spare // 2
        edges = [v - 0.5 for v in range(first, last + 2)]
    else:
        if high == low:
            low, high = low - 0.5, high + 0.5
        step = (high - low) / bins
        edges = [low + step * i for i in range(bins + 1)]
    counts = [_bin_counts(vs, edges) for _, vs in series]
    top = max((c for row in counts for c in row), default=1) or 1
    ticks = nice_ticks(0, top)
    plot_bottom = height - _MARGIN_BOTTOM
    scale = (plot_bottom - _MARGIN_TOP) / (ticks[-1] or 1)
    body = _y_axis(ticks, scale, 0.0, plot_bottom, width, "rows")
    x_scale = (width - _MARGIN_LEFT - _MARGIN_RIGHT) / (edges[-1] - edges[0])
    opacity = 0.85 if len(series) == 1 else 0.55
    for number, row in enumerate(counts):
        color = PALETTE[number % len(PALETTE)]
        for index, count in enumerate(row):
            if not count:
                continue
            x = _MARGIN_LEFT + (edges[index] - edges[0]) * x_scale
            w = (edges[index + 1] - edges[index]) * x_scale
            y = plot_bottom - count * scale
            body.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(1.0, w - 1):.1f}" '
                f'height="{plot_bottom - y:.1f}" fill="{color}" fill-opacity="{opacity}">'
                f"<title>{escape(series[number][0])}: {count} row(s) in "
                f"[{_label(edges[index])}, {_label(edges[index + 1])})</title></rect>"
            )
    for tick in (
        nice_ticks(edges[0], edges[-1], 6) if not discrete else [e + 0.5 for e in edges[:-1]]
    ):
        if not edges[0] <= tick <= edges[-1]:
            continue
        x = _MARGIN_LEFT + (tick - edges[0]) * x_scale
        body.append(
            f'<text x="{x:.1f}" y="{plot_bottom + 16}" font-size="11" text-anchor="middle" '
            f'fill="#555">{_label(tick)}</text>'
        )
    body.append(
        f'<line x1="{_MARGIN_LEFT}" y1="{plot_bottom}" x2="{width - _MARGIN_RIGHT}" '
        f'y2="{plot_bottom}" stroke="#999"/>'
    )
    if x_label:
        body.append(
            f'<text x="{(width + _MARGIN_LEFT) / 2:.1f}" y="{height - 18}" font-size="11" '
            f'text-anchor="middle" fill="#555">{escape(x_label)}</text>'
        )
    legend = [name for name, _ in series] if len(series) > 1 else []
    return _frame(width, height, title, body, legend)


def _bin_counts(values: Sequence[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    width = edges[-1] - edges[0]
    for value in values:
        if not math.isfinite(value):
            continue
        index = int((value - edges[0]) / width * (len(edges) - 1)) if width else 0
        counts[min(max(index, 0), len(counts) - 1)] += 1
    return counts


def _empty(width: int, height: int) -> str:
    return (
        f'<text x="{width / 2}" y="{height / 2}" font-size="13" text-anchor="middle" '
        f'fill="#888">no values</text>'
    )
