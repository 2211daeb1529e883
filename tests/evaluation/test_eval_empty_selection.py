"""An evaluation with nothing to score ends as a run with nothing to send: exit 0, saying so,
scores and metrics tables written empty, no judge called. Alike whether the source has rows that
`where` leaves out, or only its header (a local run keeps no output table from a CSV without
rows: the judge step once read that dropped table and failed, exit 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agentbatch
from agentbatch.cli.main import main
from tests.support.eval_servers import ScriptedAgent, load_tickets

HEADER = "ticket_id,subject,label\n"
JOB = """\
name: empty
source: {{table: main.s.tickets, key: ticket_id, columns: [subject, label]{where}}}
request: "concat('Classify: ', subject)"
agent: {{endpoint: apps/triage-agent}}
output: {{table: main.s.empty_out}}
evaluation:
  expected: label
  scorers:
    - exact_match: {{}}
    - llm_judge: {{endpoint: judge-model, name: judged}}
"""


@pytest.mark.parametrize("source", ["where selects none", "header only"])
def test_nothing_to_score_ends_cleanly(
    project: Path, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = project / "data" / "few.csv"
    rows = "".join(f"{t['ticket_id']},{t['subject']},{t['label']}\n" for t in load_tickets()[:3])
    csv.write_text(HEADER + (rows if source == "where selects none" else ""))
    where = ", where: \"label = 'none of them'\"" if source == "where selects none" else ""
    job = project / "jobs" / "empty.yml"
    job.write_text(JOB.format(where=where))
    with ScriptedAgent(lambda text: "x") as agent, ScriptedAgent(lambda text: "PASS") as judge:
        capsys.readouterr()
        code = main(
            [
                "eval", str(job), "--json", "--no-progress", "--no-mlflow",
                "--project-dir", str(project), "--table", f"main.s.tickets={csv}",
                "--endpoint", f"apps/triage-agent={agent.url}",
                "--endpoint", f"judge-model={judge.url}",
            ]
        )  # fmt: skip
        assert (agent.requests, judge.requests) == (0, 0)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "nothing to score: the job selects no row of its source" in err
    payload = json.loads(out)
    assert payload["coverage"]["selected"] == 0
    assert {m["scorer"]: m["scored"] for m in payload["metrics"]} == {
        "exact_match": 0,
        "judged": 0,
    }
    scores = agentbatch.read_table("main.s.empty_out_scores", project_dir=project)
    assert scores.num_rows == 0 and "judged" in scores.column_names
    metrics = agentbatch.read_table("main.s.empty_out_metrics", project_dir=project)
    assert sorted(metrics.column("scorer").to_pylist()) == ["exact_match", "judged"]
