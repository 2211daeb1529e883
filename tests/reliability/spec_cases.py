"""Helpers for hostile job files: the valid base spec, its string fields, and the error contract."""

from __future__ import annotations

import copy
import json
import re
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job_text
from agentbatch.spec.models import Job

from .processes import PYTHON, child_env

FILE = "fuzz.yml"
_WHERE = re.compile(r"^fuzz\.yml:(\d+): ")

# A valid job using every kind of string field.
BASE: dict[str, Any] = {
    "name": "hostile",
    "description": "a job under attack",
    "source": {
        "table": "main.support.tickets",
        "key": "ticket_id",
        "columns": ["subject", "body"],
        "where": "status = 'open'",
    },
    "request": "concat('Classify for ', {{ var('team') }}, ': ', subject, ' ', body)",
    "agent": {
        "endpoint": "apps/triage-agent",
        "api": "responses",
        "custom_inputs": {"team": "{{ var('team') }}"},
        "databricks_options": {"return_trace": True},
        "response_format": "STRUCT<label: STRING, urgency: INT>",
        "model_parameters": {"max_tokens": 64, "stop": ["END"]},
    },
    "output": {"table": "main.support.triage", "mode": "merge"},
    "vars": {"team": "support"},
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def dump(spec: Any) -> str:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=10_000)


def check_contract(text: str, vars: dict[str, Any] | None = None) -> Job | SpecError:
    """Load `text`: a Job, or a SpecError every line of which names the file and a real line."""
    try:
        return load_job_text(text, FILE, vars)
    except SpecError as err:
        message = str(err)
        assert message.strip(), "empty SpecError message"
        last_line = text.count("\n") + text.count("\r") + 1
        # One line per problem, and nothing a terminal would act on (keys may hold any character).
        assert not set(message) & set("\r\x1b\x00\x85\u2028\u2029"), repr(message)
        for line in message.split("\n"):
            match = _WHERE.match(line)
            assert match, f"SpecError line without {FILE}:<line>: {line!r}"
            assert 1 <= int(match.group(1)) <= last_line, f"line out of range: {line!r}"
        return err


def string_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a string value in `value` (keys of `vars` excluded: they are names)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from string_paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from string_paths(child, (*path, i))
    elif isinstance(value, str):
        yield path


def set_path(spec: Any, path: tuple[Any, ...], value: Any) -> None:
    node = spec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


_CHILD = """
import json, sys
from agentbatch.errors import SpecError
from agentbatch.spec.loader import load_job_text
try:
    load_job_text(sys.stdin.read(), "fuzz.yml")
    print(json.dumps({"outcome": "job"}))
except SpecError as err:
    print(json.dumps({"outcome": "spec_error", "message": str(err)[:500]}))
"""


def _limit_memory() -> None:
    limit = 2 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def load_in_child(text: str, timeout: float = 20.0) -> dict[str, Any]:
    """Load a job file in a child process with 2 GB of address space and a time limit, so a
    loader that blows up fails the test instead of the machine."""
    try:
        done = subprocess.run(
            [PYTHON, "-c", _CHILD],
            input=text.encode(),
            capture_output=True,
            timeout=timeout,
            env=child_env(),
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "message": f"no answer within {timeout:g}s"}
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return {"outcome": "crash", "message": tail[0] if tail else f"exit {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


ROOT = Path(__file__).resolve().parents[2]
