"""`ai_query(...)` for the local executors: parse Databricks calls, answer rows with a Python callable.

The test agent is a plain callable `ai_query(endpoint, request, **named)` returning the answer
(a string, or a JSON-able value) or raising for a failed row. `named` carries the call's
`modelParameters` (a dict) and `responseFormat` (a string) when the SQL gives them.
`returnType` and `failOnError` are the warehouse's business: with `failOnError => false` the SQL
value is `STRUCT<result, errorMessage>` and a raising row becomes an `errorMessage`.

The calls Databricks refuses are refused here too, with its error classes (each rule, its source and
its test: docs/databricks-behaviour.md):

- the endpoint is not a STRING literal ("endpoint: A STRING literal", ai_query reference);
- a DDL `responseFormat` that is not one top-level field wrapping the wanted struct
  (`AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT.DDL_STRING`); a JSON one of another `type`
  (`...JSON_STRING`);
- a request that is not a STRING to a foundation-model endpoint ("for foundation models ... the
  request must be a STRING", ai_query reference);
- `modelParameters` for a custom-model endpoint
  (`AI_FUNCTION_INVALID_MODEL_PARAMETERS.UNSUPPORTED_ENDPOINT_TYPE`);
- `files` other than BINARY bytes (the documented form is `files => content` over
  `read_files(..., format => 'binaryFile')`), or with a custom-model endpoint.

The agent callable receives the bytes as `files=` when the call gives them.

A failed HTTP call (the callable raised an error carrying `.response.status_code`, as
httpx's `raise_for_status` does) is retried and reported as Databricks reports it in
`errorMessage` (docs/databricks-behaviour.md): a 429 or 5xx, and a timeout, are retried `RETRIES`
times, then `[REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying 10
times; the last failed HTTP error code was 503`; any other status fails at once with
`[REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with code 400, and error
message '<body>'`. Any other exception is its own text.

Endpoints named in `custom_models` are custom models (an agent on Model Serving): their
result has the type ai_query infers from the model signature, a STRUCT, not text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

AiQueryFunction = Callable[..., Any]

# Databricks argument names, matched case-insensitively.
_NAMED = {
    n.lower(): n
    for n in ("returnType", "failOnError", "modelParameters", "responseFormat", "files")
}


class AiQueryError(ValueError):
    pass


# The return type Databricks infers for a ResponsesAgent from its MLflow signature (the
# ResponsesAgentResponse schema: output items with content parts, custom_outputs).
RESPONSES_AGENT_TYPE = (
    "STRUCT<object: STRING, output: ARRAY<STRUCT<type: STRING, id: STRING, role: STRING, "
    "content: ARRAY<STRUCT<type: STRING, text: STRING>>>>, custom_outputs: MAP<STRING, STRING>>"
)
_RESPONSE_FORMAT_TYPES = ("json_schema", "json_object")


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
    files: exp.Expression | None = None

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
    endpoint = positional[0]
    if not (isinstance(endpoint, exp.Literal) and endpoint.is_string):
        raise AiQueryError(
            "[NOT_A_CONSTANT_STRING.NOT_CONSTANT] The expression "
            f"{endpoint.sql('databricks')} used for the routine or clause ai_query's endpoint "
            "must be a constant STRING which is NOT NULL."
        )
    fmt = named.get("responseFormat")
    if fmt is not None:
        check_response_format(fmt)
    files = named.get("files")
    if files is not None and isinstance(files, (exp.Literal, exp.Null)):
        raise AiQueryError(files_type_error(files.sql("databricks")))
    return AiQueryCall(
        node=node,
        endpoint=positional[0],
        request=positional[1],
        return_type=return_type.this if return_type is not None else None,
        fail_on_error=True if fail is None else _literal_bool(fail),
        model_parameters=named.get("modelParameters"),
        response_format=named.get("responseFormat"),
        files=files,
    )


def files_type_error(shown: str) -> str:
    """Databricks takes the bytes of a file (BINARY) as `files`; the class is ASSUMPTION."""
    return (
        "[DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE] Cannot resolve ai_query: the files "
        f"argument {shown} must be BINARY (e.g. the content column of read_files(..., "
        "format => 'binaryFile'))."
    )


def check_response_format(fmt: exp.Expression) -> None:
    """Databricks' rules for `responseFormat`: a JSON format of a known type, or a DDL STRUCT with
    exactly one top-level field (it wraps the wanted struct)."""
    if not (isinstance(fmt, exp.Literal) and fmt.is_string):
        raise AiQueryError("ai_query: responseFormat must be a STRING literal")
    text = fmt.this.strip()
    if text.startswith("{"):
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind not in _RESPONSE_FORMAT_TYPES:
            raise AiQueryError(
                "[AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT.JSON_STRING] AI function: ai_query "
                f"does not support the type {kind!r} of the response format {text!r}. "
                f"Supported response format types are: {', '.join(_RESPONSE_FORMAT_TYPES)}."
            )
        return
    try:
        dtype = exp.DataType.build(text, dialect="databricks")
    except (sqlglot.errors.ParseError, ValueError):
        dtype = None
    if dtype is None or dtype.this != exp.DataType.Type.STRUCT or len(dtype.expressions) != 1:
        raise AiQueryError(
            "[AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT.DDL_STRING] AI function: ai_query does "
            f"not support the following response format: {text!r}. The DDL response format "
            "must have exactly one top-level field, wrapping the wanted struct."
        )


def check_request(endpoint: str | None, request: Any, custom_models: Collection[str]) -> None:
    """A foundation-model endpoint takes a STRING request; fails the statement, as analysis does."""
    foundation = endpoint is not None and endpoint not in custom_models
    if foundation and request is not None and not isinstance(request, str):
        raise AiQueryStatementError(
            "[DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE] Cannot resolve ai_query: the request "
            f"to the foundation-model endpoint {endpoint!r} must be a STRING, not a STRUCT."
        )


def check_custom_model_call(call: AiQueryCall, custom_models: Collection[str]) -> None:
    name = call.endpoint.this if isinstance(call.endpoint, exp.Literal) else None
    if name in custom_models and call.model_parameters is not None:
        raise AiQueryError(
            "[AI_FUNCTION_INVALID_MODEL_PARAMETERS.UNSUPPORTED_ENDPOINT_TYPE] AI_QUERY function "
            "does not support the modelParameters argument for custom model endpoint."
        )
    if name in custom_models and call.files is not None:
        raise AiQueryError(
            "[DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE] Cannot resolve ai_query: files are "
            f"input for a foundation or external model, not for the custom model {name!r}."
        )
    if name not in custom_models and isinstance(call.request, exp.Struct):
        raise AiQueryError(
            "[DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE] Cannot resolve ai_query: the request to "
            f"the foundation-model endpoint {name!r} must be a STRING, not a STRUCT."
        )


class AiQueryStatementError(RuntimeError):
    """Raised from inside a row's call, yet failing the whole statement (an analysis error)."""


