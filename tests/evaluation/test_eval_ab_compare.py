"""A/B on a dataset built so every answer is known: agent A is right exactly on the tickets whose
id is not a multiple of 3, agent B on the even ids. Wins, ties and losses follow from arithmetic."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import agentbatch
from agentbatch.cli.main import main
from agentbatch.evaluation import compare
from tests.support.eval_servers import ScriptedAgent, labeller, load_tickets, write_id_job


def right_a(ticket_id: int) -> bool:
    return ticket_id % 3 != 0


def right_b(ticket_id: int) -> bool:
    return ticket_id % 2 == 0


IDS = [int(t["ticket_id"]) for t in load_tickets()]
A_WINS = sum(right_a(i) and not right_b(i) for i in IDS)
B_WINS = sum(right_b(i) and not right_a(i) for i in IDS)
TIES = len(IDS) - A_WINS - B_WINS


def test_the_dataset_separates_the_agents() -> None:
    assert len(IDS) == 300 and A_WINS > 0 and B_WINS > 0 and TIES > 0


def warehouse_rows(project: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(project / ".agentbatch" / "warehouse" / "main.duckdb"), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def test_one_job_against_two_agents(project: Path, tickets_table: dict[str, str]) -> None:
    with ScriptedAgent(labeller(right_a)) as agent_a, ScriptedAgent(labeller(right_b)) as agent_b:
        result = compare(
            write_id_job(project),
            endpoint_a=agent_a.url,
            endpoint_b=agent_b.url,
            tables=tickets_table,
            progress=False,
            report_dir=project / "out",
        )
        assert agent_a.requests == agent_b.requests == 300
    comparison = result.comparison
    assert comparison.paired_rows == 300
    assert comparison.counts("label_exact_match") == (A_WINS, TIES, B_WINS)
    summary = {row["scorer"]: row for row in comparison.summary.to_pylist()}
    exact = summary["label_exact_match"]
    assert exact["mean_a"] == pytest.approx(sum(map(right_a, IDS)) / 300)
    assert exact["mean_b"] == pytest.approx(sum(map(right_b, IDS)) / 300)
    assert exact["delta"] == pytest.approx(exact["mean_b"] - exact["mean_a"])
    assert exact["delta_ci_low"] <= exact["delta"] <= exact["delta_ci_high"]
    # Both always answer valid JSON: every row ties on the schema scorer.
    assert comparison.counts("valid_triage") == (0, 300, 0)
    # The rows listed first are real disagreements on the label.
    for entry in comparison.disagreements:
        a, b = entry["scores"]["label_exact_match"]
        assert a != b
    # Each variant wrote its answers, scores and metrics; the comparison has its own table.
    assert result.a.answers_table == "main.support.triage_eval_a"
    assert result.b.scores_table == "main.support.triage_eval_b_scores"
    stored = warehouse_rows(
        project,
        "SELECT wins_a, ties, wins_b FROM support.triage_eval_comparison "
        "WHERE scorer = 'label_exact_match'",
    )
    assert stored == [(A_WINS, TIES, B_WINS)]
    passed_b = warehouse_rows(
        project, "SELECT sum(label_exact_match) FROM support.triage_eval_b_scores"
    )
    assert passed_b == [(float(sum(map(right_b, IDS))),)]
    html = (project / "out" / "report.html").read_text()
    assert "A wins" in html and "<svg" in html


def test_two_runs_compared_without_calling_agents(
    project: Path, tickets_table: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two prompt versions run earlier (`agentbatch run`), compared from their outputs alone."""
    for version in ("v1", "v2"):
        write_id_job(project, f"triage_{version}", f"triage_{version}")
    with ScriptedAgent(labeller(right_a)) as agent_a, ScriptedAgent(labeller(right_b)) as agent_b:
        for version, agent in (("v1", agent_a), ("v2", agent_b)):
            done = agentbatch.run(
                project / "jobs" / f"triage_{version}.yml",
                tables=tickets_table,
                endpoints={"apps/triage-agent": agent.url},
                progress=False,
            )
            assert done.engine is not None
            done.engine.close()
        calls = agent_a.requests + agent_b.requests
        code = main(
            [
                "compare",
                str(project / "jobs" / "triage_v1.yml"),
                str(project / "jobs" / "triage_v2.yml"),
                "--skip-run",
                "--variant-a",
                "v1",
                "--variant-b",
                "v2",
                "--table",
                f"main.support.tickets={tickets_table['main.support.tickets']}",
                # The runs' mapping: their answers are the local agents' (any port on this
                # machine), not apps/triage-agent's.
                "--endpoint",
                f"apps/triage-agent={agent_a.url}",
                "--json",
            ]
        )
        assert code == 0
        assert agent_a.requests + agent_b.requests == calls  # nothing was sent again
    import json

    payload = json.loads(capsys.readouterr().out)
    exact = next(r for r in payload["comparison"] if r["scorer"] == "label_exact_match")
    assert (exact["wins_a"], exact["ties"], exact["wins_b"]) == (A_WINS, TIES, B_WINS)
    assert payload["a"]["variant"] == "v1"
    assert payload["comparison_table"] == "main.support.triage_v1_comparison"
