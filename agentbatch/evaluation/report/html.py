"""A report as one self-contained HTML page: inline CSS and inline SVG charts, no scripts, no
external resources, so it opens offline and can be attached anywhere."""

from __future__ import annotations

from html import escape

from agentbatch.evaluation.report.content import Null, Report, Table

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; color: #222;
       margin: 24px auto; max-width: 1100px; padding: 0 16px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid #e2e2e2; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts td:first-child { font-weight: 600; background: #fafafa; }
figure { margin: 8px 0 16px; }
p { margin: 6px 0; font-size: 14px; color: #444; }
td { max-width: 420px; overflow-wrap: anywhere; }
"""


def to_html(report: Report) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(report.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        '<table class="facts">',
        *(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in report.facts),
        "</table>",
    ]
    for section in report.sections:
        parts.append(f"<section><h2>{escape(section.title)}</h2>")
        parts += [f"<p>{escape(text)}</p>" for text in section.text]
        parts += [f'<figure class="chart">{chart}</figure>' for chart in section.charts]
        parts += [_table(table) for table in section.tables]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    rows = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{_text(c)}</td>' if i in table.numeric else f"<td>{_text(c)}</td>"
            for i, c in enumerate(row)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _text(cell: str) -> str:
    return f"<em>{escape(cell)}</em>" if isinstance(cell, Null) else escape(cell)