def find_calls(tree: exp.Expression) -> list[AiQueryCall]:
    """Every `ai_query` call, innermost first (so rewriting one never moves another)."""
    nodes = [
        n
        for n in tree.find_all(exp.Anonymous)
        if isinstance(n.this, str) and n.this.lower() == "ai_query"
    ]
    nodes.sort(key=lambda n: -n.depth)
    return [parse_call(n) for n in nodes]


# Databricks retries a 429 or 5xx before failing the row; it reports 10 retries. Whether it
# retries a timeout, and its message for one, are ASSUMPTIONS.
RETRIES = 10
RETRIED_STATUSES = frozenset({429, *range(500, 600)})


def answer(
    fn: AiQueryFunction,
    endpoint: str | None,
    request: Any,
    model_parameters: Any = None,
    response_format: str | None = None,
    files: bytes | None = None,
) -> str | None:
    """The string answer for one row (NULL request -> NULL answer); raises when the agent fails,
    after the retries Databricks makes (see `error_text`)."""
    if request is None or endpoint is None:
        return None
    named: dict[str, Any] = {}
    if model_parameters is not None:
        named["modelParameters"] = model_parameters
    if response_format is not None:
        named["responseFormat"] = response_format
    if files is not None:
        named["files"] = files
    attempt = 0
    while True:
        try:
            result = fn(endpoint, request, **named)
            break
        except Exception as error:
            if attempt == RETRIES or not _retried(error):
                raise
            attempt += 1
    if result is None or isinstance(result, str):
        return result
    return json.dumps(result)


def error_text(error: BaseException) -> str:
    """ai_query's `errorMessage` for a row whose call raised `error` (after `answer`'s retries)."""
    status = http_status(error)
    if status in RETRIED_STATUSES:
        return (
            f"[REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying "
            f"{RETRIES} times; the last failed HTTP error code was {status}"
        )
    if status is not None:
        body = getattr(getattr(error, "response", None), "text", "")
        return (
            f"[REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with code "
            f"{status}, and error message '{body}'"
        )
    if _timed_out(error):
        return (
            f"[REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying "
            f"{RETRIES} times; the last request timed out"
        )
    return str(error) or type(error).__name__


def http_status(error: BaseException) -> int | None:
    """The HTTP status of a failed call (httpx's HTTPStatusError carries its response)."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _timed_out(error: BaseException) -> bool:
    # httpx's timeouts (ReadTimeout, ...) are no TimeoutError: known by their class names.
    return isinstance(error, TimeoutError) or any(
        "Timeout" in cls.__name__ for cls in type(error).__mro__
    )


def _retried(error: BaseException) -> bool:
    return http_status(error) in RETRIED_STATUSES or _timed_out(error)
