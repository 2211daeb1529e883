"""Test helpers: load the bundle (databricks.yml and every file it includes) and resolve its `${...}`
references and `{{job.parameters...}}` the way the Databricks CLI and the Jobs service would."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.\-\[\]]*)\}")
JOB_PARAMETER = re.compile(r"\{\{job\.parameters\.([\w-]+)\}\}")
CURRENT_USER = "someone@example.com"


@dataclass
class Bundle:
    root: Path
    config: dict[str, Any]
    # resource file (relative to root) -> its parsed YAML
    includes: dict[str, dict[str, Any]]

    @property
    def jobs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """job key -> (the file that defines it, its resource mapping)."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for file, doc in self.includes.items():
            for key, job in (doc.get("resources") or {}).get("jobs", {}).items():
                assert key not in found, f"job {key} defined in {found[key][0]} and {file}"
                found[key] = (file, job)
        return found

    def target_names(self) -> list[str]:
        return list(self.config["targets"])

    def variables(self, target: str) -> dict[str, Any]:
        values = {
            name: (spec or {}).get("default") for name, spec in self.config["variables"].items()
        }
        overrides = self.config["targets"][target].get("variables") or {}
        values.update(
            {k: v.get("default") if isinstance(v, dict) else v for k, v in overrides.items()}
        )
        return values


def load_bundle(root: Path = ROOT) -> Bundle:
    config = yaml.safe_load((root / "databricks.yml").read_text())
    includes: dict[str, dict[str, Any]] = {}
    for pattern in config.get("include", []):
        matches = sorted(root.glob(pattern))
        assert matches, f"include pattern {pattern!r} matches no file"
        for path in matches:
            includes[path.relative_to(root).as_posix()] = yaml.safe_load(path.read_text())
    return Bundle(root, config, includes)


def target_job(bundle: Bundle, target: str, key: str) -> dict[str, Any]:
    """A job resource with the target's overrides merged the way the CLI merges them (tasks by
    task_key, mappings key by key)."""
    _, job = bundle.jobs[key]
    merged = copy.deepcopy(job)
    overrides = [bundle.config.get("targets", {}).get(target, {})]
    overrides += [doc.get("targets", {}).get(target, {}) for doc in bundle.includes.values()]
    for override in overrides:
        patch = (override.get("resources") or {}).get("jobs", {}).get(key)
        if patch:
            _merge(merged, patch)
    return merged


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for name, value in patch.items():
        if name == "tasks":
            by_key = {task["task_key"]: task for task in base.setdefault("tasks", [])}
            for task in value:
                if task["task_key"] in by_key:
                    _merge(by_key[task["task_key"]], task)
                else:
                    base["tasks"].append(copy.deepcopy(task))
        elif isinstance(value, dict) and isinstance(base.get(name), dict):
            _merge(base[name], value)
        else:
            base[name] = copy.deepcopy(value)


def references(value: Any) -> Iterator[str]:
    """Every `${...}` path used anywhere in a YAML value."""
    if isinstance(value, str):
        yield from REFERENCE.findall(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def resolver(
    bundle: Bundle, target: str, file_path: Path, overrides: dict[str, Any] | None = None
) -> Callable[[Any], Any]:
    """Substitutes `${var.*}`, `${workspace.*}` and `${bundle.*}` for `target`, with the bundle's
    files deployed at `file_path` and `overrides` given as `--var name=value` at deploy time. A
    whole-string reference keeps the value's type."""
    variables = {**bundle.variables(target), **(overrides or {})}
    known: dict[str, Any] = {
        "workspace.file_path": str(file_path),
        "workspace.current_user.userName": CURRENT_USER,
        "workspace.current_user.short_name": "someone",
        "bundle.name": bundle.config["bundle"]["name"],
        "bundle.target": target,
    }

    def lookup(path: str) -> Any:
        if path.startswith("var."):
            name = path[len("var.") :]
            assert name in variables, f"${{{path}}}: variable not declared in databricks.yml"
            value = variables[name]
            assert value is not None, (
                f"${{{path}}}: no value in target {target} (test supplies none)"
            )
            return resolve(value)
        assert path in known, f"${{{path}}}: unknown reference"
        return known[path]

    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            whole = REFERENCE.fullmatch(value)
            if whole:
                return lookup(whole.group(1))
            return REFERENCE.sub(lambda m: str(lookup(m.group(1))), value)
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    return resolve


def job_parameter_values(job: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: str(p["default"]) for p in job.get("parameters", [])}


def substitute_job_parameters(params: list[str], values: dict[str, str]) -> list[str]:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"{{{{job.parameters.{name}}}}}: the job defines no such parameter"
        return values[name]

    return [JOB_PARAMETER.sub(one, p) for p in params]


_MARKER_PIECE = re.compile(r"'((?:[^'\\]|\\.)*)'|:([A-Za-z_]\w*)")


def bind_parameters(sql: str, values: dict[str, str]) -> str:
    """What the warehouse evaluates for the SQL task: `IDENTIFIER(<concat>)` becomes the name it
    spells and `(<concat>)` of string pieces and `:name` markers becomes one string literal."""

    def value(expression: str) -> str:
        out = []
        for literal, name in _MARKER_PIECE.findall(expression):
            out.append(values[name] if name else literal.replace("\\'", "'"))
        return "".join(out)

    concat = r"(?:'(?:[^'\\]|\\.)*'|:[A-Za-z_]\w*)(?: \|\| (?:'(?:[^'\\]|\\.)*'|:[A-Za-z_]\w*))*"
    sql = re.sub(rf"IDENTIFIER\(({concat})\)", lambda m: value(m.group(1)), sql)
    return re.sub(
        rf"\(({concat})\)",
        lambda m: (
            "'" + value(m.group(1)).replace("'", "\\'") + "'" if ":" in m.group(1) else m.group(0)
        ),
        sql,
    )
