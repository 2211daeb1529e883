from __future__ import annotations

import json

from agentbatch.spec.schema import SCHEMA_PATH, job_json_schema


def test_checked_in_schema_is_current() -> None:
    """Regenerate with: agentbatch schema > agentbatch/schema/job.schema.json"""
    assert json.loads(SCHEMA_PATH.read_text()) == job_json_schema()


def test_schema_names_the_core_keys() -> None:
    schema = job_json_schema()
    assert {"name", "source", "request", "agent", "output"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
