"""A variable given from outside (`--var`, `vars=`) must be one the job declares or reads."""

from __future__ import annotations

from pathlib import Path

import pytest

import agentbatch
from agentbatch.cli.main import main as cli_main
from agentbatch.errors import SpecError, UsageError
from agentbatch.evaluation import compare

JOB = """\
name: t
source: {table: main.s.tickets, key: id, columns: [subject]}
request: "concat('For the ', {{ var('team') }}, ' team: ', subject)"
agent: {endpoint: "builtin:instant"}
output: {table: main.s.out, mode: merge}
vars: {team: support, unused: 1}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "sqltemplates").mkdir()
    (tmp_path / "jobs" / "t.yml").write_text(JOB)
    (tmp_path / "tickets.csv").write_text("id,subject\n1,refund\n2,login\n")
    return tmp_path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_a_misspelt_variable_is_refused_before_anything_runs(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(project)
    argv = ["run", str(project / "jobs" / "t.yml"), "--var", "tema=billing",
            "--table", f"main.s.tickets={project / 'tickets.csv'}",
            "--state-dir", str(project / "state"), "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "variable 'tema' is given but the job neither declares it" in err
    assert "did you mean 'team'?" in err
    assert _files(project) == before  # no target, no checkpoint
    # Spelt right, the same run goes through and the prompt carries the value.
    argv[3] = "team=billing"
    assert cli_main(argv) == 0
    rows = agentbatch.read_table("main.s.out", project_dir=project).to_pylist()
    assert len(rows) == 2 and all("For the billing team" in str(r) for r in rows)


def test_a_declared_variable_no_value_reads_is_accepted(project: Path) -> None:
    assert "'support'" in agentbatch.render(project / "jobs" / "t.yml", vars={"unused": 2})


def test_a_variable_read_only_by_a_project_template_is_accepted(project: Path) -> None:
    (project / "sqltemplates" / "summary.sql").write_text(
        "SELECT {{ var('who') }} AS `rows`, 0 AS `ok`, 0 AS `errors`, 0 AS `answered_this_run`\n"
    )
    plan = agentbatch.plan(project / "jobs" / "t.yml", vars={"who": 7})
    assert plan.summary.sql.startswith("SELECT 7 AS `rows`")
    with pytest.raises(UsageError, match=r"'whom' is given.*did you mean 'who'"):
        agentbatch.plan(project / "jobs" / "t.yml", vars={"whom": 7})


def test_a_template_reading_a_computed_name_could_read_any(project: Path) -> None:
    (project / "sqltemplates" / "extra.sql").write_text("SELECT {{ var('p_' ~ job_name) }}\n")
    agentbatch.plan(project / "jobs" / "t.yml", vars={"p_t": 1})


def test_a_loaded_job_does_not_take_a_new_value_its_values_already_read(project: Path) -> None:
    job = agentbatch.load_job(project / "jobs" / "t.yml")
    # The request was rendered with team=support when loaded: billing would not reach it.
    with pytest.raises(UsageError, match="'team' was read by the job's values when it was loaded"):
        agentbatch.render(job, vars={"team": "billing"})
    assert "'support'" in agentbatch.render(job, vars={"team": "support"})  # the same value
    reloaded = agentbatch.load_job(project / "jobs" / "t.yml", vars={"team": "billing"})
    assert "'billing'" in agentbatch.render(reloaded)
    with pytest.raises(UsageError, match="'tema' is given"):
        agentbatch.render(agentbatch.load_job(project / "jobs" / "t.yml", vars={"tema": "x"}))


def test_a_job_built_in_python_takes_its_own_variables(project: Path) -> None:
    job = agentbatch.load_job(project / "jobs" / "t.yml")
    built = agentbatch.Job.model_validate(job.model_dump())
    agentbatch.render(built, vars={"unused": 3})
    with pytest.raises(UsageError, match="'nope' is given"):
        agentbatch.render(built, vars={"nope": 3})


def test_compare_takes_a_variable_either_job_uses(project: Path) -> None:
    other = project / "jobs" / "other.yml"
    other.write_text(JOB.replace("name: t", "name: other").replace("team", "region"))
    given = {"team": "billing", "region": "emea"}
    with pytest.raises(UsageError, match=r"'regoin' is given.*\(variables: region, team, unused"):
        compare(project / "jobs" / "t.yml", other, vars={**given, "regoin": "x"})
    # Each variable is used by one of the two: past the variables, on to the next check.
    with pytest.raises(SpecError, match="no `evaluation:` block"):
        compare(project / "jobs" / "t.yml", other, vars=given)


def test_validate_gives_each_file_the_variables_it_uses(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = project / "jobs" / "other.yml"
    other.write_text(JOB.replace("name: t", "name: other").replace("team", "region"))
    files = [str(project / "jobs" / "t.yml"), str(other)]
    assert cli_main(["validate", *files, "--var", "team=billing", "--var", "region=emea"]) == 0
    capsys.readouterr()
    assert cli_main(["validate", *files, "--var", "regoin=emea"]) == 2
    err = capsys.readouterr().err
    assert "variable 'regoin' is given but no job file declares it" in err
    assert "did you mean 'region'?" in err


@pytest.mark.parametrize(
    ("given", "value"),
    [
        ("01234", "01234"),  # YAML 1.1: the octal 668
        ("12:30:00", "12:30:00"),  # YAML 1.1: 45000 (base 60)
        ("yes", "yes"),
        ("0x1F", "0x1F"),
        ("1_000", "1_000"),
        ("  spaced  ", "  spaced  "),
        ('"quoted"', '"quoted"'),
        (".inf", ".inf"),
        ("1.10", "1.10"),
        ("5", 5),
        ("-2", -2),
        ("0.5", 0.5),
        ("false", False),
        ("TRUE", True),
    ],
)
def test_a_var_given_on_the_command_line_is_its_text(given: str, value: object) -> None:
    """A prompt quotes a `--var` as the user typed it; only booleans and plain numbers (written
    as they read back) are typed, as a YAML default of the same text would be."""
    from agentbatch.spec.loader import parse_var_assignments

    parsed = parse_var_assignments([f"p={given}"])["p"]
    assert parsed == value and type(parsed) is type(value)
