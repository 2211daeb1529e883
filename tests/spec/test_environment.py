"""Values read with `{{ env('NAME') }}` belong to the machine that loads the job: `compile` and
`bundle` refuse such a job (their files would hold the value, and a scheduled run has no such
variable), and what `render` and `plan` print shows `***` where a run uses the value."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import agentbatch
from agentbatch.bundle.compile import compile_jobs
from agentbatch.cli.main import main
from agentbatch.errors import SpecError

SECRET = "s3cr3t-'value'"

# A Model Serving endpoint and a plain prompt: push-down, so `compile` would write the SQL.
JOB = """\
name: keyed
source: {table: main.s.tickets, key: id, columns: [subject]}
request: "concat({{ env('PROMPT_KEY') }}, subject)"
agent: {endpoint: my-llm}
output: {table: main.s.out}
env: [PROMPT_KEY]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROMPT_KEY", SECRET)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "keyed.yml").write_text(JOB)
    (tmp_path / "tickets.csv").write_text("id,subject\n1,refund\n")
    return tmp_path


def test_compile_refuses_a_job_that_reads_the_environment(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = project / "build"
    job = str(project / "jobs" / "keyed.yml")
    code = main(["compile", job, "--target", "databricks-sql", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "keyed.yml:3: request: reads env('PROMPT_KEY')" in err
    assert "declare a variable under `vars:`" in err and "secret scope" in err
    assert not out.exists()


def test_bundle_refuses_a_job_that_reads_the_environment(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "databricks.yml", project)
    code = main(["bundle", "--project-dir", str(project)])
    assert code == 2
    assert "keyed.yml:3: request: reads env('PROMPT_KEY')" in capsys.readouterr().err
    assert not (project / "resources").exists()


def test_a_job_declaring_env_for_templates_is_refused_at_its_env_key(project: Path) -> None:
    (project / "jobs" / "keyed.yml").write_text(
        JOB.replace("{{ env('PROMPT_KEY') }}", "'Classify: '")
    )
    with pytest.raises(SpecError, match=r"keyed\.yml:6: env: declares environment variables"):
        compile_jobs([project / "jobs" / "keyed.yml"], project / "build", target="databricks-sql")


def test_render_and_plan_print_stars_where_the_run_uses_the_value(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = str(project / "jobs" / "keyed.yml")
    for command in (["render", job], ["plan", job]):
        assert main(command) == 0
        out = capsys.readouterr().out
        assert "s3cr3t" not in out
        assert "concat('***', subject)" in out
    # The run itself sends the value.
    endpoints = {"my-llm": "builtin:instant"}
    with agentbatch.run(
        job, tables={"main.s.tickets": project / "tickets.csv"}, endpoints=endpoints
    ) as result:
        [row] = result.to_pandas().to_dict("records")
    assert SECRET in row["response"]
