"""The spec models import without a warning on every pydantic agentbatch supports."""

from __future__ import annotations

import subprocess
import sys


def test_the_spec_models_import_without_a_field_warning() -> None:
    # pydantic before 2.10 warns of a field in its protected namespaces ("model_" then).
    done = subprocess.run(
        [sys.executable, "-W", "error:Field:UserWarning", "-c", "import agentbatch.spec.models"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
