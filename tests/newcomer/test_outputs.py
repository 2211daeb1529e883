"""A newcomer finds and reads every output from what the run prints."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq

import agentbatch
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.faults import FaultConfig

from .conftest import Project, cli, one_line_error

INSTANT = ["--endpoint", "apps/review-agent=builtin:instant"]
MAPPED = ["--table", "main.shop.reviews=reviews.csv"]


def test_a_warehouse_output_is_printed_with_a_query_that_resolves(project: Project) -> None:
    done = cli(project, "run", "jobs/reviews.yml", *MAPPED, *INSTANT, "--json")
    assert done.returncode == 0, done.stderr
    (where,) = json.loads(done.stdout)["outputs"]
    assert where["table"] == "main.shop.review_sentiment"
    # The printed DuckDB query reads the printed file, as printed.
    code = (
        "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
        "print(con.sql(sys.argv[2]).fetchall().__len__())"
    )
    read = subprocess.run(
        [sys.executable, "-c", code, where["duckdb_file"], where["duckdb_query"]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert read.stdout.strip() == "50"
    text = cli(project, "run", "jobs/reviews.yml", *MAPPED, *INSTANT).stdout
    assert "output main.shop.review_sentiment: local warehouse file" in text
    assert "agentbatch show main.shop.review_sentiment" in text


def test_show_prints_a_table_and_limits_it(project: Project) -> None:
    assert cli(project, "run", "jobs/reviews.yml", *MAPPED, *INSTANT).returncode == 0
    done = cli(project, "show", "main.shop.review_sentiment", "--limit", "3", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 3 and rows[0]["response"].startswith("echo: Sentiment of")
    text = cli(project, "show", "main.shop.review_sentiment", "--limit", "2").stdout
    assert "review_id" in text and "echo: Sentiment of" in text
    # The source file, through a mapping, like a run reads it.
    done = cli(project, "show", "main.shop.reviews", *MAPPED, "--json", "--limit", "100")
    assert len(done.stdout.splitlines()) == 50


def test_show_of_a_missing_table_says_how_to_map_it(project: Project) -> None:
    line = one_line_error(cli(project, "show", "main.shop.nope"))
    assert "no table main.shop.nope" in line and "--table main.shop.nope=PATH" in line


def test_a_mapped_output_prints_its_file(project: Project) -> None:
    out = ["--table", "main.shop.review_sentiment=out/sentiment.parquet"]
    done = cli(project, "run", "jobs/reviews.yml", *MAPPED, *out, *INSTANT)
    assert done.returncode == 0, done.stderr
    assert "output main.shop.review_sentiment: file out/sentiment.parquet" in done.stdout
    assert pq.read_table(project.root / "out" / "sentiment.parquet").num_rows == 50


def test_the_python_result_reads_this_run_or_the_whole_table(project: Project) -> None:
    common = dict(
        tables={"main.shop.reviews": project.reviews},
        endpoints={"apps/review-agent": "builtin:instant"},
        project_dir=project.root,
        progress=False,
    )
    with agentbatch.run(project.job, limit=20, **common) as first:  # type: ignore[arg-type]
        assert len(first.to_pandas()) == 20
    with agentbatch.run(project.job, limit=10, **common) as second:  # type: ignore[arg-type]
        assert len(second.to_pandas()) == 10  # this run's rows
        assert len(second.to_pandas(whole_table=True)) == 30  # every run's rows
    whole = agentbatch.read_table("main.shop.review_sentiment", project_dir=project.root)
    assert whole.num_rows == 30


def test_dir_lists_the_public_api() -> None:
    names = dir(agentbatch)
    for name in (
        "run",
        "load_job",
        "plan",
        "render",
        "read_table",
        "evaluate",
        "RunResult",
        "RunOptions",
    ):
        assert name in names
    assert "TYPE_CHECKING" not in names


def test_a_run_stopped_by_its_error_rate_still_prints_its_summary(project: Project) -> None:
    """Exit 7 after the error rate stopped sending: what was answered is written, and --json
    says so (`stopped`, the rows written, the table) for a scheduler to read."""
    with serve_agent(FaultConfig(permanent={"review number": 400})) as agent:
        done = cli(
            project,
            "run",
            "jobs/reviews.yml",
            "--json",
            "--no-progress",
            "--table",
            "main.shop.reviews=reviews.csv",
            "--table",
            "main.shop.review_sentiment=out.parquet",
            "--endpoint",
            f"apps/review-agent={agent.url}",
        )
        sent = agent.stats().requests_total
    assert done.returncode == 7, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert "max_error_rate" in summary["stopped"]
    assert 20 <= summary["sent"] == sent < 50
    assert summary["rows"] == summary["errors"] == summary["rows_written"] == sent
    assert summary["table_rows"] == summary["table_errors"] == sent
    assert len(pq.read_table(project.root / "out.parquet")) == sent


def test_the_show_hint_of_a_run_from_another_folder_reads_the_table(project: Project) -> None:
    """Run from outside the project: the printed `agentbatch show ...` names the project folder,
    so, run as printed from the same place, it reads the rows the run wrote."""
    outside = project.root.parent
    root = project.root.name
    run = [sys.executable, "-m", "agentbatch", "run", f"{root}/jobs/reviews.yml", *INSTANT]
    run += ["--table", f"main.shop.reviews={root}/reviews.csv"]
    done = subprocess.run(run, cwd=outside, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    hint = done.stdout.split("read it with `", 1)[1].split("`", 1)[0]
    assert hint.startswith("agentbatch show main.shop.review_sentiment --project-dir ")
    shown = subprocess.run(
        [sys.executable, "-m", "agentbatch", *hint.split()[1:], "--json", "--limit", "100"],
        cwd=outside,
        capture_output=True,
        text=True,
        check=False,
    )
    assert len(shown.stdout.splitlines()) == 50, shown.stderr
