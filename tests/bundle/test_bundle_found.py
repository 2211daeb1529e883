"""What a first `databricks bundle deploy` of this bundle would meet that the other bundle tests do
not model: the Databricks CLI version the configuration needs, and Unity Catalog volumes, which the
CLI's development mode does not rename per user as it renames jobs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agentbatch.cli.entrypoint import split_settings
from tests.bundle.dab_refs import (
    REFERENCE,
    job_parameter_values,
    load_bundle,
    resolver,
    substitute_job_parameters,
    target_job,
)

BUNDLE = load_bundle()
TARGETS = BUNDLE.target_names()
FILES = Path("/Workspace/bundle/files")

# Fields the bundle uses, with the first Databricks CLI release that knows them (databricks/cli
# tags: `presets.artifacts_dynamic_version` came with #3074 and the serverless environment's
# `environment_version` became a public field with the Go SDK 0.72 bump #3013, both in v0.256.0).
# An older CLI warns "unknown field" and drops the field: the environment reaches the Jobs API
# without a version, and a redeploy of the same wheel version can run the old wheel.
NEEDS_CLI = (0, 256, 0)


def _minimum_version(constraint: str) -> tuple[int, ...] | None:
    found = re.search(r">=\s*v?(\d+)\.(\d+)\.(\d+)", constraint)
    return tuple(int(x) for x in found.groups()) if found else None


def test_the_bundle_uses_fields_a_recent_cli_knows() -> None:
    presets = [t.get("presets") or {} for t in BUNDLE.config["targets"].values()]
    assert any(p.get("artifacts_dynamic_version") for p in presets)
    environments = [
        env["spec"] for _, job in BUNDLE.jobs.values() for env in job.get("environments", [])
    ]
    assert environments and all("environment_version" in spec for spec in environments)
    assert not any("client" in spec for spec in environments)


def test_the_bundle_refuses_a_cli_too_old_for_those_fields() -> None:
    """`bundle.databricks_cli_version` makes the CLI stop with "version constraint not satisfied"
    instead of deploying a job the Jobs API refuses or a stale wheel."""
    constraint = (BUNDLE.config.get("bundle") or {}).get("databricks_cli_version")
    assert constraint, "databricks.yml: bundle.databricks_cli_version is not set"
    minimum = _minimum_version(str(constraint))
    assert minimum is not None, constraint
    assert minimum >= NEEDS_CLI, constraint


def _volumes(target: str) -> dict[str, dict[str, Any]]:
    resolve = resolver(BUNDLE, target, FILES)
    volumes = dict((BUNDLE.config.get("resources") or {}).get("volumes") or {})
    volumes.update(((BUNDLE.config["targets"][target].get("resources") or {}).get("volumes")) or {})
    return {key: resolve(spec) for key, spec in volumes.items()}


def _full_name(volume: dict[str, Any]) -> str:
    return f"{volume['catalog_name']}.{volume['schema_name']}.{volume['name']}"


def test_development_copies_do_not_create_the_production_volume() -> None:
    """Development mode prefixes job names with `[dev <user>]` but leaves UC volumes as named
    (databricks/cli bundle/config/mutator/resourcemutator/apply_presets.go: no case for volumes).
    With the same catalog and schema, the dev deployment's volume and prod's are one volume, which
    each target's deployment state then tries to create: the second deployment (prod after dev, or
    a second developer's dev) fails because the volume already exists, and destroying a dev copy
    would delete prod's reports."""
    names = {target: sorted(_full_name(v) for v in _volumes(target).values()) for target in TARGETS}
    assert all(names.values())
    assert names["dev"] != names["prod"], names
    assert not set(names["dev"]) & set(names["prod"]), names


def test_each_developer_gets_a_volume_of_their_own() -> None:
    raw = dict((BUNDLE.config.get("resources") or {}).get("volumes") or {})
    variables = BUNDLE.variables("dev")

    def names_user(value: Any, depth: int = 0) -> bool:
        for ref in REFERENCE.findall(str(value)):
            if ref.startswith("workspace.current_user."):
                return True
            if (
                ref.startswith("var.")
                and depth < 5
                and names_user(variables[ref[len("var.") :]], depth + 1)
            ):
                return True
        return False

    assert raw
    for key, spec in raw.items():
        assert names_user(spec["name"]), f"volume {key}: dev name does not name the user"


@pytest.mark.parametrize("target", TARGETS)
def test_wheel_tasks_write_into_the_volume_their_target_creates(target: str) -> None:
    """The checkpoint and report folders the tasks are given lie in a volume the same target
    deploys, so a first run finds the folder's volume there."""
    roots = ["/Volumes/" + _full_name(v).replace(".", "/") + "/" for v in _volumes(target).values()]
    resolve = resolver(BUNDLE, target, FILES)
    checked = 0
    for key, (_, job) in sorted(BUNDLE.jobs.items()):
        if "python_wheel_task" not in job["tasks"][0]:
            continue
        resolved = resolve(target_job(BUNDLE, target, key))
        params = resolved["tasks"][0]["python_wheel_task"]["parameters"]
        argv = substitute_job_parameters(params, job_parameter_values(resolved))
        settings, rest = split_settings(argv)
        folders = [settings["checkpoint_dir"]]
        if "--report" in rest:
            folders.append(rest[rest.index("--report") + 1])
        for folder in folders:
            assert any(str(folder).startswith(root) for root in roots), (key, folder, roots)
            checked += 1
    assert checked
