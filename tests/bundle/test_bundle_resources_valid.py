"""databricks.yml and every resource it includes hold together: the job resources are valid for the
bundle's typed job model (databricks-bundles), in every target, and every file, variable and job
parameter they reference exists."""

from __future__ import annotations

import copy
import fnmatch
from pathlib import Path
from typing import Any

import pytest
from tests.bundle.dab_refs import (
    ROOT,
    job_parameter_values,
    load_bundle,
    references,
    resolver,
    target_job,
)
from databricks.bundles.jobs import Job

from agentbatch.bundle.resources import ENTRY_POINT, PACKAGE_NAME
from agentbatch.bundle.entrypoint import split_settings

# The top-level shape of a bundle configuration (the typed model ships only resource classes).
ROOT_KEYS = {
    "bundle", "include", "artifacts", "sync", "variables", "targets", "workspace", "resources",
    "permissions", "run_as", "presets", "experimental", "python", "scripts",
}  # fmt: skip
TARGET_KEYS = {
    "mode", "default", "workspace", "variables", "resources", "presets", "artifacts", "sync",
    "permissions", "run_as", "bundle", "git", "cluster_id", "compute_id",
}  # fmt: skip
VARIABLE_KEYS = {"description", "default", "type", "lookup"}
ARTIFACT_KEYS = {"type", "build", "path", "files", "executable", "dynamic_version"}
SYNC_KEYS = {"include", "exclude", "paths"}
PRESET_KEYS = {
    "name_prefix", "pipelines_development", "trigger_pause_status", "jobs_max_concurrent_runs",
    "tags", "source_linked_deployment", "artifacts_dynamic_version",
}  # fmt: skip

BUNDLE = load_bundle()
JOB_KEYS = sorted(BUNDLE.jobs)
TARGETS = BUNDLE.target_names()


def test_bundle_file_has_the_shape_of_a_bundle() -> None:
    config = BUNDLE.config
    assert set(config) <= ROOT_KEYS
    assert config["bundle"]["name"] == "agentbatch"
    assert config["include"] == ["resources/*.yml"]
    for spec in config["variables"].values():
        assert set(spec) <= VARIABLE_KEYS
        assert spec.get("description"), "every variable says what it is for"
    artifact = config["artifacts"]["default"]
    assert set(artifact) <= ARTIFACT_KEYS
    assert artifact["type"] == "whl"
    assert (ROOT / artifact["path"] / "pyproject.toml").is_file()
    assert set(config["sync"]) <= SYNC_KEYS
    for name, target in config["targets"].items():
        assert set(target) <= TARGET_KEYS, name
        assert set(target.get("presets") or {}) <= PRESET_KEYS, name
        assert set(target.get("variables") or {}) <= set(config["variables"]), name


def test_every_sync_pattern_matches_files() -> None:
    """The CLI warns about sync patterns that match nothing."""
    for pattern in BUNDLE.config["sync"]["include"]:
        assert sorted(ROOT.glob(pattern)), pattern


def test_dev_is_the_default_development_target_and_prod_is_production() -> None:
    targets = BUNDLE.config["targets"]
    assert targets["dev"]["mode"] == "development"
    assert targets["dev"]["default"] is True
    assert targets["prod"]["mode"] == "production"
    assert BUNDLE.variables("dev")["schedule_pause_status"] == "PAUSED"
    assert BUNDLE.variables("prod")["schedule_pause_status"] == "UNPAUSED"


def test_every_example_job_is_scheduled() -> None:
    names = {path.stem for path in (ROOT / "jobs").glob("*.yml")}
    assert set(JOB_KEYS) == names
    assert names >= {"ticket_triage", "summarise_tickets", "extract_order_details", "eval_triage"}


@pytest.mark.parametrize("key", JOB_KEYS)
def test_job_resource_is_valid_for_the_bundle_job_model(key: str) -> None:
    _, job = BUNDLE.jobs[key]
    model = Job.from_dict(copy.deepcopy(job))  # type: ignore[arg-type]
    assert model.name == key
    assert len(model.tasks) == 1


def test_the_job_model_refuses_a_misspelled_field() -> None:
    """The check above has teeth: an unknown key anywhere in a task is an error."""
    _, job = BUNDLE.jobs["ticket_triage"]
    broken = copy.deepcopy(job)
    broken["tasks"][0]["python_wheel_task"]["entrypoint"] = "agentbatch"
    with pytest.raises(ValueError, match="Unexpected field 'entrypoint'"):
        Job.from_dict(broken)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("key", JOB_KEYS)
