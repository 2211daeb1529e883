"""A report as Markdown (charts are in the HTML page)."""

from __future__ import annotations

import re

from agentbatch.evaluation.report.content import Null, Report, Table

# Answers, expected values, keys and errors are data: in a Markdown viewer they must read as the
# text they are, never turn into a link, an image, HTML, emphasis or code. No library at hand
# escapes Markdown (markdown-it-py, which rich brings, renders it), so this escapes what
# CommonMark and GitHub's tables give a meaning inside a line, with a backslash (CommonMark
# allows one before any ASCII punctuation, and it is not shown): `\` and backtick (code), `*`
# and `~` (emphasis, strikethrough), `|` (a table's cell), `_` unless between two letters or
# digits (where it never means emphasis, so scorer names stay readable), `]` before `(` or `[`
# (what makes `[text](url)`, `![alt](url)` and `[text][ref]` a link or an image: a lone `[` is
# text, so the report's own intervals read `[0.80, 0.90]`), and `<`, `>`, `&` as HTML entities
# (raw HTML, `<http://...>` autolinks, and an entity such as `&lt;` shown as written). Block
# syntax (`#`, `>`, `-` at a line's start, link reference definitions) needs a line start, which
# a table cell does not have; a cell's line breaks become spaces. GitHub also links bare URLs
# (`http://`, `https://`, `ftp://`, `www.`): the `:` before `//` and the `.` after `www` are
# escaped, which its autolinker then passes over. A bare e-mail address is still linked (as
# `mailto:`; GitHub finds those after escapes are read, so no escape stops it).
_SIGNIFICANT = re.compile(
    r"[\\`*~|]|\](?=[(\[])|(?<![^\W_])_|_(?![^\W_])|(?<=[A-Za-z]):(?=//)|(?<=[wW]{3})\."
)
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_HTML = re.compile(r"[&<>]")
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def to_markdown(report: Report) -> str:
    lines = [f"# {escape(report.title)}", ""]
    lines += _lines(["", ""], [[f"**{escape(k)}**", escape(v)] for k, v in report.facts])
    for section in report.sections:
        lines += ["", f"## {escape(section.title)}", ""]
        for paragraph in section.text:
            lines += [escape(paragraph), ""]
        for table in section.tables:
            lines += [*_table(table), ""]
        if section.charts:
            lines += [f"_{len(section.charts)} chart(s) in report.html_", ""]
    return "\n".join(lines).rstrip() + "\n"


def escape(text: str) -> str:
    """`text` as Markdown that renders as `text`, on one line (line breaks become spaces)."""
    if isinstance(text, Null):
        return f"*{text}*"  # NULL set apart: a value's own `*` is escaped
    text = _LINE_BREAKS.sub(" ", text)
    text = _HTML.sub(lambda m: _ENTITIES[m.group(0)], text)
    return _SIGNIFICANT.sub(lambda m: "\\" + m.group(0), text)


def _table(table: Table) -> list[str]:
    rows = [[escape(cell) for cell in row] for row in table.rows]
    return _lines([escape(h) for h in table.headers], rows, table.numeric)


def _lines(
    headers: list[str], rows: list[list[str]], numeric: frozenset[int] = frozenset()
) -> list[str]:
    """A table of escaped cells."""
    rule = "|" + "|".join("---:" if i in numeric else "---" for i in range(len(headers))) + "|"
    return ["| " + " | ".join(headers) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]
