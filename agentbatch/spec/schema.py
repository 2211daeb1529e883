"""The JSON Schema of job files, checked in at agentbatch/schema/job.schema.json for editors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentbatch.spec.models import Job

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "job.schema.json"


def job_json_schema() -> dict[str, Any]:
    schema = Job.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "agentbatch job"
    return schema
