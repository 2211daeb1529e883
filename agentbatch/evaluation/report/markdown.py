"""A report as Markdown (charts are in the HTML page)."""

from __future__ import annotations

from agentbatch.evaluation.report.content import Null, Report, Table


def to_markdown(report: Report) -> str:
    lines = [f"# {_text(report.title)}", ""]
    lines += _table(Table(["", ""], [[f"**{k}**", v] for k, v in report.facts]))
    for section in report.sections:
        lines += ["", f"## {_text(section.title)}", ""]
        for paragraph in section.text:
            lines += [_text(paragraph), ""]
        for table in section.tables:
            lines += [*_table(table), ""]
        if section.charts:
            lines += [f"_{len(section.charts)} chart(s) in report.html_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _table(table: Table) -> list[str]:
    header = "| " + " | ".join(_cell(h) for h in table.headers) + " |"
    rule = (
        "|"
        + "|".join("---:" if i in table.numeric else "---" for i in range(len(table.headers)))
        + "|"
    )
    body = ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return [header, rule, *body]


def _cell(text: str) -> str:
    if isinstance(text, Null):
        return f"*{text}*"  # NULL set apart from a value's own text
    return _text(text).replace("|", "\\|").replace("\n", " ")


def _text(text: str) -> str:
    # Answers are data: keep them from turning into HTML or links in a Markdown viewer.
    return text.replace("<", "&lt;").replace(">", "&gt;")
