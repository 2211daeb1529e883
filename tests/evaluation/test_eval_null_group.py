"""A group column's NULL is a group of its own, kept NULL: the metrics used to write it as the text
"(null)", so the rows whose group value *is* the text "(null)" were merged with the NULL rows, and
no output (the metrics table, the report) could tell them apart. Now the NULL group's
`group_value` is NULL (the overall rows are those whose `group_by` is NULL), and the report shows
it as an italic NULL, apart from any value's own text."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from agentbatch.cli.main import main
from agentbatch.evaluation import evaluate
from agentbatch.evaluation.metrics import compute_metrics, overall
from agentbatch.evaluation.report.content import eval_report
from agentbatch.evaluation.report.html import to_html
from agentbatch.evaluation.report.markdown import to_markdown
from agentbatch.evaluation.report.mlflow_log import log_to_mlflow
from agentbatch.evaluation.results import EvalResult
from agentbatch.evaluation.scoring import Scored
from agentbatch.testing.agent_server import AgentServer
from tests.evaluation.test_eval_aggregates import EXACT, JOB, charts
from tests.evaluation.test_eval_databricks_sql import TOKEN, judge, on_warehouse, warehouse
from tests.support.databricks_env import isolate
from tests.support.eval_servers import TICKETS_CSV

__all__ = ["judge", "warehouse"]  # the loopback warehouse's fixtures, used below

# Rows 0..5: the group column NULL, the text "(null)", "a".
CHANNELS = [None, "(null)", "a", None, "(null)", None]
EXACT_SCORES = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def null_grouped() -> EvalResult:
    table = pa.table(
        {
            "id": list(range(len(CHANNELS))),
            "channel": pa.array(CHANNELS, pa.string()),
            "response": ["r"] * len(CHANNELS),
            "agent_error": pa.array([None] * len(CHANNELS), pa.string()),
            "exact": pa.array(EXACT_SCORES, pa.float64()),
            "exact_error": pa.array([None] * len(CHANNELS), pa.string()),
        }
    )
    data = Scored(table, (EXACT,), key="id", expected=None, group_by="channel")
    return EvalResult(
        job=JOB, variant="", endpoint="e1", scored=data, metrics=compute_metrics(data),
        answers_table="main.s.o", scores_table="main.s.o_scores", metrics_table="main.s.o_metrics",
    )  # fmt: skip


def test_the_null_group_is_kept_apart_from_the_text_null() -> None:
    result = null_grouped()
    rows = [
        (r["group_by"], r["group_value"], r["rows"], r["mean"]) for r in result.metrics.to_pylist()
    ]
    assert rows == [
        (None, None, 6, 0.5),  # overall
        ("channel", "(null)", 2, 1.0),
        ("channel", "a", 1, 1.0),
        ("channel", None, 3, 0.0),  # the NULL group, last
    ]
    assert [r["rows"] for r in overall(result.metrics)] == [6]
    assert result.metric("exact")["rows"] == 6
    assert result.metric("exact", "(null)")["rows"] == 2
    assert result.metric("exact", null_group=True)["rows"] == 3
    with pytest.raises(KeyError, match="the NULL group"):
        result.metric("latency", null_group=True)


def test_the_report_shows_the_null_group_apart() -> None:
    report = eval_report(null_grouped())
    markdown = to_markdown(report)
    by_channel = markdown.split("## By channel")[1]
    assert "| (null) | 2 | 100.0% " in by_channel
    assert "| *NULL* | 3 | 0.0% " in by_channel
    assert "in italics, holds the rows whose channel is NULL" in by_channel
    assert "| NULL |" not in by_channel
    html = to_html(report)
    assert "<td><em>NULL</em></td>" in html and "<td>(null)</td>" in html
    chart = charts(html)["exact by channel"]
    labels = {
        (text.text, text.get("font-style"))
        for text in chart.iter("{http://www.w3.org/2000/svg}text")
        if text.text in ("NULL", "(null)", "a")
    }
    assert labels == {("(null)", None), ("a", None), ("NULL", "italic")}


def test_mlflow_and_metrics_json_take_the_overall_row_not_the_null_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result = null_grouped()
    run_id = log_to_mlflow(result, mode=True)
    assert run_id is not None
    logged = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    assert logged["exact"] == 0.5  # overall; the NULL group's is 0.0
    from agentbatch.evaluation.report.files import write_eval_report

    write_eval_report(result, tmp_path / "report")
    payload = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert [(m["scorer"], m["rows"]) for m in payload["metrics"]] == [("exact", 6)]


def grouped_job(project: Path, rows: int = 24) -> tuple[Path, Path]:
    """The example job grouped by `channel`, over tickets whose channel is NULL (an empty CSV
    field), the text "(null)" or what the sample says."""
    job = project / "jobs" / "eval_triage.yml"
    text = job.read_text()
    text = text.replace("columns: [subject, label]", "columns: [subject, label, channel]")
    text = text.replace("  expected: label ", "  group_by: channel\n  expected: label ")
    assert "group_by: channel" in text and "label, channel]" in text
    job.write_text(text)
    with TICKETS_CSV.open(newline="", encoding="utf-8") as handle:
        tickets = list(csv.DictReader(handle))[:rows]
    for number, ticket in enumerate(tickets):
        ticket["channel"] = ("", "(null)", ticket["channel"])[number % 3]
    source = project / "data" / "grouped.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(tickets[0]))
        writer.writeheader()
        writer.writerows(tickets)
    return job, source


def test_local_eval_writes_the_null_group_as_null(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job, source = grouped_job(project)
    args = [
        "eval", str(job), "--table", f"main.support.tickets={source}",
        "--endpoint", f"apps/triage-agent={demo_agent.url}", "--no-progress", "--no-mlflow",
        "--project-dir", str(project), "--report", str(project / "out"),
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    database = project / ".agentbatch" / "warehouse" / "main.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        groups = con.execute(
            "SELECT group_by, group_value, rows FROM support.triage_eval_metrics "
            "WHERE scorer = 'label_exact_match' ORDER BY group_by NULLS FIRST, group_value"
        ).fetchall()
    assert groups[0] == (None, None, 24)
    by_value = {value: rows for by, value, rows in groups[1:] if by == "channel"}
    assert by_value[None] == 8 and by_value["(null)"] == 8
    assert sum(by_value.values()) == 24
    # The CLI prints each scorer's overall row once (not the NULL group's beside it).
    assert printed.count("label_exact_match") == 1
    markdown = (project / "out" / "report.md").read_text(encoding="utf-8")
    by_channel = markdown.split("## By channel")[1]
    assert "| *NULL* | 8 |" in by_channel and "| (null) | 8 |" in by_channel
    assert main([*args, "--skip-run", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [m["rows"] for m in payload["metrics"]] == [24] * len(payload["metrics"])


@pytest.fixture
def warehouse_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    isolate(monkeypatch, tmp_path, token=TOKEN)
    yield


def test_warehouse_eval_writes_the_null_group_as_null(
    warehouse_auth: None, project: Path, warehouse: Any, demo_agent: AgentServer
) -> None:
    """The same through the databricks-sql target: the metrics table in the loopback warehouse
    holds the NULL group with `group_value` NULL, apart from the text "(null)"."""
    import databricks.sql

    job, _ = grouped_job(project)
    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE main.support.grouped AS SELECT ticket_id, subject, body, label, "
            "CASE ticket_id % 3 WHEN 0 THEN NULL WHEN 1 THEN '(null)' ELSE channel END "
            "AS channel FROM main.support.tickets WHERE ticket_id < 1025"
        )
    job.write_text(job.read_text().replace(".support.tickets", ".support.grouped"))
    result = evaluate(
        job, endpoints={"apps/triage-agent": demo_agent.url}, **on_warehouse(warehouse, project)
    )
    assert result.metric("label_exact_match")["rows"] == 24
    assert result.metric("label_exact_match", null_group=True)["rows"] == 8
    with databricks.sql.connect(**warehouse.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT group_by, group_value, rows FROM main.support.triage_eval_metrics "
            "WHERE scorer = 'label_exact_match'"
        )
        groups = [tuple(row) for row in cur.fetchall() if row[0] is not None]
        cur.execute("SELECT count(*) FROM main.support.triage_eval_metrics WHERE group_by IS NULL")
        counted = cur.fetchone()
        assert counted is not None
        overall_rows = counted[0]
    assert ("channel", "(null)", 8) in groups and ("channel", None, 8) in groups
    assert sum(rows for _, _, rows in groups) == 24
    assert overall_rows == len(result.scored.scorers)
