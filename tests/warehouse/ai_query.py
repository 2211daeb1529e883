"""`ai_query(...)` for the local executors: parse Databricks calls, answer rows with a Python callable.

The test agent is a plain callable `ai_query(endpoint, request, **named)` returning the answer
(a string, or a JSON-able value) or raising for a failed row. `named` carries the call's
`modelParameters` (a dict) and `responseFormat` (a string) when the SQL gives them.
`returnType` and `failOnError` are the warehouse's business: with `failOnError => false` the SQL
value is `STRUCT<result, errorMessage>` and a raising row becomes an `errorMessage`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

AiQueryFunction = Callable[..., Any]

# Databricks argument names, matched case-insensitively.
_NAMED = {n.lower(): n for n in ("returnType", "failOnError", "modelParameters", "responseFormat")}


class AiQueryError(ValueError):
    pass


@dataclass(frozen=True)
class AiQueryCall:
    """One `ai_query(...)` call site, arguments as SQL expressions."""

    node: exp.Expression
    endpoint: exp.Expression
    request: exp.Expression
    return_type: str | None  # Databricks type text; None or STRING means a string result
    fail_on_error: bool
    model_parameters: exp.Expression | None
    response_format: exp.Expression | None

    @property
    def returns_string(self) -> bool:
        return self.return_type is None or self.return_type.strip().upper() == "STRING"


def _literal_bool(value: exp.Expression) -> bool:
    if isinstance(value, exp.Boolean):
        return bool(value.this)
    raise AiQueryError(
        f"ai_query: failOnError must be TRUE or FALSE, got {value.sql('databricks')}"
    )


def parse_call(node: exp.Expression) -> AiQueryCall:
    args = list(node.expressions)
    positional = [a for a in args if not isinstance(a, exp.Kwarg)]
    if len(positional) != 2:
        raise AiQueryError(
            "ai_query: expected endpoint and request, then named arguments (name => value)"
        )
    named: dict[str, exp.Expression] = {}
    for arg in args:
        if isinstance(arg, exp.Kwarg):
            key = _NAMED.get(arg.this.name.lower())
            if key is None:
                raise AiQueryError(f"ai_query: unsupported argument {arg.this.name!r}")
            named[key] = arg.expression
    return_type = named.get("returnType")
    if return_type is not None and not (
        isinstance(return_type, exp.Literal) and return_type.is_string
    ):
        raise AiQueryError("ai_query: returnType must be a string literal")
    fail = named.get("failOnError")
    return AiQueryCall(
        node=node,
        endpoint=positional[0],
        request=positional[1],
        return_type=return_type.this if return_type is not None else None,
        fail_on_error=True if fail is None else _literal_bool(fail),
        model_parameters=named.get("modelParameters"),
        response_format=named.get("responseFormat"),
    )


def find_calls(tree: exp.Expression) -> list[AiQueryCall]:
    """Every `ai_query` call, innermost first (so rewriting one never moves another)."""
    nodes = [
        n
        for n in tree.find_all(exp.Anonymous)
        if isinstance(n.this, str) and n.this.lower() == "ai_query"
    ]
    nodes.sort(key=lambda n: -n.depth)
    return [parse_call(n) for n in nodes]


def answer(
    fn: AiQueryFunction,
    endpoint: str | None,
    request: Any,
    model_parameters: Any = None,
    response_format: str | None = None,
) -> str | None:
    """The string answer for one row (NULL request -> NULL answer); raises when the agent fails."""
    if request is None or endpoint is None:
        return None
    named: dict[str, Any] = {}
    if model_parameters is not None:
        named["modelParameters"] = model_parameters
    if response_format is not None:
        named["responseFormat"] = response_format
    result = fn(endpoint, request, **named)
    if result is None or isinstance(result, str):
        return result
    return json.dumps(result)


def error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__
