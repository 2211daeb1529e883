"""Each mistake of a newcomer's first hour is one line that says what to change, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.databricks_env import isolated_env

from .conftest import Project, cli, one_line_error

INSTANT = "apps/review-agent=builtin:instant"


def test_a_table_mapping_that_matches_nothing_names_the_jobs_tables(project: Project) -> None:
    done = cli(
        project,
        "run",
        "jobs/reviews.yml",
        "--table",
        "main.shop.reviewz=reviews.csv",
        "--endpoint",
        INSTANT,
    )
    line = one_line_error(done)
    assert "--table main.shop.reviewz=...: the job uses no table main.shop.reviewz" in line
    assert "did you mean main.shop.reviews?" in line
    assert "main.shop.reviews (source.table)" in line
    assert not (project.root / ".agentbatch" / "warehouse").exists()


def test_an_unmapped_source_says_how_to_map_it(project: Project) -> None:
    line = one_line_error(cli(project, "run", "jobs/reviews.yml", "--endpoint", INSTANT))
    assert "jobs/reviews.yml:3: source.table: table main.shop.reviews is not mapped" in line
    assert "--table main.shop.reviews=PATH" in line


def test_a_misspelt_column_names_the_spec_line_key_and_the_columns(project: Project) -> None:
    project.job.write_text(project.job.read_text().replace("review_text)", "review_txt)"))
    expected = (
        "request: column 'review_txt' is not in main.shop.reviews (did you mean review_text?); "
        "its columns: review_id, review_text, stars"
    )
    mapped = ["--table", "main.shop.reviews=reviews.csv"]
    for args in (
        ["validate", "--target", "local", "jobs/reviews.yml", *mapped],
        ["plan", "jobs/reviews.yml", *mapped],
        ["run", "jobs/reviews.yml", *mapped, "--endpoint", INSTANT],
    ):
        done = cli(project, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert f"jobs/reviews.yml:6: {expected}" in done.stderr, args
    assert not (project.root / ".agentbatch" / "state").exists()  # nothing was sent


def test_where_and_columns_errors_name_their_keys_and_lines(project: Project) -> None:
    text = project.job.read_text()
    mapped = ["--table", "main.shop.reviews=reviews.csv", "--endpoint", INSTANT]
    project.job.write_text(text.replace("columns: [stars]", "columns: [star]"))
    line = one_line_error(cli(project, "run", "jobs/reviews.yml", *mapped))
    assert (
        "jobs/reviews.yml:5: source.columns[0]: column 'star' is not in main.shop.reviews "
        "(did you mean stars?)" in line
    )
    project.job.write_text(
        text.replace("  columns: [stars]", "  columns: [stars]\n  where: rating > 3")
    )
    line = one_line_error(cli(project, "run", "jobs/reviews.yml", *mapped))
    assert "jobs/reviews.yml:6: source.where: column 'rating' is not in main.shop.reviews" in line


def test_an_empty_input_file_says_so(project: Project) -> None:
    (project.root / "empty.csv").write_text("")
    done = cli(
        project,
        "run",
        "jobs/reviews.yml",
        "--table",
        "main.shop.reviews=empty.csv",
        "--endpoint",
        INSTANT,
    )
    assert one_line_error(done) == (
        "--table main.shop.reviews=empty.csv: the file is empty: no header line, no rows"
    )


def test_an_endpoint_mapping_that_matches_nothing_names_the_endpoint(project: Project) -> None:
    done = cli(
        project,
        "run",
        "jobs/reviews.yml",
        "--table",
        "main.shop.reviews=reviews.csv",
        "--endpoint",
        "apps/review-agnt=builtin:instant",
    )
    line = one_line_error(done)
    assert "the job calls no endpoint apps/review-agnt (did you mean apps/review-agent?)" in line


def test_an_unknown_spec_key_suggests_the_right_one(project: Project) -> None:
    project.job.write_text(project.job.read_text().replace("columns:", "colums:"))
    done = cli(project, "validate", "jobs/reviews.yml")
    assert done.returncode == 2
    assert "jobs/reviews.yml:5: source.colums: unknown key; did you mean 'columns'?" in done.stderr


def test_compare_takes_the_endpoint_form_and_never_shows_a_traceback(project: Project) -> None:
    root = Path(__file__).resolve().parents[2]
    job = root / "jobs" / "eval_triage.yml"
    done = cli(
        project,
        "compare",
        str(job),
        "--endpoint-a",
        "apps/triage-agnt=http://127.0.0.1:9",
        "--endpoint-b",
        "http://127.0.0.1:9",
    )
    assert "the job's endpoint is 'apps/triage-agent', not 'apps/triage-agnt'" in one_line_error(
        done
    )
    done = cli(
        project,
        "compare",
        str(job),
        "--endpoint-a",
        "apps/Not_An_App",
        "--endpoint-b",
        "http://127.0.0.1:9",
    )
    assert "endpoint" in one_line_error(done)


def test_a_require_naming_no_scorer_fails_before_the_run(project: Project) -> None:
    root = Path(__file__).resolve().parents[2]
    done = cli(
        project,
        "eval",
        str(root / "jobs" / "eval_triage.yml"),
        "--endpoint",
        "apps/triage-agent=http://127.0.0.1:9",
        "--require",
        "label_match>=0.9",
    )
    line = one_line_error(done)
    assert "no scorer 'label_match'" in line and "did you mean 'label_exact_match'?" in line


def test_a_query_source_reading_a_missing_table_says_how_to_map_it(project: Project) -> None:
    text = project.job.read_text().replace(
        "  table: main.shop.reviews\n", '  query: "SELECT * FROM main.shop.reviewz"\n'
    )
    project.job.write_text(text)
    line = one_line_error(cli(project, "run", "jobs/reviews.yml", "--endpoint", INSTANT))
    assert "source.query: local engine: table main.shop.reviewz does not exist" in line
    assert "--table main.shop.reviewz=PATH" in line
    done = cli(
        project,
        "run",
        "jobs/reviews.yml",
        "--table",
        "main.shop.reviews=reviews.csv",
        "--endpoint",
        INSTANT,
    )
    assert "did you mean main.shop.reviewz?" in one_line_error(done)


def test_eval_refuses_an_endpoint_mapping_that_matches_nothing(project: Project) -> None:
    root = Path(__file__).resolve().parents[2]
    done = cli(
        project,
        "eval",
        str(root / "jobs" / "eval_triage.yml"),
        "--endpoint",
        "apps/triage-agnt=http://127.0.0.1:9",
    )
    line = one_line_error(done)
    assert "the job calls no endpoint apps/triage-agnt (did you mean apps/triage-agent?)" in line


def test_a_dead_endpoint_stops_the_cli_run_with_the_cause_and_no_output(project: Project) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = project.root / "out" / "sentiment.parquet"
    done = cli(
        project,
        "run",
        "jobs/reviews.yml",
        "--table",
        "main.shop.reviews=reviews.csv",
        "--table",
        f"main.shop.review_sentiment={out}",
        "--endpoint",
        f"apps/review-agent=http://127.0.0.1:{port}",
        timeout=60,  # one probe, no per-row retries: seconds, not the minute 50 rows took
    )
    line = one_line_error(done, code=6)
    assert f"127.0.0.1:{port}/responses) is unreachable: connection refused" in line
    assert not out.exists()
    assert not (project.root / ".agentbatch" / "state").exists()


def test_a_run_without_workspace_auth_says_how_to_use_a_local_agent(project: Project) -> None:
    """The README's first run without `--endpoint`: one line, exit 3, with the mapping to the
    local agent for the job's endpoint, and nothing created."""
    out = project.root / "out" / "sentiment.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "agentbatch", "run", "jobs/reviews.yml", "--no-progress",
         "--table", "main.shop.reviews=reviews.csv", "--table", f"main.shop.review_sentiment={out}"],
        cwd=project.root,
        env=isolated_env(project.root, NO_COLOR="1", COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    line = one_line_error(done, code=3)
    assert line.startswith("Databricks authentication is not configured: ")
    assert line.endswith(
        "; or, to send endpoint apps/review-agent's rows to an agent on this machine, run with "
        "--endpoint apps/review-agent=http://127.0.0.1:8000 (the port your agent server prints)"
    )
    # Refused before its first call, it creates nothing: it left an empty output table (0 rows,
    # which a later run or a reader takes for the job's result) and a ledger.
    assert not out.exists()
    assert not (project.root / ".agentbatch" / "state").exists()