def test_job_resource_is_valid_in_every_target_once_resolved(key: str, target: str) -> None:
    """With variables substituted, typed fields (enums, ints, lists) are checked too."""
    variables = {"warehouse_id": "abc123"}
    resolve = resolver(_with(BUNDLE, target, variables), target, Path("/Workspace/bundle/files"))
    job = resolve(target_job(BUNDLE, target, key))
    model = Job.from_dict(copy.deepcopy(job))
    schedule = model.schedule
    assert schedule is not None
    assert schedule.as_dict()["pause_status"] == ("UNPAUSED" if target == "prod" else "PAUSED")
    [task] = model.tasks
    assert isinstance(task.max_retries, int) and task.max_retries >= 1
    assert isinstance(task.timeout_seconds, int) and task.timeout_seconds > 0
    assert task.retry_on_timeout is False
    assert model.max_concurrent_runs == 1


@pytest.mark.parametrize("key", JOB_KEYS)
def test_every_reference_is_declared(key: str) -> None:
    file, _ = BUNDLE.jobs[key]
    declared = set(BUNDLE.config["variables"])
    for path in references(BUNDLE.includes[file]):
        root, _, rest = path.partition(".")
        assert root in {"var", "workspace", "bundle"}, path
        if root == "var":
            assert rest in declared, f"{file}: ${{{path}}} is not declared in databricks.yml"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("key", JOB_KEYS)
def test_every_referenced_file_exists(key: str, target: str) -> None:
    file, _ = BUNDLE.jobs[key]
    base = (ROOT / file).parent
    job = target_job(BUNDLE, target, key)
    for task in job["tasks"]:
        if "sql_task" in task:
            path = base / task["sql_task"]["file"]["path"]
            assert path.is_file(), f"{file}: {path} does not exist"
            assert _synced(path.relative_to(ROOT).as_posix())
        if "python_wheel_task" in task:
            _, argv = split_settings(task["python_wheel_task"]["parameters"])
            job_file = argv[1]
            prefix = "${workspace.file_path}/"
            assert job_file.startswith(prefix)
            relative = job_file[len(prefix) :]
            assert (ROOT / relative).is_file(), f"{file}: {relative} does not exist"
            assert _synced(relative), f"{relative} is not synced with the bundle"
    for environment in job.get("environments", []):
        for dependency in environment["spec"]["dependencies"]:
            # The wheel is the artifact's build output: dist/ beside the artifact's pyproject.toml.
            assert dependency == "../dist/*.whl"
            assert (base / ".." / BUNDLE.config["artifacts"]["default"]["path"]).resolve() == ROOT


@pytest.mark.parametrize("key", JOB_KEYS)
def test_wheel_tasks_run_the_package_entry_point_and_pass_parameters(key: str) -> None:
    _, job = BUNDLE.jobs[key]
    [task] = job["tasks"]
    if "python_wheel_task" not in task:
        assert "sql_task" in task
        assert task["sql_task"]["warehouse_id"] == "${var.warehouse_id}"
        assert task["sql_task"]["parameters"] == {
            name: f"{{{{job.parameters.{name}}}}}" for name in job_parameter_values(job)
        }
        return
    wheel = task["python_wheel_task"]
    assert wheel["package_name"] == PACKAGE_NAME
    assert wheel["entry_point"] == ENTRY_POINT
    assert task["environment_key"] in {e["environment_key"] for e in job["environments"]}
    params = wheel["parameters"]
    defined = job_parameter_values(job)
    used = {
        p.split("=", 1)[0]
        for p, flag in zip(params[1:], params[:-1], strict=True)
        if flag == "--var"
    }
    assert used == set(defined), "every job parameter flows into a --var, and only those"
    for name in defined:
        assert f"{name}={{{{job.parameters.{name}}}}}" in params


def test_the_project_entry_point_is_registered_in_the_package() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get(ENTRY_POINT) == "agentbatch.bundle.entrypoint:main", (
        f"pyproject.toml [project.scripts] needs {ENTRY_POINT} = 'agentbatch.bundle.entrypoint:main'"
    )


def _synced(relative: str) -> bool:
    sync = BUNDLE.config.get("sync", {})
    excluded = any(fnmatch.fnmatch(relative, pattern) for pattern in sync.get("exclude", []))
    return not excluded


def _with(bundle: Any, target: str, values: dict[str, Any]) -> Any:
    """The bundle with variables that have no default given a value, as `--var` would."""
    patched = copy.deepcopy(bundle)
    for name, value in values.items():
        patched.config["variables"][name]["default"] = value
    return patched
