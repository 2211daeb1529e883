"""Tables an evaluation writes must be distinct from each other, from its output and from its
source: a name shared by two is refused (exit 2) before anything is sent, naming both keys and
their lines in the job file."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentbatch
from agentbatch.cli.main import main
from agentbatch.errors import UsageError
from agentbatch.evaluation.run import compare, evaluate
from tests.evaluation.test_eval_current_rows import TICKETS, agent, job_file, write_source


def with_tables(job: Path, lines: str) -> Path:
    job.write_text(job.read_text().replace("  expected: label\n", f"  expected: label\n{lines}"))
    return job


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "  scores_table: main.s.current_out\n",
            "current.yml:8: evaluation.scores_table is main.s.current_out, as is output.table "
            "(jobs/current.yml:5): the evaluation would write one over the other",
        ),
        (
            "  scores_table: main.s.same\n  metrics_table: main.s.same\n",
            "current.yml:9: evaluation.metrics_table is main.s.same, as is "
            "evaluation.scores_table (jobs/current.yml:8)",
        ),
        (
            "  metrics_table: main.s.tickets\n",
            "current.yml:8: evaluation.metrics_table is main.s.tickets, as is source.table "
            "(jobs/current.yml:2): the evaluation would replace a table it reads",
        ),
    ],
)
def test_colliding_tables_are_refused_before_any_call(
    project: Path, lines: str, message: str
) -> None:
    job = job_file(project, "merge")
    tables = write_source(project, TICKETS)
    with agent() as server:
        endpoints = {"apps/triage-agent": server.url}
        evaluate(job, tables=tables, endpoints=endpoints, progress=False)
        with_tables(job, lines)
        with pytest.raises(UsageError) as refused:
            evaluate(job, tables=tables, endpoints=endpoints, progress=False)
        assert server.requests == 20  # the first evaluation's, none since
    assert message in str(refused.value).replace(f"{project}/", "")
    # The paid answers are still the output's.
    answers = agentbatch.read_table("main.s.current_out", project_dir=project)
    assert answers.num_rows == 20 and "response" in answers.column_names


def test_the_cli_refuses_with_exit_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = with_tables(job_file(project, "merge"), "  scores_table: main.s.current_out\n")
    tables = write_source(project, TICKETS)
    with agent() as server:
        args = [
            "eval", str(job), "--table", f"main.s.tickets={tables['main.s.tickets']}",
            "--endpoint", f"apps/triage-agent={server.url}", "--no-progress",
        ]  # fmt: skip
        assert main(args) == 2
        assert server.requests == 0
    assert "evaluation.scores_table is main.s.current_out, as is output.table" in (
        capsys.readouterr().err
    )


def test_a_variant_named_like_the_comparison_table_is_refused(project: Path) -> None:
    job = job_file(project, "merge")
    tables = write_source(project, TICKETS)
    with agent() as first, agent() as second:
        with pytest.raises(UsageError) as refused:
            compare(
                job,
                endpoint_a=first.url,
                endpoint_b=second.url,
                variant_b="comparison",
                tables=tables,
                progress=False,
            )
        assert first.requests == second.requests == 0
    assert (
        "current.yml:5: the comparison table (output.table + _comparison) is "
        "main.s.current_out_comparison, as is variant comparison's output.table + _comparison"
    ) in str(refused.value)
