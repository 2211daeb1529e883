"""`agentbatch.yml`: a target setting its engine does not read, a key the file does not hold and a
budget setting out of range are errors naming the file's line and key, before anything runs; a
run's own settings (flags, `--setting`, `settings=`) must be ones some engine reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import agentbatch
from agentbatch.cli.entrypoint import main as job_main
from agentbatch.cli.main import main
from agentbatch.engines.registry import ENGINES
from agentbatch.errors import UsageError
from agentbatch.planning.targets import ENGINE_SETTINGS, any_settings

JOB = """\
name: t
source: {table: main.s.tickets, key: id, columns: [subject]}
request: "concat('Summarise: ', subject)"
agent: {endpoint: "builtin:instant"}
output: {table: main.s.out}
"""
PACKAGE = Path(agentbatch.__file__).resolve().parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "t.yml").write_text(JOB)
    (tmp_path / "tickets.csv").write_text("id,subject\n1,refund\n")
    return tmp_path


def _dry_run(project: Path, *extra: str) -> int:
    job = str(project / "jobs" / "t.yml")
    tickets = f"main.s.tickets={project / 'tickets.csv'}"
    return main(["run", job, "--table", tickets, "--dry-run", "--no-progress", *extra])


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        (
            "targets:\n  mine:\n    engine: local\n    max_rowz: 1\n",
            "agentbatch.yml:4: targets.mine.max_rowz: unknown setting for engine local; "
            "did you mean 'max_rows'?",
        ),
        (
            "targets:\n  mine: {engine: databricks-sql, warehose_id: abc}\n",
            "agentbatch.yml:2: targets.mine.warehose_id: unknown setting for engine "
            "databricks-sql; did you mean 'warehouse_id'?",
        ),
        (
            "targets:\n  mine:\n    engine: local\n    staging_volume: /Volumes/a/b/c\n",
            "agentbatch.yml:4: targets.mine.staging_volume: a setting of the databricks-sql "
            "engine, not of local",
        ),
        (
            "prices: {}\ntargetz:\n  mine: {engine: local}\n",
            "agentbatch.yml:2: targetz: unknown key; did you mean 'targets'? "
            "(agentbatch.yml holds targets, prices)",
        ),
        (
            "targets:\n  mine:\n    engine: local\n    max_rows: -5\n",
            "agentbatch.yml:4: targets.mine.max_rows: Input should be greater than 0",
        ),
    ],
)
def test_a_mistake_in_the_project_file_names_its_line_and_key(
    project: Path, file: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "agentbatch.yml").write_text(file)
    assert _dry_run(project, "--target", "mine") == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(expected), err
    assert len(err.splitlines()) == 1


def test_a_right_project_file_runs(project: Path) -> None:
    (project / "agentbatch.yml").write_text(
        "targets:\n  mine: {engine: local, max_rows: 5, memory_limit: 1GB}\nprices: {}\n"
    )
    assert _dry_run(project, "--target", "mine") == 0


def test_a_run_setting_no_engine_reads_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UsageError, match=r"setting 'warehose_id': .*did you mean 'warehouse_id'"):
        agentbatch.plan(project / "jobs" / "t.yml", settings={"warehose_id": "abc"})
    # The bundle's wheel tasks hand the same settings to every target's engine.
    job = str(project / "jobs" / "t.yml")
    tickets = f"main.s.tickets={project / 'tickets.csv'}"
    bundle_settings = ["--setting", "apps_secret_scope=agentbatch"]
    bundle_settings += ["--setting", "rest_fallback_on=auto"]
    job_main([*bundle_settings, "run", job, "--table", tickets, "--dry-run", "--no-progress"])
    with pytest.raises(SystemExit) as stopped:
        job_main(["--setting", "apps_secret_scop=x", "run", job, "--table", tickets, "--dry-run"])
    assert stopped.value.code == 2
    assert "did you mean 'apps_secret_scope'?" in capsys.readouterr().err


def test_every_setting_an_engine_reads_is_listed() -> None:
    """The lists above are what the engines read: a setting added to an engine must be added
    there, or every target naming it would be refused."""
    assert set(ENGINE_SETTINGS) == set(ENGINES)
    internal = {"endpoint_overrides", "job_name", "run_id"}  # set by the runner itself
    read: set[str] = set()
    for path in [*(PACKAGE / "engines").rglob("*.py"), PACKAGE / "agent" / "endpoints.py"]:
        text = path.read_text(encoding="utf-8")
        read |= set(re.findall(r"settings\.get\(\"(\w+)\"", text))
        read |= set(re.findall(r"settings\[\"(\w+)\"\]", text))
        read |= set(re.findall(r"_setting\(settings, \"(\w+)\"", text))
    assert read - internal <= any_settings()
