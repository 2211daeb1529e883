"""Read the parts of `databricks.yml` that `agentbatch bundle` needs: the declared variables, their
defaults, and each bundle target's overrides. Nothing else of the bundle is interpreted here; the
Databricks CLI owns the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agentbatch.errors import ConfigError
from agentbatch.spec.yaml_source import YamlDocument, load_yaml

BUNDLE_FILE = "databricks.yml"

# The variables the generated job resources reference, by the kind of task that needs them.
COMMON_VARIABLES = (
    "schedule_cron",
    "schedule_timezone",
    "schedule_pause_status",
    "notification_emails",
    "failure_webhooks",
    "task_max_retries",
    "task_min_retry_interval_millis",
    "task_timeout_seconds",
)
WHEEL_VARIABLES = ("run_target", "state_dir", "serverless_environment_version")
SQL_VARIABLES = ("warehouse_id",)


@dataclass(frozen=True)
class BundleTarget:
    name: str
    is_default: bool
    variables: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class BundleConfig:
    """Variables (name -> default, or `None` when the variable has no default) and targets."""

    file: str
    variables: Mapping[str, Any]
    targets: tuple[BundleTarget, ...]

    @property
    def default_target(self) -> BundleTarget:
        """The target `databricks bundle deploy` picks without `-t`: `default: true`, else the first."""
        for target in self.targets:
            if target.is_default:
                return target
        return self.targets[0]

    def values_for(self, target: BundleTarget) -> dict[str, Any]:
        """Each variable's value in `target`: the target's override, else the default."""
        return {**self.variables, **target.variables}

    def require(self, names: tuple[str, ...]) -> None:
        missing = [name for name in names if name not in self.variables]
        if missing:
            raise ConfigError(
                f"{self.file}: variables: the generated job resources use "
                f"{', '.join(missing)}; declare them under `variables:`"
            )


def load_bundle_config(project_dir: Path) -> BundleConfig:
    path = project_dir / BUNDLE_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path}: no bundle file; `agentbatch bundle` runs in a project with a {BUNDLE_FILE}"
        )
    doc = load_yaml(path.read_text(encoding="utf-8"), BUNDLE_FILE)
    if not isinstance(doc.value, dict):
        raise ConfigError(f"{BUNDLE_FILE}:1: the bundle file is a mapping of keys")
    variables = _variables(doc)
    targets = _targets(doc, variables)
    return BundleConfig(BUNDLE_FILE, MappingProxyType(variables), targets)


def _variables(doc: YamlDocument) -> dict[str, Any]:
    raw = doc.value.get("variables", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{doc.where(('variables',))}: variables: must be a mapping")
    variables: dict[str, Any] = {}
    for name, definition in raw.items():
        if definition is not None and not isinstance(definition, dict):
            raise ConfigError(
                f"{doc.where(('variables', name))}: variables.{name}: "
                "must be a mapping (description, default, type, lookup)"
            )
        variables[name] = (definition or {}).get("default")
    return variables


def _targets(doc: YamlDocument, variables: Mapping[str, Any]) -> tuple[BundleTarget, ...]:
    raw = doc.value.get("targets")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{doc.where(('targets',))}: targets: declare at least one target")
    targets: list[BundleTarget] = []
    for name, settings in raw.items():
        settings = settings or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{doc.where(('targets', name))}: targets.{name}: must be a mapping")
        overrides = settings.get("variables") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(
                f"{doc.where(('targets', name, 'variables'))}: targets.{name}.variables: "
                "must be a mapping"
            )
        unknown = sorted(set(overrides) - set(variables))
        if unknown:
            raise ConfigError(
                f"{doc.where(('targets', name, 'variables', unknown[0]))}: "
                f"targets.{name}.variables.{unknown[0]}: not declared under `variables:`"
            )
        values = {
            key: value.get("default") if isinstance(value, dict) else value
            for key, value in overrides.items()
        }
        targets.append(
            BundleTarget(name, settings.get("default") is True, MappingProxyType(values))
        )
    return tuple(targets)
