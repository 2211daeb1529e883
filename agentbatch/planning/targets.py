"""Run targets: which engine a run uses and how it connects. Chosen per run, never stored in jobs.

Built-in targets are named after their engines (`local`, `databricks-sql`, `spark`). A project may
add its own in `agentbatch.yml` beside `jobs/`:

    targets:
      prod:
        engine: databricks-sql
        warehouse_id: "1234abcd"     # host and credentials come from the environment / profile
        profile: PROD

Connection secrets are never read from these files: databricks-sdk's unified auth supplies them.

A run adds settings to the target it resolves (`RunOptions.settings`): the CLI's budget flags, and
the Databricks job entry point's `agentbatch-job --setting NAME=VALUE ...`, which is how bundle
variables such as the Apps secret scope reach a wheel task (it has neither a project file of its
own nor env vars).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agentbatch.engines.registry import ENGINES
from agentbatch.errors import SpecError, UsageError
from agentbatch.spec.yaml_source import load_yaml

SECRET_SETTINGS = {"token", "password", "client_secret", "access_token", "secret"}
PROJECT_FILE = "agentbatch.yml"


def refuse_secret_settings(settings: Mapping[str, Any]) -> None:
    """Settings travel in job parameters and logs: a secret among them is a usage error."""
    secret = SECRET_SETTINGS & {str(k).lower() for k in settings}
    if secret:
        raise UsageError(
            f"setting {sorted(secret)[0]}: secrets are not passed as settings; "
            "use a secret scope (apps_secret_scope) or databricks-sdk's unified auth"
        )


@dataclass(frozen=True)
class Target:
    name: str
    engine: str
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def with_settings(self, **overrides: Any) -> Target:
        merged = {**self.settings, **{k: v for k, v in overrides.items() if v is not None}}
        return Target(self.name, self.engine, MappingProxyType(merged))


def builtin_targets() -> dict[str, Target]:
    return {name: Target(name, name) for name in ENGINES}


def load_project_targets(project_dir: Path) -> dict[str, Target]:
    path = project_dir / PROJECT_FILE
    if not path.exists():
        return {}
    doc = load_yaml(path.read_text(encoding="utf-8"), str(path))
    raw = doc.value.get("targets", {}) if isinstance(doc.value, dict) else None
    if not isinstance(raw, dict):
        raise SpecError(f"{doc.where(('targets',))}: targets: must be a mapping of target names")
    targets: dict[str, Target] = {}
    for name, settings in raw.items():
        where = doc.where(("targets", name))
        if not isinstance(settings, dict) or not isinstance(settings.get("engine"), str):
            raise SpecError(f"{where}: targets.{name}: needs `engine:` ({', '.join(ENGINES)})")
        if settings["engine"] not in ENGINES:
            raise SpecError(
                f"{where}: targets.{name}.engine: unknown engine {settings['engine']!r}"
            )
        secret = SECRET_SETTINGS & {k.lower() for k in settings}
        if secret:
            raise SpecError(
                f"{where}: targets.{name}: {sorted(secret)[0]} must not be stored in files; "
                "use a databricks-sdk profile or environment variables"
            )
        rest = {k: v for k, v in settings.items() if k != "engine"}
        targets[name] = Target(name, settings["engine"], MappingProxyType(rest))
    return targets


def resolve_target(name: str, project_dir: Path | None = None) -> Target:
    known = {**builtin_targets(), **(load_project_targets(project_dir) if project_dir else {})}
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(f"unknown target {name!r}{hint}; known targets: {', '.join(sorted(known))}")
