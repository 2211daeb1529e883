"""Found by an audit of what `eval` and `compare` print and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentbatch.cli.main import main
from agentbatch.evaluation.comparison import compare_scores
from agentbatch.evaluation.metrics import compute_metrics, overall
from agentbatch.evaluation.report.content import eval_report
from agentbatch.evaluation.report.files import write_compare_report
from agentbatch.evaluation.report.markdown import to_markdown
from agentbatch.evaluation.results import CompareResult
from agentbatch.testing.agent_server import AgentServer
from tests.evaluation.test_eval_aggregates import eval_result, scored
from tests.evaluation.test_eval_cli import eval_args


@pytest.mark.parametrize("folder", ["[v1]", "[/x]"])
def test_the_printed_report_path_is_the_path_written(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    """rich read a `[...]` in a printed path as markup: `--report out/[v1]` printed
    `out//report.md` (a folder that does not exist), and `[/x]` stopped the command on a
    MarkupError after everything was written. A path longer than 80 characters (this test's)
    was broken across lines when stdout is not a terminal."""
    report = project / "out" / "reports-of-the-triage-evaluation-this-quarter" / folder
    assert len(str(report / "report.html")) > 80
    assert main(eval_args(project, demo_agent, "--no-mlflow", "--report", str(report))) == 0
    printed = capsys.readouterr().out
    assert (report / "report.md").is_file()
    assert f"report:  {report / 'report.md'}" in printed


def test_one_scored_row_gives_a_mean_without_an_interval(tmp_path: Path) -> None:
    """A bootstrap from one value resamples that value only: the metrics (and the report, the
    CLI, MLflow) said `4.00 [4.00, 4.00]`, a 95% interval of zero width from a single row. It
    has none now (shown "–"); a comparison over one pair has no delta interval, and its
    metrics.json stays valid JSON (no NaN)."""
    one = scored([1.0], [30.0], [4.0])
    metrics = {row["scorer"]: row for row in overall(compute_metrics(one))}
    judge = metrics["judge"]
    assert (judge["mean"], judge["ci_low"], judge["ci_high"]) == (4.0, None, None)
    assert metrics["exact"]["ci_low"] is not None  # Wilson: an interval from one row
    markdown = to_markdown(eval_report(eval_result(one)))
    assert "| judge | llm_judge | 4.00 | – |" in markdown
    a, b = eval_result(one, "a"), eval_result(scored([0.0], [20.0], [5.0]), "b")
    comparison = compare_scores(a.scored, b.scored)
    row = {r["scorer"]: r for r in comparison.summary.to_pylist()}["judge"]
    assert (row["delta"], row["delta_ci_low"], row["delta_ci_high"]) == (1.0, None, None)
    write_compare_report(CompareResult(a, b, comparison, "main.s.o_c"), tmp_path)

    def no_nan(constant: str) -> None:
        raise AssertionError(f"{constant} in metrics.json")

    json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_nan)


def test_a_scorer_named_as_another_scorers_interval_is_refused(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """MLflow logs scorer `latency`'s interval as `latency_ci_low` / `latency_ci_high`: a scorer
    named `latency_ci_low` was logged under the same name, and one silently replaced the other
    (MLflow's `latency_ci_low` was that scorer's mean). Refused with the spec's other errors,
    before anything is sent."""
    job = project / "jobs" / "eval_triage.yml"
    job.write_text(
        job.read_text().replace(
            "    - latency:\n", "    - latency:\n    - json_valid: {name: latency_ci_low}\n"
        )
    )
    assert "latency_ci_low" in job.read_text()
    assert main(eval_args(project, demo_agent, "--no-mlflow")) == 2
    err = capsys.readouterr().err
    assert "the scorer name 'latency_ci_low' is the MLflow metric of scorer 'latency'" in err
    assert not (project / ".agentbatch" / "warehouse" / "main.duckdb").exists()


def test_a_group_says_how_many_of_its_rows_its_mean_is_over() -> None:
    """The per-group table showed a group's rows beside its mean, with no word that the mean
    was over fewer rows when a scorer could not score some (the overall table says "scored /
    rows"): group "a" read `rows 2, exact 0.0%` over its one scored row, and a group no row of
    which was scored read `– –`."""
    result = eval_result(scored([1.0, 0.0, None, None], [10.0, 20.0, 30.0, 40.0], [1.0] * 4))
    by_label = to_markdown(eval_report(result)).split("## By label")[1]
    rows = [line for line in by_label.splitlines() if line.startswith("| a |")]
    assert rows[0].split(" | ")[2] == "0.0% [0.0%, 79.3%] (1 of 2 scored)"
    assert "| b | 2 | 100.0% [20.7%, 100.0%] (1 of 2 scored) |" in by_label
    nothing = eval_result(scored([None, None], [1.0, 2.0], [1.0, 2.0]))
    by_label = to_markdown(eval_report(nothing)).split("## By label")[1]
    assert "| b | 1 | – (0 of 1 scored) |" in by_label
