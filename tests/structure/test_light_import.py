"""`import agentbatch` (and the CLI module) must not pull in heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["pyspark", "duckdb", "databricks.sql", "pandas", "jsonschema"]


def test_import_agentbatch_is_light() -> None:
    code = (
        "import sys, json, agentbatch, agentbatch.cli.main;"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_planning_a_job_stays_light() -> None:
    code = (
        "import sys, json, agentbatch;"
        "agentbatch.render('jobs/ticket_triage.yml');"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
