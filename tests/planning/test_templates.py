"""Project templates override built-ins; template errors name template and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import agentbatch
from agentbatch.errors import TemplateError
from agentbatch.planning.definition import PushDown
from agentbatch.sql.jinja import BUILTIN_TEMPLATES

JOB = """\
name: t
source: {table: main.s.tickets, key: id, columns: [subject]}
request: "concat('Q: ', subject)"
agent: {endpoint: my-endpoint}
output: {table: main.s.out, mode: merge}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "sqltemplates").mkdir()
    (tmp_path / "jobs" / "t.yml").write_text(JOB)
    return tmp_path


def test_a_project_template_overrides_the_builtin(project: Path) -> None:
    (project / "sqltemplates" / "summary.sql").write_text(
        "SELECT count(*) AS `rows`, 0 AS `ok`, 0 AS `errors`, 0 AS `answered_this_run` FROM {{ output }}\n"
    )
    sql = agentbatch.render(project / "jobs" / "t.yml")
    assert "SELECT count(*) AS `rows`, 0 AS `ok`" not in sql  # summary is not a rendered statement
    plan = agentbatch.plan(project / "jobs" / "t.yml")
    assert plan.summary.sql.startswith("SELECT count(*) AS `rows`, 0 AS `ok`")


def test_undefined_name_in_a_template_names_template_and_line(project: Path) -> None:
    (project / "sqltemplates" / "inputs.sql").write_text(
        "SELECT\n  {{ key }},\n  {{ nope }}\nFROM x\n"
    )
    with pytest.raises(TemplateError, match=r"^inputs\.sql:3: 'nope' is undefined"):
        agentbatch.render(project / "jobs" / "t.yml")


def test_template_syntax_error_names_template_and_line(project: Path) -> None:
    (project / "sqltemplates" / "inputs.sql").write_text("SELECT 1\n{% if %}\n")
    with pytest.raises(TemplateError, match=r"inputs\.sql:2: template syntax error"):
        agentbatch.render(project / "jobs" / "t.yml")


def test_rendered_sql_that_does_not_parse_names_the_template(project: Path) -> None:
    (project / "sqltemplates" / "inputs.sql").write_text("SELECT FROM WHERE (\n")
    with pytest.raises(
        TemplateError, match=r"^inputs\.sql: rendered SQL does not parse as Databricks SQL"
    ):
        agentbatch.render(project / "jobs" / "t.yml")


def test_two_statements_from_one_template_are_refused(project: Path) -> None:
    (project / "sqltemplates" / "inputs.sql").write_text("SELECT 1; DROP TABLE {{ output }}\n")
    with pytest.raises(TemplateError, match="exactly one SQL statement"):
        agentbatch.render(project / "jobs" / "t.yml")


def test_values_in_project_templates_are_literals(project: Path) -> None:
    (project / "sqltemplates" / "summary.sql").write_text(
        "SELECT {{ var('who') }} AS `rows`, 0 AS `ok`, 0 AS `errors`, 0 AS `answered_this_run`\n"
    )
    plan = agentbatch.plan(project / "jobs" / "t.yml", vars={"who": "1; DROP TABLE x"})
    assert plan.summary.sql.startswith("SELECT '1; DROP TABLE x' AS `rows`")


def test_job_template_key_replaces_the_push_down_statement(project: Path) -> None:
    (project / "sqltemplates" / "custom_merge.sql").write_text(
        "INSERT INTO {{ output }}\n{% include '_answers.sql' %}\n"
    )
    (project / "jobs" / "t.yml").write_text(JOB + "template: custom_merge.sql\n")
    plan = agentbatch.plan(project / "jobs" / "t.yml", target="databricks-sql")
    assert plan.strategy == "push-down"
    assert plan.statements[-1].template == "custom_merge.sql"
    assert plan.statements[-1].sql.startswith("INSERT INTO `main`.`s`.`out`")


def test_cli_template_error_exit_code_2(project: Path) -> None:
    (project / "sqltemplates" / "inputs.sql").write_text("{{ nope }}\n")
    done = subprocess.run(
        [sys.executable, "-m", "agentbatch", "plan", str(project / "jobs" / "t.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "inputs.sql:1: 'nope' is undefined"


def test_a_template_edited_between_plans_of_one_process_renders_anew(tmp_path: Path) -> None:
    """Templates compile once per process (a run builds more than one plan), keyed by their
    source: an edited project template is compiled again, not served from before."""
    from agentbatch.planning.render import Renderer
    from agentbatch.spec.loader import load_job_text

    job = load_job_text(
        "name: t\nsource: {table: main.s.t, key: id}\nrequest: txt\n"
        "agent: {endpoint: my-model}\noutput: {table: main.s.o}\n",
        "t.yml",
    )
    (tmp_path / "probe.sql").write_text("SELECT {{ 1 }} AS one")
    assert Renderer(job, [tmp_path]).render("probe.sql", {}) == "SELECT 1 AS one"
    (tmp_path / "probe.sql").write_text("SELECT {{ 2 }} AS two")
    assert Renderer(job, [tmp_path]).render("probe.sql", {}) == "SELECT 2 AS two"


def test_only_the_built_in_templates_keep_answers_in_a_push_down_refresh(project: Path) -> None:
    """A push-down `--full-refresh` keeps a row's earlier answer when its new call fails
    transiently through the built-in templates only (`_answers.sql` leaves the row out, the run
    counts it). A job's own `template:`, or a project's override of a template carrying the
    rule, is rendered without it and run as written (the refresh then ends as before)."""
    job = project / "jobs" / "t.yml"

    def main(**options: Any) -> tuple[bool, str]:
        plan = agentbatch.plan(job, target="databricks-sql", **options)
        assert isinstance(plan.steps, PushDown)
        return plan.steps.keeps_answers, plan.steps.statements[-1].sql

    kept = "`_answered_before`"
    for mode in ("merge", "append", "overwrite"):
        job.write_text(JOB.replace("mode: merge", f"mode: {mode}"))
        keeps, sql = main(full_refresh=True)
        assert keeps and kept in sql, mode
        keeps, sql = main()  # a plain run selects no row the target holds a good answer for
        assert not keeps and kept not in sql, mode
    job.write_text(JOB)
    (project / "sqltemplates" / "custom_merge.sql").write_text(
        "INSERT INTO {{ output }}\n{% include '_answers.sql' %}\n"
    )
    job.write_text(JOB + "template: custom_merge.sql\n")
    keeps, sql = main(full_refresh=True)
    assert not keeps and kept not in sql
    job.write_text(JOB)
    builtin = (BUILTIN_TEMPLATES / "merge.sql").read_text()
    (project / "sqltemplates" / "merge.sql").write_text(builtin)
    keeps, sql = main(full_refresh=True)
    assert not keeps and kept not in sql
