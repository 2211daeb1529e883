"""Job specs: models, loading with positions, JSON Schema."""

from __future__ import annotations

import json


def quoted_forms(value: str) -> tuple[str, ...]:
    """The forms a value a job reads with env() takes in text, each masked where a message quotes
    it: as read, inside a SQL string literal, inside a JSON string, and inside the quotes of
    Python's repr() (a KeyError, a dict in a traceback). The loader masks them in the errors it
    raises before a run is planned; `agent.redact` registers them for every later message (`spec`
    may not import `agent`: pyproject's import-linter layers)."""
    return (value, value.replace("'", "''"), json.dumps(value)[1:-1], repr(value)[1:-1])
