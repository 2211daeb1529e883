"""JSON Schema checks for evaluation specs and the `json_schema` scorer, done by `jsonschema`.

The library loads on first use and comes with the `eval` extra: jobs that never name a JSON
Schema do not need it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from agentbatch.errors import NotSupportedError


def _library() -> Any:
    try:
        import jsonschema
    except ModuleNotFoundError:
        raise NotSupportedError(
            "JSON Schema checks need the jsonschema package: pip install 'agentbatch[eval]'"
        ) from None
    return jsonschema


def check_schema(schema: Any) -> None:
    """Raise ValueError naming the first problem when `schema` is not a valid JSON Schema."""
    if not isinstance(schema, dict):
        raise ValueError("a JSON Schema must be an object")
    jsonschema = _library()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        where = "/".join(str(part) for part in err.absolute_path)
        raise ValueError(f"invalid JSON Schema{' at ' + where if where else ''}: {err.message}") from None


def first_violation(value: Any, schema: dict[str, Any]) -> str | None:
    """The most relevant reason `value` does not match `schema`, or None when it does."""
    validator = _validator(_frozen(schema))
    error = _library().exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    return f"{error.json_path}: {error.message}"


@lru_cache(maxsize=64)
def _validator(frozen: str) -> Any:
    # A scorer checks every row against one schema: build its validator once.
    import json

    schema = json.loads(frozen)
    jsonschema = _library()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _frozen(schema: dict[str, Any]) -> str:
    import json

    return json.dumps(schema, sort_keys=True)
