"""databricks.yml and every resource file it includes validate against the Databricks CLI's own
bundle JSON Schema (`bundle/schema/jsonschema.json` of databricks/cli, kept beside the checkout in
`../shared/databricks/`; `additionalProperties: false` throughout, so a misspelled key fails)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.bundle.dab_refs import ROOT, load_bundle

SCHEMA_FILE = ROOT.parent / "shared" / "databricks" / "bundle.schema.json"


def _load_schema() -> dict[str, Any]:
    # Python's `re` has no \p{L} / \p{N}: rewrite them as the schema's README says.
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    text = text.replace(r"[\\p{L}\\p{N}]", "[A-Za-z0-9]")
    text = text.replace(r"\\p{L}", "[A-Za-z]").replace(r"\\p{N}", "[0-9]")
    schema: dict[str, Any] = json.loads(text)
    return schema


@pytest.fixture(scope="module")
def validator() -> Any:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing (the CLI's bundle schema)"
    return jsonschema.Draft202012Validator(_load_schema())


def _errors(validator: Any, document: Any) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in validator.iter_errors(document)
    )


def test_the_bundle_file_validates(validator: Any) -> None:
    document = yaml.safe_load((ROOT / "databricks.yml").read_text())
    assert _errors(validator, document) == []


@pytest.mark.parametrize("file", sorted(load_bundle().includes), ids=lambda f: Path(f).name)
def test_every_resource_file_validates(file: str, validator: Any) -> None:
    assert _errors(validator, load_bundle().includes[file]) == []


def test_the_schema_has_teeth(validator: Any) -> None:
    """A misspelled task key and a wrong type are refused."""
    _, job = load_bundle().jobs["ticket_triage"]
    broken = copy.deepcopy(job)
    broken["tasks"][0]["python_wheel_task"]["entrypoint"] = "agentbatch-job"
    doc = {"resources": {"jobs": {"ticket_triage": broken}}}
    assert _errors(validator, doc)
    wrong = copy.deepcopy(job)
    wrong["max_concurrent_runs"] = "one"
    doc = {"resources": {"jobs": {"ticket_triage": wrong}}}
    assert _errors(validator, doc)
