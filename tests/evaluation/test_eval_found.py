"""Found by an audit of what `eval` and `compare` report.

`--skip-run` over a source whose key repeats: a run refuses such a source before anything is sent
(one key, one answer); scoring it without a run picked one of the key's source rows at random for
its expected value, and counted the key twice as selected (one "unanswered"). It is refused as a
run refuses it, before anything is written."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from agentbatch.errors import UsageError
from agentbatch.evaluation.comparison import compare_scores
from agentbatch.evaluation.report.content import compare_report
from agentbatch.evaluation.report.markdown import to_markdown
from agentbatch.evaluation.report.mlflow_log import log_to_mlflow
from agentbatch.evaluation.results import CompareResult
from agentbatch.evaluation.run import compare, evaluate
from tests.evaluation.test_eval_aggregates import eval_result, scored
from tests.evaluation.test_eval_current_rows import (
    TICKETS,
    accuracy,
    agent,
    job_file,
    write_source,
)
from tests.support.eval_servers import wrong_label


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_skip_run_over_a_repeated_source_key_is_refused(project: Path, command: str) -> None:
    job = job_file(project, "merge")
    with agent() as server:
        endpoints = {"apps/triage-agent": server.url}
        tables = write_source(project, TICKETS)
        first = evaluate(job, tables=tables, endpoints=endpoints, progress=False)
        assert accuracy(first) == (20, 1.0)
        if command == "compare":
            compare(job, endpoint_b=server.url, tables=tables, endpoints=endpoints, progress=False)
        # The first ticket again, its label another: which is the key's expected label?
        again = {**TICKETS[0], "label": wrong_label(TICKETS[0]["label"])}
        write_source(project, [*TICKETS, again])
        with pytest.raises(UsageError, match="source key 'ticket_id' is not unique"):
            if command == "eval":
                evaluate(job, tables=tables, endpoints=endpoints, progress=False, skip_run=True)
            else:
                compare(
                    job,
                    endpoint_b=server.url,
                    skip_run=True,
                    tables=tables,
                    endpoints=endpoints,
                    progress=False,
                )
        assert server.requests == (20 if command == "eval" else 60)  # compare: A and B
    # Refused before writing: the earlier scores are left as they were.
    database = project / ".agentbatch" / "warehouse" / "main.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        names = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"current_out_scores", "current_out_metrics"} <= names


# A compare's head to head gives, per scorer, A's and B's means over the rows both variants
# scored: a row either could not score (a judge's failure, a missing expected value) is left out
# of both. Without the count of those rows, "A 2.00" beside A's own mean (3.00, in the chart, the
# metrics table and MLflow's a/judge) read as two answers to one question.


def _judge_compared() -> CompareResult:
    a = eval_result(scored([1.0, 0.0, 1.0], [1.0, 2.0, 3.0], [1.0, 5.0, 3.0]), "a")
    b = eval_result(scored([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [4.0, None, 4.0]), "b")
    return CompareResult(a, b, compare_scores(a.scored, b.scored), "main.s.o_comparison")


def test_the_compare_report_says_how_many_rows_each_scorer_compared() -> None:
    result = _judge_compared()
    assert result.a.metric("judge")["mean"] == 3.0  # A's own mean, over its 3 rows
    markdown = to_markdown(compare_report(result))
    head = markdown.split("## Head to head")[1].split("\n## ")[0]
    lines = [line for line in head.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| scorer | rows | A | B | delta |")
    assert any(line.startswith("| judge | 2 | 2.00 | 4.00 | +2.00 |") for line in lines)
    assert any(line.startswith("| exact | 3 | 66.7% | 100.0% | +33.3 pts |") for line in lines)


def test_mlflow_logs_the_rows_a_delta_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_id = log_to_mlflow(_judge_compared(), mode=True)
    assert run_id is not None
    metrics = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    assert metrics["a/judge"] == 3.0 and metrics["b/judge"] == 4.0
    assert metrics["compare/judge/delta"] == 2.0 and metrics["compare/judge/paired"] == 2.0
    assert metrics["compare/exact/paired"] == 3.0
