"""Run targets: which engine a run uses and how it connects. Chosen per run, never stored in jobs.

Built-in targets are named after their engines (`local`, `databricks-sql`, `spark`). A project may
add its own in `agentbatch.yml` beside `jobs/`:

    targets:
      prod:
        engine: databricks-sql
        warehouse_id: "1234abcd"     # host and credentials come from the environment / profile
        profile: PROD

Connection secrets are never read from these files: databricks-sdk's unified auth supplies them.
A setting the target's engine does not read (a misspelt `warehose_id` would otherwise leave the
warehouse to `DATABRICKS_WAREHOUSE_ID`) and a key the file does not hold are errors naming the
file's line, and so is a budget setting out of range.

A run adds settings to the target it resolves (`RunOptions.settings`): the CLI's budget flags, and
the Databricks job entry point's `agentbatch-job --setting NAME=VALUE ...`, which is how bundle
variables such as the Apps secret scope reach a wheel task (it has neither a project file of its
own nor env vars). The bundle hands every wheel task the same ones whatever its target's engine,
so these must be settings some engine reads, not necessarily this one's.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from agentbatch.engines.registry import ENGINES
from agentbatch.errors import SpecError, UsageError
from agentbatch.spec.models import Budget
from agentbatch.spec.yaml_source import YamlDocument, load_yaml

SECRET_SETTINGS = {"token", "password", "client_secret", "access_token", "secret"}
PROJECT_FILE = "agentbatch.yml"
PROJECT_KEYS = ("targets", "prices")  # prices: read by execution.budget
BUDGET_SETTINGS = frozenset(Budget.model_fields)
# Read by every run whatever its engine: the budget, the ledger's folder, and the workspace the
# run's agents are looked up in (connect.sdk_config).
RUN_SETTINGS = BUDGET_SETTINGS | {"state_dir", "host", "profile", "scheme", "port"}
# What each engine reads from its settings (its connection and tuning).
ENGINE_SETTINGS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "local": frozenset({"catalog", "schema", "warehouse_dir", "memory_limit"}),
        "databricks-sql": frozenset(
            {
                "warehouse_id",
                "http_path",
                "catalog",
                "schema",
                "staging_volume",
                "insert_rows",
                "poll_interval_s",
                "poll_max_s",
                "conflict_attempts",
                "conflict_backoff_s",
                "telemetry",
                "tls_ca_file",
            }
        ),
        "spark": frozenset(
            {
                "catalog",
                "schema",
                "warehouse_dir",
                "storage",
                "checkpoint_dir",
                "checkpoint_every_s",
                "partitions",
                "shared_budget",
                "rest_fallback_on",
                "serverless",
                "master",
                "app_name",
                "spark_conf",
                "max_concurrency",
                "max_retries",
                "timeout_seconds",
                "ai_query_api",
                "ai_query_endpoints",
                "ai_query_custom_models",
                "apps_secret_scope",
                "apps_client_id_key",
                "apps_client_secret_key",
            }
        ),
    }
)


def settings_of(engine: str) -> frozenset[str]:
    """The settings a target on `engine` may have."""
    return RUN_SETTINGS | ENGINE_SETTINGS.get(engine, frozenset())


def any_settings() -> frozenset[str]:
    """The settings some engine reads."""
    return RUN_SETTINGS.union(*ENGINE_SETTINGS.values())


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
        """This target with a run's settings (flags, `--setting`, `settings=`) added."""
        refuse_unknown_settings(overrides)
        merged = {**self.settings, **{k: v for k, v in overrides.items() if v is not None}}
        return Target(self.name, self.engine, MappingProxyType(merged))


def builtin_targets() -> dict[str, Target]:
    return {name: Target(name, name) for name in ENGINES}


def refuse_unknown_settings(settings: Mapping[str, Any]) -> None:
    """A run's setting no engine reads is a typo: refused rather than run without it."""
    known = any_settings()
    for key in sorted(str(k) for k in settings):
        if key not in known:
            raise UsageError(f"setting {key!r}: no target reads it{_did_you_mean(key, known)}")


def _did_you_mean(key: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def load_project_targets(project_dir: Path) -> dict[str, Target]:
    path = project_dir / PROJECT_FILE
    if not path.exists():
        return {}
    doc = load_yaml(path.read_text(encoding="utf-8"), str(path))
    _check_project_keys(doc)
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
        _check_settings(doc, name, settings["engine"], rest)
        targets[name] = Target(name, settings["engine"], MappingProxyType(rest))
    return targets


def _check_project_keys(doc: YamlDocument) -> None:
    if not isinstance(doc.value, dict):
        return
    known = frozenset(PROJECT_KEYS)
    for key in doc.value:
        if key not in known:
            raise SpecError(
                f"{doc.where((key,))}: {key}: unknown key{_did_you_mean(key, known)} "
                f"({PROJECT_FILE} holds {', '.join(PROJECT_KEYS)})"
            )


def _check_settings(doc: YamlDocument, name: str, engine: str, settings: Mapping[str, Any]) -> None:
    """Each setting is one the target's engine reads; budget settings are in range."""
    known = settings_of(engine)
    for key, value in settings.items():
        where = f"{doc.where(('targets', name, key))}: targets.{name}.{key}"
        if key not in known:
            others = [e for e, keys in ENGINE_SETTINGS.items() if key in keys]
            problem = (
                f"a setting of the {' and '.join(others)} engine, not of {engine}"
                if others
                else f"unknown setting for engine {engine}{_did_you_mean(key, known)}"
            )
            raise SpecError(f"{where}: {problem}")
        if key in BUDGET_SETTINGS:
            try:
                Budget.model_validate({key: value})
            except ValidationError as err:
                raise SpecError(f"{where}: {err.errors(include_url=False)[0]['msg']}") from None


def resolve_target(name: str, project_dir: Path | None = None) -> Target:
    known = {**builtin_targets(), **(load_project_targets(project_dir) if project_dir else {})}
    if not isinstance(name, str):
        raise UsageError(
            f"target must be a target's name or an agentbatch Target, not {type(name).__name__}; "
            f"known targets: {', '.join(sorted(known))}"
        )
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(f"unknown target {name!r}{hint}; known targets: {', '.join(sorted(known))}")
