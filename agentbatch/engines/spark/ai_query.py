"""`ai_query` for Spark without Databricks: an Arrow UDF backed by the REST bulk client.

Registered as two session functions (see spark_sql.py for the rewrite that picks one):

    ai_query(endpoint, request, failOnError => false, modelParameters => ..., responseFormat => ...)
        -> STRUCT<result: STRING, errorMessage: STRING>, row errors as values
    agentbatch_ai_query_strict(endpoint, request, ...)
        -> STRING, failing the query on the first row error (ai_query without failOnError)

Each Arrow batch (up to `spark.sql.execution.arrow.maxRecordsPerBatch` rows) is answered
concurrently under the task's share of the concurrency cap. A STRING request is a prompt (sent in
the Chat or Responses shape, per `text_api`); a STRUCT request is the body itself (`messages` or
`input`, `custom_inputs`, ...), as Databricks sends it. With `responseFormat` the answer is checked
against the format and returned as JSON text, which the SQL parses with `from_json`. `returnType`
is accepted; the result stays JSON text. A failed row's `errorMessage` has the shape Databricks
gives it (`error_message`: a 503 after the retries is REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT), so the
push-down SQL tells a transient failure from a permanent one as it does on Databricks.

Endpoints named by literals are resolved on the driver (URL and auth headers); overrides map a name
to a URL (`{"my-endpoint": "http://127.0.0.1:8000"}`).

It refuses what Databricks' ai_query refuses (docs/databricks-behaviour.md): an endpoint that is not
a STRING literal (checked by the SQL rewrite, `spark_sql.rewrite_ai_query`), a STRUCT request to an
endpoint not named in the `ai_query_custom_models` setting (foundation models take a STRING), and a DDL
`responseFormat` other than one top-level field wrapping the wanted struct
(`AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT`). Registering it turns ANSI mode on, as SQL warehouses
and serverless compute run: an invalid CAST raises, so the SQL around it must use try_cast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from agentbatch.agent.calls import Api, CallSpec
from agentbatch.agent.content import FILE_COLUMN, FileInput
from agentbatch.agent.redact import Registered, registered
from agentbatch.agent.retry import should_retry
from agentbatch.engines.spark.calls import RemoteCall, answer_batches, remote_call
from agentbatch.engines.spark.sql import AI_QUERY, STRICT_AI_QUERY
from agentbatch.errors import NotSupportedError, UsageError
from agentbatch.results import TRANSIENT_ERROR, strip_error_kind

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

RESULT_TYPE = "struct<result: string, errorMessage: string>"
# Calls in flight across all tasks when the settings name no max_concurrency.
DEFAULT_CAP = 64


@dataclass(frozen=True)
class AiQueryConfig:
    """How the registered function reaches endpoints; picklable (shipped inside the UDF)."""

    overrides: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    text_api: Api = "chat"
    max_concurrency: int = 16
    timeout_s: float = 300.0
    max_retries: int = 8
    # Custom-model endpoints (agents on Model Serving): the only ones a STRUCT request may go to.
    custom_models: frozenset[str] = frozenset()
    # The driver's registered secrets, masked on the executors too (see RemoteCall.secrets).
    secrets: Registered = field(default_factory=Registered)

    def __repr__(self) -> str:  # no credentials in reprs
        return f"AiQueryConfig(overrides={dict(self.overrides)!r}, text_api={self.text_api!r})"


def ai_query_config(
    endpoints: Iterable[str],
    settings: Mapping[str, Any],
    overrides: Mapping[str, str],
    parallelism: int,
) -> AiQueryConfig:
    """Resolve `endpoints` on the driver; the concurrency cap is split across parallel tasks."""
    mapping = {**overrides, **dict(settings.get("ai_query_endpoints") or {})}
    text_api = str(settings.get("ai_query_api", "chat"))
    if text_api not in ("chat", "responses"):
        raise UsageError(f"spark engine: ai_query_api must be chat or responses, not {text_api!r}")
    urls: dict[str, str] = {}
    headers: dict[str, dict[str, str]] = {}
    for name in sorted(endpoints):
        remote = remote_call(CallSpec(endpoint=name, api=cast(Api, text_api)), mapping)
        urls.update(remote.overrides)
        if remote.headers:
            headers[name] = dict(remote.headers)
    cap = int(settings.get("max_concurrency") or DEFAULT_CAP)
    return AiQueryConfig(
        overrides=urls,
        headers=headers,
        text_api=cast(Api, text_api),
        max_concurrency=max(1, cap // max(1, parallelism)),
        timeout_s=float(settings.get("timeout_seconds") or 300.0),
        max_retries=int(settings.get("max_retries", 8)),
        custom_models=frozenset(str(n) for n in settings.get("ai_query_custom_models") or ()),
        secrets=registered(),
    )


def register_ai_query(spark: SparkSession, config: AiQueryConfig) -> None:
    """(Re)register `ai_query` and its strict form in `spark`, bound to `config`."""
    try:
        from pyspark.sql.functions import arrow_udf  # type: ignore[attr-defined]
    except ImportError:
        raise NotSupportedError(
            "registering ai_query on Spark needs pyspark >= 4.1 (Arrow UDFs); "
            "on Databricks the built-in ai_query is used"
        ) from None
    import pyarrow as pa

    def ai_query(
        endpoint: pa.Array,
        request: pa.Array,
        failOnError: pa.Array | None = None,
        modelParameters: pa.Array | None = None,
        responseFormat: pa.Array | None = None,
        returnType: pa.Array | None = None,
        files: pa.Array | None = None,
    ) -> pa.Array:
        results, errors = answer_column(
            config, endpoint, request, modelParameters, responseFormat, files
        )
        return pa.StructArray.from_arrays(
            [pa.array(results, pa.string()), pa.array(errors, pa.string())],
            names=["result", "errorMessage"],
        )

    def strict(
        endpoint: pa.Array,
        request: pa.Array,
        modelParameters: pa.Array | None = None,
        responseFormat: pa.Array | None = None,
        returnType: pa.Array | None = None,
        files: pa.Array | None = None,
    ) -> pa.Array:
        results, errors = answer_column(
            config, endpoint, request, modelParameters, responseFormat, files
        )
        failed = next((e for e in errors if e is not None), None)
        if failed is not None:
            raise RuntimeError(f"ai_query failed for a row: {failed}")
        return pa.array(results, pa.string())

    # Databricks SQL warehouses and serverless compute run in ANSI mode (invalid casts raise):
    # https://docs.databricks.com/aws/en/compute/serverless/limitations
    spark.conf.set("spark.sql.ansi.enabled", "true")
    # PySpark reads the type hints to pick the UDF kind; give it real types, not strings.
    for function in (ai_query, strict):
        function.__annotations__ = {name: pa.Array for name in function.__annotations__}
    # Nondeterministic (a model's answer is): Spark's optimizer otherwise evaluates a
    # deterministic UDF below a statement's ORDER BY ... LIMIT, calling the agent for every row
    # and keeping N answers (`--limit N` paid for the whole selection).
    spark.udf.register(AI_QUERY, arrow_udf(ai_query, RESULT_TYPE).asNondeterministic())
    spark.udf.register(STRICT_AI_QUERY, arrow_udf(strict, "string").asNondeterministic())


def answer_column(
    config: AiQueryConfig,
    endpoints: pa.Array,
    requests: pa.Array,
    model_parameters: pa.Array | None,
    response_formats: pa.Array | None,
    files: pa.Array | None = None,
) -> tuple[list[str | None], list[str | None]]:
    """(result, errorMessage) per row; rows sharing endpoint and options are answered together."""
    import pyarrow as pa

    count = len(requests)
    names = endpoints.to_pylist()
    bodies = requests.to_pylist()
    params = model_parameters.to_pylist() if model_parameters is not None else [None] * count
    formats = response_formats.to_pylist() if response_formats is not None else [None] * count
    groups: dict[tuple[str, str, str | None, bool], list[int]] = {}
    for row in range(count):
        is_json = isinstance(bodies[row], dict)
        group = (str(names[row]), _json(params[row] or {}), formats[row], is_json)
        groups.setdefault(group, []).append(row)
    results: list[str | None] = [None] * count
    errors: list[str | None] = [None] * count
    if files is not None and not (
        pa.types.is_binary(files.type) or pa.types.is_large_binary(files.type)
    ):
        # Databricks takes a file's bytes (BINARY) as `files` (ai_query reference, Arguments).
        raise UsageError(
            "[DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE] ai_query: files must be BINARY (e.g. the "
            f"content column of read_files(..., format => 'binaryFile')), not {files.type}"
        )
    contents = files.to_pylist() if files is not None else None
    for (name, params_json, fmt_text, is_json), rows in groups.items():
        if contents is not None and name in config.custom_models:
            raise UsageError(
                "[DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE] ai_query: files are input for a "
                f"foundation or external model, not for the custom model {name!r}"
            )
        if is_json and name not in config.custom_models:
            # Databricks: a foundation or external model takes a STRING request (ai_query
            # reference, Arguments); a STRUCT is for custom models (ai_query_custom_models).
            raise UsageError(
                "[DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE] ai_query: the request to the "
                f"foundation-model endpoint {name!r} must be a STRING, not a STRUCT "
                "(list custom-model endpoints in the ai_query_custom_models setting)"
            )
        texts = [_json(bodies[r]) if is_json else bodies[r] for r in rows]
        api = config.text_api
        if is_json and rows:
            api = "responses" if "input" in (bodies[rows[0]] or {}) else "chat"
        call = CallSpec(
            endpoint=name,
            api=api,
            model_parameters=json.loads(params_json),
            response_format=_response_format(fmt_text),
            request_is_json=is_json,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            max_concurrency=config.max_concurrency,
            # ai_query gives bytes without a name: the media type comes from the bytes.
            files=FileInput() if contents is not None else None,
        )
        remote = RemoteCall(
            call,
            {name: config.overrides[name]} if name in config.overrides else {},
            dict(config.headers.get(name) or {}),
            secrets=config.secrets,
        )
        batch = pa.RecordBatch.from_pydict(
            {
                "_row": pa.array(rows, pa.int64()),
                "_request": pa.array(texts, pa.string()),
                "request_fingerprint": pa.nulls(len(rows), pa.string()),
                **(
                    {FILE_COLUMN: pa.array([contents[r] for r in rows], pa.binary())}
                    if contents is not None
                    else {}
                ),
            }
        )
        done: list[pa.Table] = []
        answer_batches([batch], remote, "_row", done.append)
        for table in done:
            for row, response, error, status, attempts in zip(
                table.column("_row").to_pylist(),
                table.column("response").to_pylist(),
                table.column("error").to_pylist(),
                table.column("http_status").to_pylist(),
                table.column("attempts").to_pylist(),
                strict=True,
            ):
                results[row] = (
                    response if response is None or isinstance(response, str) else _json(response)
                )
                errors[row] = error_message(error, status, attempts)
    return results, errors


def error_message(error: str | None, status: int | None, attempts: int | None) -> str | None:
    """ai_query's `errorMessage` for a row error of the REST client, in the shape Databricks
    gives it (docs/databricks-behaviour.md), without agentbatch's kind: the SQL reads the kind
    back from it, as from Databricks' own (agentbatch.planning.failures).

    A failure retried to the end (a 429, 5xx, timeout, dropped connection) is
    `[REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying N times; the
    last failed HTTP error code was 503`; a refusal not retried (another 4xx) is
    `[REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with code 400, and error
    message '...'`; anything else (an answer that does not fit the responseFormat) its text.
    """
    if error is None:
        return None
    message = strip_error_kind(error) or ""
    if error.startswith(TRANSIENT_ERROR):
        last = (
            f"the last failed HTTP error code was {status}"
            if status is not None and should_retry(status)
            else f"the last failure was: {message}"
        )
        retries = max(0, (attempts or 1) - 1)
        return (
            "[REMOTE_FUNCTION_HTTP_RETRY_TIMEOUT] The remote request failed after retrying "
            f"{retries} times; {last}"
        )
    if status is not None and status >= 400:
        return (
            "[REMOTE_FUNCTION_HTTP_FAILED_ERROR] The remote HTTP request failed with code "
            f"{status}, and error message '{message}'"
        )
    return message


def _response_format(text: str | None) -> str | dict[str, Any] | None:
    """responseFormat as Databricks takes it: a STRUCT type string, or an OpenAI JSON-schema format."""
    if text is None or not text.strip():
        return None
    stripped = text.strip()
    if not stripped.startswith("{"):
        check_ddl_response_format(stripped)
        return stripped
    spec = json.loads(stripped)
    if isinstance(spec, dict) and isinstance(spec.get("json_schema"), dict):
        schema = spec["json_schema"].get("schema")
        if isinstance(schema, dict):
            return schema
    if isinstance(spec, dict):
        return spec
    raise ValueError("responseFormat must be a STRUCT type or a JSON schema object")


UNSUPPORTED_RESPONSE_FORMAT = "AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT.DDL_STRING"


def check_ddl_response_format(ddl: str) -> None:
    """A DDL responseFormat must be a STRUCT with exactly one top-level field (it wraps the wanted
    struct), or Databricks refuses the call with AI_FUNCTION_UNSUPPORTED_RESPONSE_FORMAT."""
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        dtype = exp.DataType.build(ddl, dialect="databricks")
    except (ParseError, TypeError, ValueError):  # TypeError: sqlglot compiled
        dtype = None
    if dtype is None or dtype.this != exp.DataType.Type.STRUCT or len(dtype.expressions) != 1:
        raise UsageError(
            f"[{UNSUPPORTED_RESPONSE_FORMAT}] ai_query does not support the response format "
            f"{ddl!r}: a DDL response format must have exactly one top-level field, wrapping "
            "the wanted struct (or use the JSON-schema form)"
        )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    import decimal

    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)
