"""What a command line hands a command that must never be printed, registered before it runs.

`redact` masks registered secrets in every message the CLI prints (errors and log lines); the
run registers what it resolves itself (auth headers, the endpoint it calls), but a command can
fail before that, quoting what it was given: an `--endpoint NAME=URL` refused as no valid URL, or
an engine error quoting a SQL literal a job's `{{ env('NAME') }}` rendered.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

from agentbatch.agent.redact import register_environment_value, register_url_credentials
from agentbatch.errors import AgentbatchError


def register_command_secrets(args: argparse.Namespace) -> None:
    """The credentials of the endpoint URLs given, and the values of the environment variables
    the command's job files declare (`env:`)."""
    for given in _endpoint_flags(args):
        _, _, url = given.partition("=")
        register_url_credentials(given.strip())
        register_url_credentials(url.strip())
    for path in _job_files(args):
        for value in _environment_values(Path(path)):
            register_environment_value(value)


def _endpoint_flags(args: argparse.Namespace) -> Iterator[str]:
    yield from getattr(args, "endpoint", None) or ()
    for flag in ("endpoint_a", "endpoint_b"):
        value = getattr(args, flag, None)
        if value:
            yield value


def _job_files(args: argparse.Namespace) -> list[str]:
    job = getattr(args, "job", None)
    return [job] if isinstance(job, str) else list(getattr(args, "jobs", None) or ())


def _environment_values(path: Path) -> list[str]:
    """The current values of the variables a job file's `env:` declares (none when the file
    cannot be read: the command itself says why)."""
    from agentbatch.spec.yaml_source import load_yaml

    try:
        document = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, AgentbatchError):
        return []
    names = document.value.get("env") if isinstance(document.value, dict) else None
    if not isinstance(names, list):
        return []
    return [os.environ[name] for name in names if isinstance(name, str) and os.environ.get(name)]
