"""JSON Schema checks for evaluation specs and the `json_schema` scorer, done by `jsonschema`
(the whole standard: `$ref`/`$defs`, `prefixItems`, `format`, as pydantic writes schemas).

The library loads on first use, so `import agentbatch` and jobs without a schema stay light."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64  # levels of objects and arrays: about 30 levels of schemas


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (counted without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _library() -> Any:
    import jsonschema

    return jsonschema


def check_schema(schema: Any) -> None:
    """Raise ValueError naming the first problem when `schema` is not a valid JSON Schema."""
    if not isinstance(schema, dict):
        raise ValueError("a JSON Schema must be an object")
    if _depth(schema) > MAX_DEPTH:
        # The meta-schema check recurses per level: a hostile spec must not exhaust the stack.
        raise ValueError(f"a JSON Schema nested more than {MAX_DEPTH} levels deep")
    jsonschema = _library()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        where = "/".join(str(part) for part in err.absolute_path)
        raise ValueError(
            f"invalid JSON Schema{' at ' + where if where else ''}: {err.message}"
        ) from None


def first_violation(value: Any, schema: dict[str, Any]) -> str | None:
    """The most relevant reason `value` does not match `schema`, or None when it does."""
    return compile_schema(schema)(value)


def compile_schema(schema: dict[str, Any]) -> Callable[[Any], str | None]:
    """`first_violation` against one schema, its validator built once (a scorer checks every
    row against the same schema)."""
    jsonschema = _library()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def violation(value: Any) -> str | None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        return None if error is None else f"{error.json_path}: {error.message}"

    return violation
