"""The `eval` and `compare` commands: exit codes, requirements, mapped output files, help."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentbatch.cli.main import main
from agentbatch.testing.agent_server import AgentServer


def eval_args(project: Path, agent: AgentServer, *extra: str) -> list[str]:
    return [
        "eval", str(project / "jobs" / "eval_triage.yml"),
        "--table", f"main.support.tickets={project / 'data' / 'tickets.csv'}",
        "--endpoint", f"apps/triage-agent={agent.url}", "--no-progress", *extra,
    ]  # fmt: skip


def test_requirements_gate_the_exit_code(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(eval_args(project, demo_agent, "--require", "label_exact_match>=0.9")) == 0
    capsys.readouterr()
    code = main(
        eval_args(
            project, demo_agent, "--skip-run", "--require", "label_exact_match>=0.99",
            "--require", "latency<100000", "--require", "error_rate<=0",
        )
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "evaluation below requirements: label_exact_match is 0.93, required >= 0.99" in err
    assert "latency" not in err.split("requirements:")[1]


@pytest.mark.parametrize(
    ("require", "message"),
    [("nope>=1", "--require: no scorer 'nope'"), ("label_exact_match=1", "expected SCORER>=VALUE")],
)
def test_bad_requirements_are_usage_errors(
    project: Path,
    demo_agent: AgentServer,
    capsys: pytest.CaptureFixture[str],
    require: str,
    message: str,
) -> None:
    assert main(eval_args(project, demo_agent, "--require", require)) == 2
    assert message in capsys.readouterr().err


def test_json_output_and_mapped_output_files(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    scores_csv = project / "out" / "scores.csv"
    metrics_parquet = project / "out" / "metrics.parquet"
    code = main(
        eval_args(
            project, demo_agent, "--json",
            "--table", f"main.support.triage_eval_scores={scores_csv}",
            "--table", f"main.support.triage_eval_metrics={metrics_parquet}",
        )
    )  # fmt: skip
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["scores_table"] == "main.support.triage_eval_scores"
    assert {m["scorer"] for m in payload["metrics"]} == {
        "label_exact_match", "valid_triage", "error_rate", "latency", "tokens",
    }  # fmt: skip
    with scores_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 300 and {"ticket_id", "label_exact_match", "latency_error"} <= set(rows[0])
    import pyarrow.parquet as pq

    assert pq.read_table(metrics_parquet).num_rows == 5 * 6


def test_usage_and_spec_errors(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = str(project / "jobs" / "eval_triage.yml")
    assert main(["compare", job]) == 2
    assert "compare needs a second job or --endpoint-b" in capsys.readouterr().err
    assert main(["compare", job, "--endpoint-b", "x", "--variant-a", "A"]) == 2
    assert "variant name 'A'" in capsys.readouterr().err
    assert main(["compare", job, job, job]) == 2
    assert "one job file (with --endpoint-b) or two job files" in capsys.readouterr().err
    assert main(eval_args(project, demo_agent, "--skip-run")) == 2
    assert "has no answers yet; run without --skip-run first" in capsys.readouterr().err
    plain = project / "jobs" / "plain.yml"
    plain.write_text(
        (project / "jobs" / "eval_triage.yml").read_text().split("evaluation:")[0]
        + "vars:\n  catalog: main\n"
    )
    assert main(["eval", str(plain)]) == 2
    assert f"{plain}:7: the job has no `evaluation:` block" in capsys.readouterr().err


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("eval", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert f"agentbatch {command} jobs/" in capsys.readouterr().out


def test_a_custom_scorer_from_the_project_folder(
    project: Path,
    demo_agent: AgentServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (project / "triage_checks.py").write_text(
        "def urgent_enough(response, expected, row):\n"
        "    if response is None:\n"
        "        raise ValueError('no answer')\n"
        "    return response['urgency'] >= 3\n"
    )
    job = project / "jobs" / "eval_triage.yml"
    job.write_text(
        job.read_text().replace(
            "    - error_rate:\n",
            "    - error_rate:\n"
            "    - custom: {function: 'triage_checks:urgent_enough', name: urgent, binary: true}\n",
        )
    )
    monkeypatch.chdir(project)  # how a project runs: scorer modules sit beside jobs/
    assert main(eval_args(project, demo_agent, "--json")) == 0
    metrics = {m["scorer"]: m for m in json.loads(capsys.readouterr().out)["metrics"]}
    urgent = metrics["urgent"]
    assert urgent["ci_method"] == "wilson" and urgent["scored"] == 300
    assert urgent["mean"] == pytest.approx(demo_share(lambda answer: answer["urgency"] >= 3))


def demo_share(test: Callable[[dict[str, Any]], bool]) -> float:
    """The share of sample tickets whose demo-agent answer passes `test`."""
    from agentbatch.testing import triage
    from tests.support.eval_servers import load_tickets

    tickets = load_tickets()
    passed = 0
    for ticket in tickets:
        text = f"Classify this support ticket. Ticket: {ticket['subject']}\n\n{ticket['body']}"
        passed += test(triage.structured_answer(text, text))
    return passed / len(tickets)


def test_eval_takes_a_budget_and_reports_tokens_and_cost_beside_the_estimate(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "agentbatch.yml").write_text(
        "prices:\n  apps/triage-agent: {input_per_million: 1, output_per_million: 5}\n",
        encoding="utf-8",
    )
    assert main(eval_args(project, demo_agent, "--max-rows", "100")) == 7
    assert "the run would send 300 row(s), over max_rows 100" in capsys.readouterr().err
    assert demo_agent.stats().requests_total == 0
    estimate = [
        "estimate", str(project / "jobs" / "eval_triage.yml"),
        "--table", f"main.support.tickets={project / 'data' / 'tickets.csv'}",
        "--endpoint", f"apps/triage-agent={demo_agent.url}", "--json", "--sample", "20",
    ]  # fmt: skip
    assert main(estimate) == 0
    assert json.loads(capsys.readouterr().out)["to_send"] == 300
    report = project / "report"
    assert main(eval_args(project, demo_agent, "--json", "--report", str(report))) == 0
    run = json.loads(capsys.readouterr().out)["run"]
    assert run["sent"] == 280  # the estimate's 20 rows are kept, not paid again
    assert demo_agent.stats().requests_total == 300
    assert run["estimated_input_tokens"] > 0 and run["estimated_cost"] > 0
    assert run["cost"] == pytest.approx(
        (run["input_tokens"] + 5 * run["output_tokens"]) / 1e6, rel=1e-4
    )
    text = (report / "report.md").read_text(encoding="utf-8")
    assert f"{run['input_tokens']:,} input" in text
    assert f"(estimated {run['estimated_input_tokens']:,} input" in text
    assert "cost this run" in text


def test_an_unmapped_source_or_a_misspelt_column_is_a_usage_error_naming_the_file(
    project: Path, demo_agent: AgentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = project / "jobs" / "eval_triage.yml"
    unmapped = ["eval", str(job), "--endpoint", f"apps/triage-agent={demo_agent.url}"]
    assert main([*unmapped, "--no-progress"]) == 2
    assert f"{job}:10: source.table: table main.support.tickets is not mapped" in (
        capsys.readouterr().err
    )
    other = project / "jobs" / "eval_other.yml"
    other.write_text(job.read_text().replace("[subject, label]", "[subjct, label]"))
    args = eval_args(project, demo_agent)
    compare = ["compare", str(job), str(other), *args[2:]]
    assert main(compare) == 2
    err = capsys.readouterr().err
    assert f"{other}:12: source.columns[0]: column 'subjct' is not in" in err
    assert demo_agent.stats().requests_total == 0  # job A was not run before B's check


def test_a_variant_url_is_taken_whole_with_the_equals_signs_of_its_query() -> None:
    from agentbatch.cli.evaluation import _variant_endpoint
    from agentbatch.planning.definition import RunOptions

    url = "https://agent.example/api/responses?code=abc==&v=1"
    assert _variant_endpoint(url, "--endpoint-a", "no-such-job.yml", RunOptions()) == url
