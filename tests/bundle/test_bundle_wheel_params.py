"""The command lines the wheel tasks run are accepted by the CLI, and run end to end as a local
dry-run once the bundle's references are substituted; the entry point fails the task on failure."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentbatch.cli.entrypoint import main as entry_point
from agentbatch.cli.entrypoint import split_settings
from agentbatch.cli.main import build_parser
from agentbatch.testing.images import write_sample_folder
from tests.bundle.dab_refs import (
    ROOT,
    job_parameter_values,
    load_bundle,
    resolver,
    substitute_job_parameters,
    target_job,
)

BUNDLE = load_bundle()
WHEEL_JOBS = sorted(
    key for key, (_, job) in BUNDLE.jobs.items() if "python_wheel_task" in job["tasks"][0]
)
TICKETS = ROOT / "agentbatch" / "data" / "support_tickets.csv"


def test_rest_fallback_examples_are_wheel_tasks() -> None:
    assert {"ticket_triage", "eval_triage"} <= set(WHEEL_JOBS)


def _task_argv(key: str, target: str, file_path: Path) -> list[str]:
    """The task's parameters as the job run sees them: bundle references resolved at deploy,
    job parameter references at run time (from the parameters' defaults)."""
    resolve = resolver(BUNDLE, target, file_path)
    job = resolve(target_job(BUNDLE, target, key))
    params = job["tasks"][0]["python_wheel_task"]["parameters"]
    return substitute_job_parameters(params, job_parameter_values(job))


EVAL_JOBS = {"eval_triage"}


@pytest.mark.parametrize("target", BUNDLE.target_names())
@pytest.mark.parametrize("key", WHEEL_JOBS)
def test_cli_parser_accepts_the_task_parameters(key: str, target: str) -> None:
    settings, argv = split_settings(_task_argv(key, target, Path("/Workspace/bundle/files")))
    args = build_parser().parse_args(argv)
    assert args.command == ("eval" if key in EVAL_JOBS else "run")
    assert args.job == f"/Workspace/bundle/files/jobs/{key}.yml"
    assert args.target == BUNDLE.variables(target)["run_target"]
    assert args.no_progress and args.json
    assert all("=" in item and "{{" not in item for item in args.var)
    # The bundle's run settings reach the target through the entry point.
    assert settings["apps_secret_scope"] == "agentbatch"
    assert settings["rest_fallback_on"] == "auto"
    # Development copies have a volume per user (dev mode does not prefix volume names).
    volume = "agentbatch_someone" if target == "dev" else "agentbatch"
    assert settings["checkpoint_dir"] == f"/Volumes/main/support/{volume}/checkpoints"
    if key in EVAL_JOBS:
        assert args.report == Path(f"/Volumes/main/support/{volume}/reports/{key}")


def test_job_parameters_reach_the_job_variables() -> None:
    _, argv = split_settings(_task_argv("ticket_triage", "dev", Path("/w")))
    args = build_parser().parse_args(argv)
    assert sorted(args.var) == ["catalog=main", "team=support"]


def _entry_point(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "from agentbatch.cli.entrypoint import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("key", sorted(set(WHEEL_JOBS) - EVAL_JOBS))
def test_task_command_line_runs_as_a_local_dry_run(key: str, tmp_path: Path) -> None:
    """Same arguments, with the target swapped for `local`, the state on a temp dir and the source
    table mapped to the sample tickets: the run parses, plans, reads rows and builds requests."""
    project = tmp_path / "files"
    shutil.copytree(ROOT / "jobs", project / "jobs")
    argv = _task_argv(key, "dev", project)
    argv[argv.index("--target") + 1] = "local"
    argv[argv.index("--state-dir") + 1] = str(tmp_path / "state")
    argv += [*_source_tables(key, tmp_path), "--dry-run", "--limit", "2"]
    done = _entry_point(argv, tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["summary"]["job"] == key
    assert payload["summary"]["dry_run"] is True
    assert payload["summary"]["strategy"] == "rest-fallback"
    assert len(payload["requests"]) == 2


def _source_tables(key: str, tmp_path: Path) -> list[str]:
    """`--table` mappings for a job's source: the sample tickets, or for the image job a folder
    of generated images standing in for its volume."""
    if key == "describe_images":
        photos = write_sample_folder(tmp_path / "photos")
        return ["--table", f"/Volumes/main/shop/photos={photos}"]
    return ["--table", f"main.support.tickets={TICKETS}"]


@pytest.mark.parametrize("key", sorted(EVAL_JOBS))
def test_scheduled_evaluation_scores_and_writes_its_report(key: str, tmp_path: Path) -> None:
    """The evaluation job's task runs `agentbatch eval`: rows answered, scored, a report."""
    project = tmp_path / "files"
    shutil.copytree(ROOT / "jobs", project / "jobs")
    argv = _task_argv(key, "dev", project)
    argv[argv.index("--target") + 1] = "local"
    argv[argv.index("--state-dir") + 1] = str(tmp_path / "state")
    report = tmp_path / "reports" / key
    argv[argv.index("--report") + 1] = str(report)
    argv += [
        "--table",
        f"main.support.tickets={TICKETS}",
        "--endpoint",
        "apps/triage-agent=builtin:instant",
        "--limit",
        "5",
        "--no-mlflow",
    ]
    done = _entry_point(argv, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (report / "report.md").is_file() and (report / "report.html").is_file()
    assert "label_match" in done.stdout or "exact_match" in done.stdout, done.stdout[:500]


def test_entry_point_returns_quietly_when_the_command_succeeds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry_point(["validate", str(ROOT / "jobs" / "ticket_triage.yml")])
    assert "ok" in capsys.readouterr().out


def test_entry_point_fails_the_task_when_the_command_fails(tmp_path: Path) -> None:
    """Databricks ignores an entry point's return value; only an exception fails the task."""
    with pytest.raises(SystemExit) as stopped:
        entry_point(["run", str(tmp_path / "missing.yml"), "--target", "local"])
    assert stopped.value.code == 2


def test_entry_point_reads_the_task_parameters_from_argv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # How Databricks calls it: sys.argv = [package name, *parameters], then entry_point().
    monkeypatch.setattr(sys, "argv", ["agentbatch", "validate", str(tmp_path / "missing.yml")])
    with pytest.raises(SystemExit) as stopped:
        entry_point()
    assert stopped.value.code == 2
