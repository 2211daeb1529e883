"""`--skip-run` scores only answers to the current request: a key whose output rows answer
another request (an edited prompt, another agent) is counted as not scored, never scored as
this job's answer; with no current answer at all, eval and compare refuse, sending nothing.

Agents are scripted servers on loopback: right on the first prompt, wrong on the edited one, so
a score tells which prompt's answer was scored."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

import agentbatch
from agentbatch.cli.main import main
from agentbatch.errors import UsageError
from agentbatch.evaluation.results import Coverage
from agentbatch.evaluation.run import evaluate
from tests.evaluation.test_eval_current_rows import (
    OTHER_PROMPT,
    TICKETS,
    accuracy,
    agent,
    job_file,
    write_source,
)

FIRST_PROMPT = "Classify this support ticket #"


def edit_prompt(job: Path) -> None:
    text = job.read_text()
    assert FIRST_PROMPT in text
    job.write_text(text.replace(FIRST_PROMPT, OTHER_PROMPT))


def run(job: Path, tables: dict[str, str], url: str, **options: object) -> None:
    done = agentbatch.run(
        job, tables=tables, endpoints={"apps/triage-agent": url}, progress=False, **options
    )
    assert done.engine is not None
    done.engine.close()


def test_eval_skip_run_scores_only_the_current_prompts_answers(project: Path) -> None:
    job = job_file(project, "merge")
    with agent(lambda text: OTHER_PROMPT not in text) as server:
        endpoints = {"apps/triage-agent": server.url}
        tables = write_source(project, TICKETS)
        run(job, tables, server.url)
        edit_prompt(job)
        run(job, tables, server.url, limit=5)  # the edited prompt reaches 5 keys of 20
        assert server.requests == 25
        result = evaluate(job, tables=tables, endpoints=endpoints, progress=False, skip_run=True)
        assert server.requests == 25
    # The 5 answers to the edited prompt (all wrong), not 15 old right ones beside them.
    assert accuracy(result) == (5, 0.0)
    assert result.coverage == Coverage(selected=20, scored=5, other_request=15)
    assert result.coverage.unanswered == 0


def test_eval_skip_run_after_an_edited_prompt_refuses(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(project, "merge")
    with agent() as server:
        tables = write_source(project, TICKETS)
        run(job, tables, server.url)
        edit_prompt(job)
        args = [
            "eval", str(job), "--table", f"main.s.tickets={tables['main.s.tickets']}",
            "--endpoint", f"apps/triage-agent={server.url}", "--skip-run", "--no-progress",
        ]  # fmt: skip
        capsys.readouterr()
        assert main(args) == 2
        assert server.requests == 20
    err = capsys.readouterr().err
    assert "main.s.current_out holds no answer to the current request for any of the 20" in err
    assert "20 hold only answers to another request" in err


def test_eval_skip_run_needs_the_runs_endpoint_mapping(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Answers from a local agent are not the Databricks endpoint's: without the run's
    `--endpoint`, none is current."""
    job = job_file(project, "merge")
    with agent() as server:
        tables = write_source(project, TICKETS)
        run(job, tables, server.url)
    with pytest.raises(UsageError, match="pass the --endpoint and --var values"):
        evaluate(job, tables=tables, progress=False, skip_run=True)
    # A local agent on another port is the same agent.
    again = evaluate(
        job,
        tables=tables,
        endpoints={"apps/triage-agent": "http://127.0.0.1:9/"},
        progress=False,
        skip_run=True,
    )
    assert accuracy(again) == (20, 1.0)
    assert again.coverage == Coverage(selected=20, scored=20, other_request=0)


def test_compare_skip_run_counts_keys_without_a_current_answer(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = job_file(project, "merge")
    second = project / "jobs" / "current_v2.yml"
    second.write_text(
        first.read_text().replace("name: current", "name: current_v2").replace("_out", "_v2")
    )
    first.rename(project / "jobs" / "current_v1.yml")
    first = project / "jobs" / "current_v1.yml"
    with agent(lambda text: OTHER_PROMPT not in text) as server:
        tables = write_source(project, TICKETS)
        run(first, tables, server.url)
        run(second, tables, server.url)
        edit_prompt(second)
        run(second, tables, server.url, limit=8)
        sent = server.requests
        capsys.readouterr()
        code = main(
            [
                "compare", str(first), str(second), "--skip-run", "--json",
                "--table", f"main.s.tickets={tables['main.s.tickets']}",
                "--endpoint", f"apps/triage-agent={server.url}",
            ]
        )  # fmt: skip
        assert server.requests == sent == 48
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    # B is paired on the 8 keys its edited prompt answered, never on its 12 old answers.
    assert payload["paired_rows"] == 8
    assert payload["b"]["coverage"] == {
        "selected": 20,
        "scored": 8,
        "not_scored": 12,
        "other_request": 12,
        "unanswered": 0,
    }
    assert payload["a"]["coverage"]["not_scored"] == 0
    exact = next(r for r in payload["comparison"] if r["scorer"] == "label_exact_match")
    assert (exact["wins_a"], exact["ties"], exact["wins_b"]) == (8, 0, 0)


def warehouse_tables(project: Path) -> set[str]:
    con = duckdb.connect(str(project / ".agentbatch" / "warehouse" / "main.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    finally:
        con.close()
    return {f"{schema}.{name}" for schema, name in rows}


def test_a_refused_compare_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """B's refusal comes before any table is written: A's scores and metrics, beside no
    comparison, would read as this comparison's result."""
    first = job_file(project, "merge")
    second = project / "jobs" / "current_v2.yml"
    second.write_text(
        first.read_text().replace("name: current", "name: current_v2").replace("_out", "_v2")
    )
    with agent() as server:
        tables = write_source(project, TICKETS)
        run(first, tables, server.url)
        run(second, tables, server.url)
        edit_prompt(second)  # none of B's answers is current
        before = warehouse_tables(project)
        capsys.readouterr()
        code = main(
            [
                "compare", str(first), str(second), "--skip-run", "--no-progress",
                "--table", f"main.s.tickets={tables['main.s.tickets']}",
                "--endpoint", f"apps/triage-agent={server.url}",
            ]
        )  # fmt: skip
        assert server.requests == 40
    assert code == 2
    assert "main.s.current_v2 holds no answer to the current request" in capsys.readouterr().err
    assert before == {"s.current_out", "s.current_v2"}
    assert warehouse_tables(project) == before
