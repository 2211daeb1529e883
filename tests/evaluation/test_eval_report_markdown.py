"""report.md renders agent text as the text it is. It used to escape `<` and `>` only, so an answer
(or an expected value, a key, an error) holding Markdown - `[click](http://evil)`,
`![x](http://track)` - became a live link or an image that loads when report.md is opened in a
Markdown viewer (report.html was already safe). Checked with a real CommonMark renderer
(markdown-it-py, rich's own dependency) with GitHub's tables and strikethrough turned on."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import cmarkgfm
import pyarrow as pa
from markdown_it import MarkdownIt

from agentbatch.evaluation.comparison import compare_scores
from agentbatch.evaluation.metrics import compute_metrics
from agentbatch.evaluation.report.content import compare_report, eval_report
from agentbatch.evaluation.report.markdown import to_markdown
from agentbatch.evaluation.results import CompareResult, EvalResult
from agentbatch.evaluation.scoring import Scored
from agentbatch.evaluation.text import preview
from tests.evaluation.test_eval_aggregates import EXACT, JOB

HOSTILE = [
    "[click](http://evil.example/x)",
    "![x](http://track.example/pixel.png)",
    "<img src=http://track.example/p.png> <a href='http://evil.example'>a</a>",
    "<http://evil.example/auto>",
    "[ref][1] and ![i][1]",
    "*stars* _under_ __strong__ `code` ~~gone~~ **bold**",
    "a | pipe \\| escaped \\\\| twice",
    "line one\nline two\r\nthree\rfour",
    "&lt;entity&gt; &amp; &#60;b&#62; &copy;",
    "# not a heading ## \\ trailing backslash \\",
    "label_exact_match snake_case_words 1_000",
]
# An ordinary answer must come out as written.
ORDINARY = ["The invoice is due (see section 3.2) - thanks!", "billing", "it's 50% off, +1"]


class _Html(HTMLParser):
    """The elements and the table cells' text of rendered Markdown."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def rendered(markdown: str) -> _Html:
    html = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)
    parsed = _Html()
    parsed.feed(html)
    parsed.close()
    return parsed


def rendered_on_github(markdown: str) -> _Html:
    """As GitHub shows report.md: its cmark fork with the GFM extensions (autolinks included)."""
    parsed = _Html()
    parsed.feed(cmarkgfm.github_flavored_markdown_to_html(markdown))
    parsed.close()
    return parsed


def hostile_result(
    texts: list[str], variant: str = "", keys: list[str] | None = None, score: float = 0.0
) -> EvalResult:
    n = len(texts)
    table = pa.table(
        {
            "id": keys or [f"k{i} {t}" for i, t in enumerate(texts)],
            "label": [f"expected {t}" for t in texts],
            "response": texts,
            "agent_error": [f"error {t}" for t in texts],
            "exact": pa.array([score] * n, pa.float64()),
            "exact_error": pa.array([None] * n, pa.string()),
        }
    )
    data = Scored(table, (EXACT,), key="id", expected="label", group_by=None)
    return EvalResult(
        job=JOB, variant=variant, endpoint="apps/x -> http://127.0.0.1:1/[x](y)", scored=data,
        metrics=compute_metrics(data), answers_table="main.s.o", scores_table="main.s.o_scores",
        metrics_table="main.s.o_metrics",
    )  # fmt: skip


def test_agent_text_makes_no_link_image_or_html() -> None:
    texts = HOSTILE + ORDINARY
    markdown = to_markdown(eval_report(hostile_result(texts)))
    assert not {"a", "img"} & set(rendered(markdown).tags)
    assert not {"a", "img"} & set(rendered_on_github(markdown).tags)
    # The failing rows: a table and nothing else (no emphasis, code, strikethrough, heading).
    failing = markdown.split("## Rows failing exact")[1]
    page = rendered(failing)
    assert set(page.tags) == {"p", "table", "thead", "tbody", "tr", "th", "td"}
    # Every row of it is one row of four cells: pipes and line breaks in the data never split
    # or end one.
    body = [line for line in failing.splitlines() if line.startswith("| k")]
    assert len(body) == 10  # FAILED_ROWS_SHOWN
    assert len(page.cells) == 4 * 11
    for text in texts[:10]:
        shown = preview(text, 100)
        assert shown in page.cells, (text, markdown)
        assert f"expected {shown}"[:100] in {c[:100] for c in page.cells}


def test_a_comparison_report_escapes_both_answers() -> None:
    keys = [f"k{i} {t}" for i, t in enumerate(HOSTILE)]
    a = hostile_result(HOSTILE, "a", keys)
    b = hostile_result(list(reversed(HOSTILE)), "b", keys, score=1.0)
    result = CompareResult(a, b, compare_scores(a.scored, b.scored), "main.s.o_comparison")
    markdown = to_markdown(compare_report(result))
    assert not {"a", "img"} & set(rendered(markdown).tags)
    disagree = rendered(markdown.split("## Rows where A and B disagree most")[1])
    assert set(disagree.tags) == {"p", "table", "thead", "tbody", "tr", "th", "td"}
    assert len(disagree.cells) == 5 * 11
    for row, text in enumerate(HOSTILE[:10]):
        cells = disagree.cells[5 * (row + 1) : 5 * (row + 2)]
        assert cells[:4] == [
            preview(keys[row], 100),
            preview(f"expected {text}", 100),
            preview(text, 80),
            preview(HOSTILE[-1 - row], 80),
        ]


def test_the_report_keeps_its_own_formatting() -> None:
    markdown = to_markdown(eval_report(hostile_result(ORDINARY)))
    page = rendered(markdown)
    assert "strong" in page.tags  # the facts' names
    assert "| exact | exact_match | 0.0% |" in markdown
    for text in ORDINARY:  # plain text stays plain in the file too
        assert f"| {text} |" in markdown
    assert re.search(r"^# Evaluation: ", markdown)


def test_bare_urls_in_answers_are_no_links_on_github() -> None:
    """GitHub links a bare `http://...` or `www....` in Markdown text: an answer naming a URL
    (a phishing link an agent was talked into, a tracking page) became a live link in report.md
    on GitHub while report.html showed text."""
    texts = [
        "see http://evil.example/x now",
        "HTTPS://evil.example/upper",
        "ftp://files.example/z",
        "www.evil.example/path",
        "(WWW.evil.example) and https://www.evil.example",
        "ratio 3:1 // and xwww.not.example",
    ]
    markdown = to_markdown(eval_report(hostile_result(texts)))
    page = rendered_on_github(markdown)
    assert "a" not in page.tags
    for text in texts:  # shown as written
        assert preview(text, 100) in page.cells, markdown
